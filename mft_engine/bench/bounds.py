"""The machine's own bounds, measured in the same run as the benchmark they scale."""
from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import torch

from ..device import synchronize


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, setup: Callable[[], object] | None = None,
                device: torch.device | str = "cpu") -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs; `setup()` runs untimed before each.
    On a CUDA `device` each run is timed to the end of its kernels (synchronize before and after)."""
    dev = torch.device(device)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        synchronize(dev)
        t = time.perf_counter()
        fn()
        synchronize(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_bandwidth(nbytes: int = 1 << 29, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Read bandwidth of `device` in bytes/s: best of `repeats` fp32 sums over a fresh `nbytes` buffer
    there (on CPU with all threads; on CUDA timed to the end of the kernel).

    A reduction reads each byte once and writes nothing, so its rate is the read bound a streaming
    kernel over θ and g can approach. The buffer (512 MiB) is far larger than any cache. Measured once per
    process, device, buffer size and thread count (about 0.5 s); later calls return that measurement.
    """
    return _read_bandwidth(nbytes, repeats, torch.get_num_threads(), str(torch.device(device)))


@functools.lru_cache(maxsize=None)
def _read_bandwidth(nbytes: int, repeats: int, threads: int, device: str) -> float:
    dev = torch.device(device)
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    x.sum()
    synchronize(dev)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        synchronize(dev)
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """fp32 matmul rate of `device` in GFLOP/s: best of `repeats` n×n×n products (2n³ FLOPs each), all
    threads on CPU, timed to the kernel's end on CUDA."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    a @ b
    synchronize(dev)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        synchronize(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
