"""The machine's own bounds, measured in the same run as the benchmark they scale."""
from __future__ import annotations

import functools
import statistics
import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs; `setup()` runs untimed before each."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_bandwidth(nbytes: int = 1 << 29, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: best of `repeats` fp32 sums over a fresh `nbytes` buffer (all threads).

    A reduction reads each byte once and writes nothing, so its rate is the read bound a streaming
    kernel over θ and g can approach. The buffer (512 MiB) is far larger than any cache. Measured once per
    process, buffer size and thread count (about 0.5 s); later calls return that measurement.
    """
    return _read_bandwidth(nbytes, repeats, torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _read_bandwidth(nbytes: int, repeats: int, threads: int) -> float:
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul rate in GFLOP/s: best of `repeats` n×n×n products (2n³ FLOPs each), all threads."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
