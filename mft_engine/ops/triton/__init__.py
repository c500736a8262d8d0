"""Triton kernels: the CUDA implementations of the mft op schemas (bindings/registration.cpp).

One module per op: accumulate, detrimental_score, detrimental_count, select_topk, zero_topk and
zero_masked (zero_masked_ and restore_). `register()` (called by mft_engine.ops at import) registers a
CUDA kernel for each schema with torch.library.register_kernel, only when triton is installed; without
triton (the `[gpu]` extra) nothing is registered and the package works as before. The dispatcher picks
the implementation by the tensors' device, so calling code never branches on the device.

The kernel modules themselves are imported on the first CUDA call, not here: importing them decorates
the kernels, and under TRITON_INTERPRET=1 (the CI tests, which call them directly on CPU tensors)
the variable must be set before that moment, not before `import triton`.

Contract, shared with the CPU kernels: identical inputs give identical bits (float64 scores computed
exactly; FP contraction disabled at every launch, so the literal float32 θ − lr·g is not fused); ties
go to the lower flat index and indices come out ascending, with output positions from prefix sums,
never atomic counters. The list ops (detrimental_count, select_topk, zero_topk_, zero_masked_,
restore_) cover the whole list in one launch per pass through a table of tensor addresses; nothing
is concatenated. Launches go to the current stream of the tensors' device (a device guard for cuda:N).

Status: tested under the Triton interpreter on CPU tensors and compiled for sm_80/sm_90 without a
GPU; never run on a GPU yet. The interpreter runs programs one after another, so races cannot show
there; the kernels write each output location from one program only, which is the property relied on.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from .._backend import OptionalBackend

# schema name -> (kernel module, function): each function takes the schema's arguments in order.
KERNELS: dict[str, tuple[str, str]] = {
    "accumulate_": ("accumulate", "accumulate_"),
    "detrimental_score": ("detrimental_score", "detrimental_score"),
    "detrimental_count": ("detrimental_count", "detrimental_count"),
    "select_topk": ("select_topk", "select_topk"),
    "zero_topk_": ("zero_topk", "zero_topk_"),
    "zero_masked_": ("zero_masked", "zero_masked_"),
    "restore_": ("zero_masked", "restore_"),
}

_backend = OptionalBackend("triton")


def _lazy(module: str, function: str) -> Callable:
    """A kernel that imports its module on the first call (see the module docstring for why)."""
    def kernel(*args):
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)(*args)

    kernel.__name__ = kernel.__qualname__ = f"mft_triton_{function}"
    return kernel


def register() -> bool:
    """Registers the Triton kernels as the CUDA implementations of every mft op, once; returns whether
    they are registered. Nothing is registered when triton is not installed (`import_error()` then says
    so). triton itself is imported on the first CUDA call, not here: `import mft_engine` must not load
    an optional backend (CPU users pay nothing for it). Cost: one look-up of the installed packages."""
    if _backend.registered:
        return True
    if not _backend.installed():
        return False
    for name, (module, function) in KERNELS.items():
        torch.library.register_kernel(f"mft::{name}", "cuda", _lazy(module, function))
    return _backend.mark_registered()


def registered() -> bool:
    """Whether register() has registered the CUDA kernels in this process."""
    return _backend.registered


def import_error() -> str | None:
    """Why triton did not import when register() tried, or None."""
    return _backend.import_error
