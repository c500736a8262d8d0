"""The XLA implementations of the mft op schemas whose outputs have data-independent shapes, plus
select_topk through the fixed-shape mask. Each takes the schema's arguments in order and is made of torch
operations that torch_xla records lazily and lowers to HLO; nothing here reads a tensor back to the host
except the argument checks named in each docstring (one small transfer per call, never one per tensor).

The arithmetic ("f64" or "f32", see arithmetic.py) is chosen per call by `arithmetic_for(device)`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .arithmetic import (
    ARITHMETICS,
    barrier,
    bitcast,
    detrimental_f32,
    detrimental_f64,
    exact_f64,
    f64_to_f32_storage,
    round_f32_as_f64,
    to_f32,
)
from .selection import select_mask

ENV_VAR = "MFT_XLA_ARITHMETIC"
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_forced: dict[str, str | None] = {"arithmetic": None}


def set_arithmetic(name: str | None) -> None:
    """Use arithmetic `name` ("f64", "f32" or "auto") for later XLA op calls in this process; None goes
    back to MFT_XLA_ARITHMETIC or "auto". ValueError for another name."""
    if name is not None and name not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, got {name!r}")
    _forced["arithmetic"] = name


def arithmetic_for(device: torch.device, requested: str = "auto") -> str:
    """The arithmetic for an op on `device`: `requested` unless "auto", then set_arithmetic()'s choice,
    then MFT_XLA_ARITHMETIC, then "f32" on a TPU and "f64" elsewhere (float64 is exact and cheap there)."""
    for choice in (requested, _forced["arithmetic"], os.environ.get(ENV_VAR, "auto")):
        if choice is None or choice == "auto":
            continue
        if choice not in ARITHMETICS:
            raise ValueError(f"{ENV_VAR}={choice!r} is not one of {', '.join(ARITHMETICS)}")
        return choice
    import torch_xla.core.xla_model as xm

    return "f32" if xm.xla_device_hw(device) == "TPU" else "f64"


def _check_pair(theta: torch.Tensor, grad: torch.Tensor) -> None:
    if theta.dtype not in _FLOATS or grad.dtype not in _FLOATS:
        raise TypeError("theta and grad must be float32, float16 or bfloat16")
    if theta.shape != grad.shape:
        raise ValueError(f"grad must have the shape of theta {tuple(theta.shape)}, got {tuple(grad.shape)}")


def _all_true(flags: Sequence[torch.Tensor]) -> bool:
    """One device-to-host read of the AND of 0-d bool tensors."""
    out = torch.ones((), dtype=torch.bool, device=flags[0].device)
    for f in flags:
        out = out & f
    return bool(out.cpu())


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).all()


def accumulate_(g_sum: torch.Tensor, sq_sum: torch.Tensor, pos_count: torch.Tensor, neg_count: torch.Tensor,
                grad: torch.Tensor) -> None:
    """g_sum += g; sq_sum += g·g (fp32 product, then fp32 sum); pos_count += g > 0; neg_count += g < 0.

    "f64": bit-identical to the reference (each fp32 operation emulated exactly). "f32": fp32 arithmetic
    with the product rounded before the sum (no FMA); identical except that a subnormal operand or result
    is flushed to zero, as TPUs flush it. The counts come from the sign bits (exact in both; NaN counts
    neither sign). Cost: one fused elementwise pass over the five tensors; no host read."""
    if grad.shape != g_sum.shape:
        raise ValueError(f"grad must have the shape of g_sum {tuple(g_sum.shape)}, got {tuple(grad.shape)}")
    g32 = to_f32(grad)
    bits = bitcast(g32, torch.int32)
    number = ~torch.isnan(g32)
    pos = number & (bits > 0)
    neg = number & (bits < 0) & ((bits & torch.full((), 0x7FFFFFFF, dtype=torch.int32, device=bits.device)) != 0)
    if arithmetic_for(g_sum.device) == "f64":
        g = exact_f64(g32)
        new_sum = f64_to_f32_storage(round_f32_as_f64(exact_f64(g_sum) + g))
        square = round_f32_as_f64(g * g)  # exact product, one rounding to fp32
        new_sq = f64_to_f32_storage(round_f32_as_f64(exact_f64(sq_sum) + square))
    else:
        new_sum = g_sum + g32
        new_sq = sq_sum + barrier(g32 * g32)
    g_sum.copy_(new_sum)
    sq_sum.copy_(new_sq)
    pos_count.add_(pos.to(torch.int32))
    neg_count.add_(neg.to(torch.int32))


def _score(theta: torch.Tensor, grad: torch.Tensor, lr: float, rank_by: str, literal: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(detrimental mask, float64 score with 0.0 where not detrimental) in the device's arithmetic."""
    if arithmetic_for(theta.device) == "f64":
        det, score = detrimental_f64(theta, grad, lr, rank_by, literal)
    else:
        det, hi, lo = detrimental_f32(theta, grad, lr, rank_by, literal)
        score = hi.to(torch.float64) + lo.to(torch.float64)  # exact where float64 is (CPU, GPU)
    return det, torch.where(det, score, torch.zeros((), dtype=torch.float64, device=score.device))


def detrimental_score(theta: torch.Tensor, grad: torch.Tensor, lr: float, rank_by: str, literal: bool
                      ) -> torch.Tensor:
    """float64 score per element, 0.0 where not detrimental (ops.detrimental_score's definition).

    Shape of theta. "f64": bit-identical to the reference. "f32": exact under the conditions in
    arithmetic.py, as hi + lo (a TPU, emulating float64, may round that sum). Host read: one bool
    (are θ and g finite?), because a non-finite input must raise before the scores are used.
    Cost: one fused elementwise pass over theta and grad plus the float64 output."""
    _check_pair(theta, grad)
    if not _all_true([_finite(theta), _finite(grad)]):
        raise RuntimeError("non-finite theta or grad (NaN or Inf)")
    return _score(theta, grad, lr, rank_by, literal)[1]


def detrimental_count(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, literal: bool
                      ) -> torch.Tensor:
    """int64 [len(thetas)]: detrimental elements per tensor (the algebraic or literal test).

    Host read: one bool for the whole list (finite inputs). Cost: one fused pass per tensor pair and a
    reduction each; nothing is concatenated."""
    if len(thetas) != len(grads):
        raise ValueError("thetas and grads must have the same length")
    for t, g in zip(thetas, grads):
        _check_pair(t, g)
    if not _all_true([_finite(x) for pair in zip(thetas, grads) for x in pair]):
        raise RuntimeError("non-finite theta or grad (NaN or Inf)")
    counts = [_score(t, g, lr, "shrink", literal)[0].sum(dtype=torch.int64) for t, g in zip(thetas, grads)]
    return torch.stack(counts)


def _check_indices(params: Sequence[torch.Tensor], indices: torch.Tensor) -> None:
    """The checks of the CPU kernel, on the host (indices come over once when they live on the device)."""
    if indices.dtype != torch.int64 or indices.dim() != 1:
        raise TypeError("indices must be a 1-D int64 tensor")
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        raise TypeError("params must share one dtype: float32, float16 or bfloat16")
    host = indices.cpu()
    total = sum(p.numel() for p in params)
    if host.numel() > 1 and not bool((host[1:] > host[:-1]).all()):
        raise ValueError("indices must be strictly increasing (sorted ascending, no duplicates)")
    if host.numel() and (int(host[0]) < 0 or int(host[-1]) >= total):
        raise IndexError(f"indices must be in [0, {total})")


def _locations(params: Sequence[torch.Tensor], indices: torch.Tensor):
    """Per non-empty param: (param, flat view, in-range mask over indices, safe local positions). Fixed
    shapes: every param looks at all K indices (the slots of the others are masked out)."""
    start = 0
    for p in params:
        n = p.numel()
        if n:
            local = indices - start
            inside = (local >= 0) & (local < n)
            yield p, p.reshape(-1), inside, torch.where(inside, local, torch.zeros_like(local))
        start += n


def zero_masked_(params: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """Saves then zeroes (+0.0) the elements at the flat indices of the params list, in place; returns the
    saved values [K] in the params' dtype. Host read: the indices, for the CPU kernel's checks (strictly
    increasing, in range). Cost: per param one gather and one scatter over the K indices (P·K work for P
    params: the fixed-shape price; the mask route, select_mask + where, costs one pass) and one
    masked write over the param."""
    params = list(params)
    _check_indices(params, indices)
    indices = indices.to(params[0].device)
    saved = torch.zeros(indices.shape, dtype=params[0].dtype, device=params[0].device)
    for p, flat, inside, safe in _locations(params, indices):
        saved = torch.where(inside, flat.index_select(0, safe), saved)
        hit = torch.zeros(flat.shape, dtype=torch.int32, device=flat.device).scatter_add(0, safe, inside.to(torch.int32))
        p.masked_fill_((hit > 0).reshape(p.shape), 0)
    return saved


def restore_(params: Sequence[torch.Tensor], indices: torch.Tensor, values: torch.Tensor) -> None:
    """Writes values back at the flat indices of the params list, in place, bit for bit. Host read: the
    indices (checks). Cost as zero_masked_: per param a scatter-max of slot numbers over the K indices,
    then one gather of the values and one write over the param."""
    params = list(params)
    _check_indices(params, indices)
    if values.shape != indices.shape or values.dtype != params[0].dtype:
        raise ValueError("values must be 1-D with one entry per index, in the params' dtype")
    device = params[0].device
    indices, values = indices.to(device), values.to(device)
    slots = torch.arange(indices.shape[0], dtype=torch.int64, device=device)
    for p, flat, inside, safe in _locations(params, indices):
        # Which slot writes each element (-1: none). The maximum, not a plain scatter: slots of other params
        # point at position 0 too, and a scatter with repeated positions keeps an unspecified one.
        slot = torch.full(flat.shape, -1, dtype=torch.int64, device=device).scatter_reduce(
            0, safe, torch.where(inside, slots, torch.full_like(slots, -1)), reduce="amax")
        restored = torch.where(slot >= 0, values.index_select(0, slot.clamp(min=0)), flat)
        p.copy_(restored.reshape(p.shape))


def select_topk(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int, rank_by: str,
                literal: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ops.select_topk on XLA tensors: the fixed-shape mask (one compiled graph for every k), then the masks
    converted to ascending flat indices on the host. Returns (indices [k], threshold, n_tied) on the
    tensors' device. `seed` is accepted for the schema and unused (nothing is sampled).
    Host reads: the finite flag and n_det (checks), then the masks (N bytes)."""
    from . import device_count, masks_to_indices

    device = thetas[0].device
    for t, g in zip(thetas, grads):
        _check_pair(t, g)
    arithmetic = arithmetic_for(device)
    k_t = device_count(k, device)
    masks, threshold, n_tied, n_det, finite = select_mask(thetas, grads, lr, k_t, rank_by, literal, arithmetic)
    run_pending(masks + [threshold, n_tied, n_det, finite])
    if not bool(finite.cpu()):
        raise RuntimeError("non-finite theta or grad (NaN or Inf)")
    det = int(n_det.cpu())
    if not 0 <= k <= det:
        raise ValueError(f"k={k} exceeds the number of detrimental elements ({det}); k must be in [0, {det}]")
    indices = masks_to_indices(masks)
    return indices.to(device), threshold, n_tied.to(torch.int64)


def run_pending(tensors: list[torch.Tensor]) -> None:
    """Run the pending graph of these tensors once, so that the reads that follow only transfer."""
    import torch_xla

    torch_xla._XLAC._xla_sync_multi(tensors, devices=[], wait=True)
