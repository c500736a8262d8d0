"""Typed wrappers over the fused `torch.ops.mft.*` operators.

Importing this package loads the C++ extension `mft_engine._C` (which registers the ops with the
PyTorch dispatcher) and the fake implementations used by torch.compile / FakeTensor tracing. A missing
or broken extension raises ImportError here: rebuild with `pip install --no-build-isolation -e .`.

Ops (schemas in bindings/registration.cpp; CPU kernels in csrc/; CUDA kernels in ops/triton/, Triton,
registered when triton imports; XLA implementations in ops/xla/, torch ops torch_xla lowers to HLO,
registered when torch_xla is installed, plus `mft::select_mask_xla`, the fixed-shape selection):
  accumulate_, detrimental_score, detrimental_count, select_topk, zero_topk_, zero_masked_, restore_.
`round_lr(lr)` is the lr every op uses (rounded once to float32, checked); `ops.reference` holds the
pure-PyTorch oracles the tests and `mft bench zeroing` compare the kernels with.

CPU code path: the kernels have a scalar baseline, an AVX2+FMA and an AVX-512 path, all bit-identical.
The widest one this CPU supports is used unless MFT_CPU_PATH=scalar|avx2|avx512|auto says otherwise
(read at import). An unknown value, or a path this CPU lacks, does not fail the import: the first op call,
cpu_path() or load_model() raises CpuPathError (a ConfigError, so `mft` prints one line and exits 2),
naming the allowed values; check_cpu_path_environment() raises it on demand. cpu_path() names the active
path; set_cpu_path(name) / use_cpu_path(name) switch it at run time (the tests run every supported path).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch  # noqa: F401  (loads libtorch, which _C links against, before _C)

from . import _cpu_env
from ._cpu_env import CpuPathError, check_cpu_path_environment

try:
    from mft_engine import _C  # noqa: F401  (registers the ops; never swallow an unrelated ImportError)
except ImportError as _e:
    # Only the extension's refusal of MFT_CPU_PATH is deferred (see _cpu_env): import again without it, so
    # the package imports and the refusal surfaces as one ConfigError where the CLI can print it.
    if _cpu_env.ENV_VAR not in str(_e) or _cpu_env.ENV_VAR not in os.environ:
        raise
    _cpu_env.env_error = str(_e).splitlines()[0]
    _saved = os.environ.pop(_cpu_env.ENV_VAR)
    try:
        from mft_engine import _C
    finally:
        os.environ[_cpu_env.ENV_VAR] = _saved  # child processes see what the user set

from . import _fake  # noqa: F401  (registers the fake implementations)
from . import triton as _triton_kernels
from . import xla as _xla_kernels  # imports torch only, never torch_xla
from ._args import round_lr
from .accumulate import accumulate_
from .detrimental_count import detrimental_count
from .detrimental_score import detrimental_score
from .select_topk import select_topk
from .zero_masked import restore_, zero_masked_
from .zero_topk import zero_topk_

# The Triton kernels become the CUDA implementations when triton imports (the [gpu] extra); without it
# nothing is registered and CUDA tensors get the dispatcher's "no kernel" error.
_triton_kernels.register()
# The XLA-key kernels when torch_xla is installed; torch_xla itself is imported only by --device xla.
_xla_kernels.register()


def cpu_path() -> str:
    """The active CPU code path of the kernels: "avx512", "avx2" or "scalar".

    Raises CpuPathError when MFT_CPU_PATH holds a value the kernels refused.
    """
    check_cpu_path_environment()
    return _C.cpu_path()


def supported_cpu_paths() -> list[str]:
    """The CPU code paths this machine can run, narrowest first (always starts with "scalar")."""
    return list(_C.supported_cpu_paths())


def set_cpu_path(name: str) -> None:
    """Use CPU path `name` ("scalar", "avx2", "avx512" or "auto" = widest) for later op calls.

    Raises ValueError when the name is unknown or this CPU lacks the path. Process-wide. An explicit
    choice replaces a refused MFT_CPU_PATH, so the kernels run again after it.
    """
    _C.set_cpu_path(name)
    _cpu_env.env_error = None


def cached_memory() -> int:
    """Bytes of freed large buffers (>= 1 MiB: op outputs and work buffers) the kernels keep for reuse.

    Fresh memory costs a page fault per page on first write, which on some machines costs as much as
    the op itself; so large blocks go back to a cache when their tensor is freed, up to MFT_CACHE_MB
    MiB (default 1024; 0 turns the cache off).
    """
    return int(_C.cached_memory())


def release_cached_memory() -> int:
    """Return the kernels' cached buffers to the system; the number of bytes released."""
    return int(_C.release_cached_memory())


@contextlib.contextmanager
def use_cpu_path(name: str) -> Iterator[None]:
    """Context manager: run the enclosed op calls on CPU path `name`, then restore the previous path."""
    previous = _C.cpu_path()
    set_cpu_path(name)
    try:
        yield
    finally:
        set_cpu_path(previous)


__all__ = [
    "CpuPathError", "accumulate_", "cached_memory", "check_cpu_path_environment", "cpu_path", "detrimental_count",
    "detrimental_score", "release_cached_memory", "restore_", "round_lr", "select_topk", "set_cpu_path",
    "supported_cpu_paths", "use_cpu_path", "zero_masked_", "zero_topk_",
]
