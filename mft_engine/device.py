"""The device a pipeline runs on: the `--device` field every pipeline config declares, its resolution
against what this machine has (one line and exit 2 for a device it lacks), moving batches there, and the
device's own figures for results.json (name, memory, peak memory per phase).

Pipelines resolve the device once, place the model there, and let the dispatcher choose the kernels
(C++ for CPU tensors, Triton for CUDA tensors): nothing downstream branches on the device type.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from typing import Any, Iterator, Mapping

import torch

from .errors import ConfigError
from .fields import help_field

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, xla"
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?|xla)$")
#: the dispatch key of each device type whose kernels the dispatcher picks
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "xla": "XLA"}


def device_field(default: str = "auto"):
    """The `device` field of a pipeline config (flag --device): auto | cpu | cuda | cuda:N."""
    return help_field("auto (cuda when a CUDA device is visible, else cpu) | cpu | cuda | cuda:N | xla (torch_xla's "
                      "device: the [xla] extra)", default)


#: torch.distributed's backends when none is given: gloo for CPU tensors, NCCL for CUDA tensors
DIST_BACKEND_DEFAULT = "cpu:gloo,cuda:nccl"


def dist_backend_field():
    """The `dist_backend` field of a pipeline config that runs under torchrun / accelerate (flag
    --dist-backend): None means DIST_BACKEND_DEFAULT."""
    return help_field(f"torch.distributed backend under torchrun / accelerate (default {DIST_BACKEND_DEFAULT}; "
                      "gloo lets two ranks share one GPU)", None)


def check_device_spec(spec: str) -> None:
    """ConfigError (one line naming the value) unless `spec` is auto, cpu, cuda, cuda:N or xla. Syntax only:
    whether this machine has the device is `resolve_device`'s question, asked when the run starts."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ConfigError(f"--device {spec!r} is not one of {DEVICE_CHOICES}")


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The torch.device `spec` names on this machine. `auto` is cuda when CUDA is available, else cpu;
    `cuda` (and `auto` on CUDA) is cuda:`local_rank` under torchrun, else the current CUDA device.
    ConfigError with one line naming the device when this torch or machine lacks it (a CPU-only torch, no
    visible device, an index past the device count, CUDA without mft's Triton kernels). Cost: CUDA queries."""
    check_device_spec(spec)
    if spec == "xla":
        return _xla_device()
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if torch.version.cuda is None:
        raise ConfigError(f"--device {spec}: this torch ({torch.__version__}) is a CPU-only build; install a CUDA "
                          "build of torch, or pass --device cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: no CUDA device is visible (torch.cuda.is_available() is False); "
                          "pass --device cpu")
    count = torch.cuda.device_count()
    if ":" in spec:
        index = int(spec.split(":", 1)[1])
    else:
        index = local_rank if local_rank is not None else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(f"--device cuda:{index}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if not torch._C._dispatch_has_kernel_for_dispatch_key("mft::select_topk", "CUDA"):
        raise ConfigError(f"--device {spec}: mft's CUDA kernels are written in Triton, which is not installed: "
                          "pip install 'mft_engine[gpu]'")
    return torch.device("cuda", index)


def _xla_device() -> torch.device:
    from . import _optional

    missing = _optional.xla_missing()
    if missing is not None:
        raise ConfigError(f"--device xla: {missing}")
    import torch_xla

    from .ops import xla as ops_xla

    ops_xla.register()  # again, now that torch_xla is imported: its functionalization kernels too
    return torch.device(torch_xla.device())


def has_kernel(op: str, device: torch.device) -> bool:
    """Whether the dispatcher has an implementation of `op` ("mft::zero_topk_") for `device`'s tensors."""
    key = DISPATCH_KEYS.get(device.type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def graph_boundary(device: torch.device) -> None:
    """Cut the lazy graph here (XLA: torch_xla.sync(), so a batch loop compiles one graph per step instead of
    one growing graph); nothing on eager devices. Called once per batch or optimizer step."""
    if device.type == "xla":
        import torch_xla

        torch_xla.sync()


def no_grad_context(device: torch.device):
    """The context for forward passes without autograd on `device`: torch.inference_mode (cheapest), or
    torch.no_grad on XLA, whose lazy tensors cannot be inference tensors."""
    return torch.no_grad() if device.type == "xla" else torch.inference_mode()


def supports_sparse_grads(device: torch.device) -> bool:
    """Whether sparse embedding gradients run on `device` (XLA has no sparse tensors)."""
    return device.type != "xla"


def warn_fp64(device: torch.device) -> None:
    """Warn once that fp64 ground truth runs at a fraction of fp32 speed on consumer CUDA cards."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if not any(s in name for s in ("H100", "H200", "A100", "V100", "B100", "B200", "GH200", "MI2", "MI3")):
            warnings.warn(f"{name} may run fp64 at 1/32 to 1/64 of its fp32 rate: fp64 ground truth will be slow "
                          "there", stacklevel=2)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """`batch` (an HF batch dict) with its tensors on `device` (non-blocking copies: no host sync)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU, where ops return when done. Timers call
    it before reading the clock, so a GPU figure is the work's time and not its launch's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xla":
        import torch_xla
        import torch_xla.core.xla_model as xm

        torch_xla.sync()
        xm.wait_device_ops()


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory the device's allocator can still get, in bytes (cudaMemGetInfo's free: it counts neither
    what torch's caching allocator holds unused nor other processes' use); None for a CPU or XLA device,
    whose working sets are bounded by the caller's own budgets instead. Cost: one device query."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def release_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's unused blocks back to the device (after an out-of-memory error, so a
    smaller retry finds them); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def device_record(device: torch.device) -> dict[str, Any]:
    """What results.json records of the device: its name, kind, total memory in bytes and, for CUDA, the
    compute capability. Cost: one device query."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"device": str(device), "name": p.name, "capability": f"{p.major}.{p.minor}",
                "total_memory_bytes": int(p.total_memory)}
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    return {"device": str(device), "name": "cpu", "total_memory_bytes": total}


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark in bytes (getrusage ru_maxrss: KiB on Linux, bytes on macOS).

    It is per process and never goes down: it covers everything this process did before (data loading,
    earlier runs in the same Python session), so compare methods each run in its own process.
    """
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class MemoryPeaks:
    """Peak memory per phase on one device: on CUDA the allocator's peak (torch.cuda.max_memory_allocated,
    reset at each phase's start); on CPU the process's peak resident set read at each phase's end
    (getrusage: a high-water mark since the process started, so it never falls from one phase to the next;
    resetting it would change what other figures of the same process mean). Cost: one query per phase end."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: dict[str, int | None] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the peak memory of the block as phase `name`."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            self.record(name)

    def record(self, name: str) -> None:
        """Record as phase `name` the peak since the previous phase ended (for the first, since the process
        started), and start the next: for a run of phases one after another, without a block each."""
        if self.device.type == "cuda":
            self.bytes[name] = int(torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.bytes[name] = peak_rss_bytes()

    def to_dict(self) -> dict[str, Any]:
        """{"measure": what the figures are, "bytes": {phase: peak bytes}}."""
        measure = ("torch.cuda.max_memory_allocated, reset at each phase's start" if self.device.type == "cuda"
                   else "process peak resident set since it started (ru_maxrss), read at each phase's end")
        return {"measure": measure, "bytes": dict(self.bytes)}


def device_summary(device: torch.device, peaks: MemoryPeaks | None = None) -> dict[str, Any]:
    """results.json's "device" entry: `device_record` plus the peak memory per phase."""
    out = device_record(device)
    if peaks is not None:
        out["peak_memory"] = peaks.to_dict()
    return out
