"""The per-tensor keep mask both the learned mask and its untrained controls are built from: k =
⌈keep_ratio · numel⌉ and the exact top-k of |scores| within one tensor (ties to the lower flat index).

It sits in a module of its own so that `learned_mask` (the method, which evaluates the controls) and
`mask_baselines` (the controls, which use the same k and selection) both import it and not each other.
"""
from __future__ import annotations

import torch

from ..masking.selection import k_for


def keep_count(keep_ratio: float, numel: int) -> int:
    """k = ⌈keep_ratio · numel⌉ on the decimal given (0.3 × 10 is 3, not 4), at most numel."""
    return k_for(keep_ratio, int(numel))


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool tensor shaped like `scores`, True at exactly the k largest |scores| (ties: lower flat index).

    NaN scores rank last. Cost: one kthvalue (selection, O(n)) and a few elementwise passes; no sort.
    """
    a = scores.detach().abs().flatten()
    n = a.numel()
    if k >= n:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    a = torch.nan_to_num(a, nan=-1.0, posinf=float("inf"))
    threshold = a.kthvalue(n - k + 1).values  # the k-th largest
    above = a > threshold
    need = k - int(above.sum())
    tied = a == threshold
    keep = above | (tied & (tied.cumsum(0) <= need))
    return keep.view(scores.shape)
