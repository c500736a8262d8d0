"""Triton implementations of mft::zero_masked_ and mft::restore_ (the CUDA kernels of those schemas).

One launch over the indices for the whole params list: a table of param addresses and flat offsets,
and each index finds its param by a binary search over the offsets in registers (indices need not
fall into any particular param, and no per-param launch is made). Elements are moved as raw bits, so
-0.0 and NaN payloads come back exactly. The indices are checked (strictly increasing, in range)
before anything is written, so a bad index leaves the params unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import _common as c

_BITS = {4: torch.int32, 2: torch.int16}


@triton.jit
def scatter_kernel(addrs, offsets, n_params, indices, values, n, RESTORE: tl.constexpr, ELEM_BYTES: tl.constexpr,
                   SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr):
    """For this program's BLOCK indices: find the param holding each flat index (the last p with
    offsets[p] <= index; empty params share their successor's offset and are never the last), then
    without RESTORE save its bits to values[i] and write 0, with RESTORE write values[i] back."""
    pid = tl.program_id(0)
    i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    flat = tl.load(indices + i, mask=mask, other=0)
    # binary search over offsets[0 .. n_params): lo always satisfies offsets[lo] <= flat
    lo = tl.full((BLOCK,), 0, tl.int64)
    hi = tl.full((BLOCK,), 0, tl.int64) + n_params
    for _ in tl.static_range(SEARCH_STEPS):
        active = hi - lo > 1
        mid = (lo + hi) // 2
        go_right = active & (tl.load(offsets + mid, mask=mask & active, other=0) <= flat)
        lo = tl.where(go_right, mid, lo)
        hi = tl.where(active & ~go_right, mid, hi)
    local = flat - tl.load(offsets + lo, mask=mask, other=0)
    addr = tl.load(addrs + lo, mask=mask, other=0)
    if ELEM_BYTES == 4:
        p = addr.to(tl.pointer_type(tl.int32)) + local
        if RESTORE:
            tl.store(p, tl.load(values + i, mask=mask), mask=mask)
        else:
            tl.store(values + i, tl.load(p, mask=mask), mask=mask)
            tl.store(p, tl.full((BLOCK,), 0, tl.int32), mask=mask)
    else:
        p16 = addr.to(tl.pointer_type(tl.int16)) + local
        if RESTORE:
            tl.store(p16, tl.load(values + i, mask=mask), mask=mask)
        else:
            tl.store(values + i, tl.load(p16, mask=mask), mask=mask)
            tl.store(p16, tl.full((BLOCK,), 0, tl.int16), mask=mask)


def _check_params(params: list[torch.Tensor], device: torch.device) -> torch.dtype:
    """The params' one float dtype (float32 for an empty list); TypeError / ValueError as the CPU kernel."""
    return c.check_written_list(params, "params", device)


def _check_indices(indices: torch.Tensor, total: int) -> None:
    """TypeError / ValueError / IndexError for indices that are not int64, 1-D, strictly increasing and
    in [0, total), naming the first bad position as the CPU kernel does (an order violation before a
    range one at the same position). One device sync when there are indices."""
    if indices.dtype != torch.int64:
        raise TypeError(f"indices must be torch.int64, got {indices.dtype}")
    if indices.dim() != 1:
        raise ValueError(f"indices must be 1-D, got {indices.dim()} dimensions")
    n = indices.numel()
    if n == 0:
        return
    not_increasing = torch.zeros_like(indices, dtype=torch.bool)
    not_increasing[1:] = indices[1:] <= indices[:-1]
    bad = not_increasing | (indices < 0) | (indices >= total)
    # the first bad position, or n: one read back
    first = int(torch.where(bad.any(), bad.to(torch.int8).argmax(), n))
    if first == n:
        return
    at = f"indices[{first}]={int(indices[first])}"
    if bool(not_increasing[first]):
        raise ValueError("indices must be strictly increasing (sorted ascending, no duplicates), but "
                         f"{at} follows indices[{first - 1}]={int(indices[first - 1])}")
    raise IndexError(f"{at} is out of range for {total} elements (flat indices must be in [0, {total}))")


def _launch(params: list[torch.Tensor], indices: torch.Tensor, values: torch.Tensor, restore: bool) -> None:
    """One scatter_kernel launch over all indices (checked) for the params (checked, one dtype)."""
    n = indices.numel()
    if n == 0:
        return
    device = indices.device
    numels = [p.numel() for p in params]
    offsets = [0]
    for m in numels[:-1]:
        offsets.append(offsets[-1] + m)
    table = torch.tensor([[p.data_ptr() for p in params], offsets], dtype=torch.int64).to(device)
    elem = params[0].element_size()
    steps = max(1, (len(params) - 1).bit_length())  # halvings until one param is left
    idx = indices.contiguous()
    with c.device_guard(device):
        scatter_kernel[(triton.cdiv(n, c.BLOCK),)](table[0], table[1], len(params), idx, values.view(_BITS[elem]),
                                                    n, RESTORE=restore, ELEM_BYTES=elem, SEARCH_STEPS=steps,
                                                    BLOCK=c.BLOCK, enable_fp_fusion=False)


def zero_masked_(params: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """mft::zero_masked_ on the indices' device: the values at the flat `indices` of the params list
    (params' dtype, [len(indices)]), which are then set to +0.0 in place; identical to the CPU kernel.

    params: contiguous, one float dtype. indices: int64, 1-D, strictly increasing, in [0, total numel).
    Raises TypeError / ValueError / IndexError as the CPU kernel; on a bad index nothing is written.
    Cost: one check of the indices (one device sync), one launch with a random access per index.
    """
    params = list(params)
    device = indices.device
    dtype = _check_params(params, device)
    _check_indices(indices, sum(p.numel() for p in params))
    saved = torch.empty((indices.numel(),), dtype=dtype, device=device)
    _launch(params, indices, saved, restore=False)
    return saved


def restore_(params: Sequence[torch.Tensor], indices: torch.Tensor, values: torch.Tensor) -> None:
    """mft::restore_ on the indices' device: writes `values` back at the flat `indices`, in place, bit
    for bit (undoes zero_masked_ / zero_topk_).

    params and indices as for zero_masked_; values 1-D, one per index, in the params' dtype.
    Raises TypeError / ValueError / IndexError as the CPU kernel; on a bad index nothing is written.
    Cost: one check of the indices (one device sync), one launch with a random access per index.
    """
    params = list(params)
    device = indices.device
    dtype = _check_params(params, device)
    c.check_device(values, "values", device)
    if values.dtype != dtype:
        raise TypeError(f"values must be {dtype}, got {values.dtype}")
    if values.dim() != 1 or values.numel() != indices.numel():
        raise ValueError(f"values must be 1-D with {indices.numel()} elements (one per index), got shape "
                         f"{list(values.shape)}")
    _check_indices(indices, sum(p.numel() for p in params))
    _launch(params, indices, values.contiguous(), restore=True)
