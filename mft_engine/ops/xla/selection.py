"""Top-k selection as a fixed-shape computation: a boolean mask per tensor, k a 0-d tensor, so one compiled
XLA graph serves every k (torch_xla lowers `topk`/`kthvalue` to a full unstable sort of (value, iota),
and an output of shape [k] recompiles for every new k).

Each element gets an integer key whose order is the order of the exact scores (non-detrimental: −1):
"f64" — the float64 score's bit pattern (non-negative doubles order like their int64 bits);
"f32" — two int32 keys compared lexicographically, the pair's hi bits and an order-preserving map of lo.
The k-th largest key is found from the most significant bit down, one fixed step per bit (63, or 31 + 32):
a bit is kept when at least k (remaining) elements have keys at or above the candidate. Elements above the
threshold are selected; of the elements equal to it, the first `k − above` in flat order (a cumulative
count over each tensor plus the count in the tensors before it), so ties go to the lower flat index.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .arithmetic import bitcast, detrimental_f32, detrimental_f64

_I32_MIN = -(2 ** 31)


def _count_at_least(keys: Sequence[torch.Tensor], eligible: Sequence[torch.Tensor | None], candidate: torch.Tensor,
                    count_dtype: torch.dtype) -> torch.Tensor:
    total = torch.zeros((), dtype=count_dtype, device=candidate.device)
    for key, ok in zip(keys, eligible):
        hit = key >= candidate
        if ok is not None:
            hit = hit & ok
        total = total + hit.sum(dtype=count_dtype)
    return total


def kth_largest_key(keys: Sequence[torch.Tensor], eligible: Sequence[torch.Tensor | None], k: torch.Tensor,
                    signed: bool) -> torch.Tensor:
    """The largest T with #{eligible keys ≥ T} ≥ k, for k ≥ 1; the type's maximum when k = 0.

    keys: tensors of one integer dtype (int32 or int64), non-negative unless `signed`; eligible: a bool
    tensor per key tensor (None: all). k: 0-d count (it must not exceed the eligible keys). Fixed cost:
    one compare-and-count pass over the keys per bit (31/63 bits, plus one for the sign when signed)."""
    dtype = keys[0].dtype
    nbits = 31 if dtype == torch.int32 else 63
    device = k.device
    k = k.to(dtype)
    t = torch.zeros((), dtype=dtype, device=device)
    if signed:
        # Non-negative keys are all above negative ones: decide the sign, then the bits below it.
        nonneg = _count_at_least(keys, eligible, t, dtype) >= k
        t = torch.where(nonneg, t, torch.full((), torch.iinfo(dtype).min, dtype=dtype, device=device))
    for bit in range(nbits - 1, -1, -1):
        candidate = t | torch.full((), 1 << bit, dtype=dtype, device=device)
        t = torch.where(_count_at_least(keys, eligible, candidate, dtype) >= k, candidate, t)
    return t


def _flip(like: torch.Tensor) -> torch.Tensor:
    return torch.full((), 0x7FFFFFFF, dtype=torch.int32, device=like.device)


def _lo_key(lo: torch.Tensor) -> torch.Tensor:
    """int32 key ordered like the fp32 values (lo is never −0): negative patterns have their magnitude
    bits flipped, so a larger magnitude gives a smaller key."""
    bits = bitcast(lo, torch.int32)
    return torch.where(bits < 0, bits ^ _flip(bits), bits)


def _lo_from_key(key: torch.Tensor) -> torch.Tensor:
    return bitcast(torch.where(key < 0, key ^ _flip(key), key), torch.float32)


def select_mask(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr32: float, k: torch.Tensor,
                rank_by: str, literal: bool, arithmetic: str
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The selection of ops.select_topk as masks: (masks, threshold, n_tied, n_det, finite).

    masks[i]: bool, shape of thetas[i], True at the selected elements. threshold: float64 0-d, the k-th
    largest score (+inf when k = 0; in "f32" hi + lo, which a TPU rounds to fp32). n_tied: detrimental
    elements whose score equals it. n_det: the number of detrimental elements. finite: whether every θ
    and g is finite (the caller raises otherwise; the masks are then meaningless). Counts are int64 in
    "f64" and int32 in "f32". Requires k ≤ n_det, checked by the caller after the run.

    Cost: the scores once (kept on device: 8 bytes per element), then one compare-and-count pass over
    them per key bit (63 in "f64", 64 in "f32"), then one cumulative count per tensor for the ties. Shapes
    are fixed by the inputs' shapes, so the graph is compiled once for every k."""
    if arithmetic == "f64":
        dets, scores = [], []
        for theta, grad in zip(thetas, grads):
            det, score = detrimental_f64(theta, grad, lr32, rank_by, literal)
            dets.append(det.reshape(-1))
            scores.append(torch.where(det, score, torch.zeros_like(score)).reshape(-1))
        keys = [torch.where(d, bitcast(s, torch.int64), torch.full_like(s, -1, dtype=torch.int64))
                for d, s in zip(dets, scores)]
        t = kth_largest_key(keys, [None] * len(keys), k, signed=False)
        above = [key > t for key in keys]
        tied = [key == t for key in keys]
        threshold = bitcast(t, torch.float64)
        count_dtype = torch.int64
    elif arithmetic == "f32":
        dets, his, los = [], [], []
        for theta, grad in zip(thetas, grads):
            det, hi, lo = detrimental_f32(theta, grad, lr32, rank_by, literal)
            dets.append(det.reshape(-1))
            his.append(hi.reshape(-1))
            los.append(lo.reshape(-1))
        hi_keys = [torch.where(d, bitcast(h, torch.int32), torch.full_like(h, -1, dtype=torch.int32))
                   for d, h in zip(dets, his)]
        lo_keys = [_lo_key(lo) for lo in los]
        t_hi = kth_largest_key(hi_keys, [None] * len(hi_keys), k, signed=False)
        n_above_hi = sum((key > t_hi).sum(dtype=torch.int32) for key in hi_keys)
        same_hi = [key == t_hi for key in hi_keys]
        t_lo = kth_largest_key(lo_keys, same_hi, k.to(torch.int32) - n_above_hi, signed=True)
        above = [(hk > t_hi) | (s & (lk > t_lo)) for hk, s, lk in zip(hi_keys, same_hi, lo_keys)]
        tied = [s & (lk == t_lo) for s, lk in zip(same_hi, lo_keys)]
        threshold = bitcast(t_hi, torch.float32).to(torch.float64) + _lo_from_key(t_lo).to(torch.float64)
        count_dtype = torch.int32
    else:
        raise ValueError(f"arithmetic must be 'f64' or 'f32', got {arithmetic!r}")

    k_c = k.to(count_dtype)
    device = k.device
    zero = torch.zeros((), dtype=count_dtype, device=device)
    n_above = sum((a.sum(dtype=count_dtype) for a in above), zero)
    need = k_c - n_above
    before = zero  # ties in the tensors before this one, in flat order
    masks = []
    for theta, a, tie in zip(thetas, above, tied):
        if tie.numel() == 0:  # torch_xla cannot lower a cumulative sum over zero elements
            masks.append(torch.zeros(theta.shape, dtype=torch.bool, device=device))
            continue
        rank = torch.cumsum(tie.to(count_dtype), 0, dtype=count_dtype) + before
        masks.append((a | (tie & (rank <= need))).reshape(theta.shape))
        before = before + tie.sum(dtype=count_dtype)
    n_tied = before
    inf = torch.full((), float("inf"), dtype=torch.float64, device=device)
    threshold = torch.where(k_c == 0, inf, threshold)
    n_tied = torch.where(k_c == 0, zero, n_tied)
    n_det = sum((d.sum(dtype=count_dtype) for d in dets), zero)
    finite = torch.ones((), dtype=torch.bool, device=device)
    for theta, grad in zip(thetas, grads):
        finite = finite & torch.isfinite(theta).all() & torch.isfinite(grad).all()
    return masks, threshold, n_tied, n_det, finite
