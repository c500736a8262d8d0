"""The detrimental selection: count, choose k, select the top k exactly, and the random control."""
from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import ops
from ..selection_spec import SelectionSpec, parse_fractions, round_lr_fp32
from ..device import has_kernel
from ..errors import ConfigError
from .eligibility import check_exclude_patterns, eligible_parameters
from .mask import Mask


@dataclass
class Selection:
    """One fraction's selection: the Mask plus the counts and tie information that results.json reports."""

    mask: Mask
    fraction: float
    k: int
    n_eligible: int
    n_detrimental_eligible: int
    threshold: float
    n_tied_at_threshold: int
    detrimental_per_tensor: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "k": self.k, "n_eligible": self.n_eligible,
                "n_detrimental_eligible": self.n_detrimental_eligible,
                "threshold_score": self.threshold, "n_tied_at_threshold": self.n_tied_at_threshold}


def k_for(fraction: float, n_detrimental: int) -> int:
    """k = ceil(fraction × number of detrimental eligible parameters), on the decimal the user typed.

    Exact rational arithmetic: 0.1 × 30 is 3, where float arithmetic gives 3.0000000000000004 → 4.
    """
    return min(math.ceil(Fraction(repr(float(fraction))) * n_detrimental), n_detrimental)


def fusable(thetas: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
    """Whether mft::zero_topk_ may select and zero `thetas` in one pass: one device, contiguous, one
    floating dtype, and no theta sharing memory with another theta or with any grad (tied or aliased weights
    would be zeroed through their twin). Cost: O(n log n) over the n tensors' address ranges."""
    if not thetas or any(t.device != thetas[0].device or not t.is_contiguous() for t in thetas):
        return False
    if not has_kernel("mft::zero_topk_", thetas[0].device):  # XLA: fixed-shape selection, then zero_masked_
        return False
    if len({t.dtype for t in thetas}) != 1 or thetas[0].dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    spans = sorted((t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size(),
                    t.numel() * t.element_size(), kind) for kind, ts in (("theta", thetas), ("grad", grads))
                   for t in ts if t.numel())
    end, end_kind = -1, None
    for start, size, kind in spans:
        if start < end and "theta" in (kind, end_kind):
            return False
        if start + size > end:
            end, end_kind = start + size, kind
    return True


class DetrimentalSelector:
    """The detrimental test counted once over `named` (the eligible parameters), then per fraction either
    the exact top-k indices (`select`) or the top k selected and zeroed in one pass (`select_and_zero_`).

    Detrimental: sign(θ) = sign(g) ≠ 0 and lr·|g| < 2|θ| (fp64 from fp32; `literal`: fp32 |θ−lr·g| < |θ|).
    k = ceil(fraction × detrimental count); ties broken by lower flat index. Cost of the constructor: one
    counting pass over θ and g (mft::detrimental_count).
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]], grads: dict[str, torch.Tensor], lr: float,
                 rank_by: str = "shrink", literal: bool = False, seed: int = 0):
        self.names = [n for n, _ in named]
        self.thetas = [p.detach() for _, p in named]
        self.grads = [grads[n] for n in self.names]
        self.lr, self.rank_by, self.literal, self.seed = lr, rank_by, literal, seed
        counts = ops.detrimental_count(self.thetas, self.grads, lr, literal=literal, names=self.names)
        self.n_detrimental = int(counts.sum())
        self.per_tensor = dict(zip(self.names, counts.tolist()))
        self.n_eligible = sum(t.numel() for t in self.thetas)
        self.fused = fusable(self.thetas, self.grads)

    def _selection(self, fraction: float, k: int, idx, values, thr, tied) -> Selection:
        info = {"kind": "detrimental", "fraction": fraction, "k": k, "lr_fp32": round_lr_fp32(self.lr),
                "rank_by": self.rank_by, "literal": self.literal}
        mask = Mask(self.names, [tuple(t.shape) for t in self.thetas], idx, values, info)
        return Selection(mask, fraction, k, self.n_eligible, self.n_detrimental, float(thr), int(tied), self.per_tensor)

    def select(self, fraction: float) -> Selection:
        """The exact top-k indices for `fraction` (mft::select_topk); nothing is written. Cost: one
        sampled-bracket pass over θ and g; O(k) extra memory."""
        k = k_for(fraction, self.n_detrimental)
        idx, thr, tied = ops.select_topk(self.thetas, self.grads, self.lr, k, rank_by=self.rank_by,
                                         literal=self.literal, names=self.names, seed=self.seed)
        return self._selection(fraction, k, idx, None, thr, tied)

    def select_and_zero_(self, fraction: float) -> Selection:
        """Select the top k for `fraction` and zero them in place; the Mask holds the values they had, so
        `mask.restore(model)` undoes it bit for bit. One pass (mft::zero_topk_) when `fusable`, else
        select_topk then zero_masked_ (the same indices and values)."""
        if not self.fused:
            sel = self.select(fraction)
            with torch.no_grad():
                sel.mask.values = ops.zero_masked_(self.thetas, sel.mask.indices)
            return sel
        k = k_for(fraction, self.n_detrimental)
        with torch.no_grad():
            idx, values, thr, tied = ops.zero_topk_(self.thetas, self.grads, self.lr, k, rank_by=self.rank_by,
                                                    literal=self.literal, names=self.names, seed=self.seed)
        return self._selection(fraction, k, idx, values, thr, tied)


def select_detrimental(
    named: list[tuple[str, torch.Tensor]],
    grads: dict[str, torch.Tensor],
    lr: float,
    fractions: list[float] | float,
    rank_by: str = "shrink",
    literal: bool = False,
    seed: int = 0,
) -> list[Selection]:
    """For each fraction, the exact top-k detrimental parameters among `named` (already the eligible ones).

    See DetrimentalSelector. Cost: one counting pass over θ and g, then per fraction one sampled-bracket
    pass (mft::select_topk); O(k) extra memory. Nothing is zeroed.
    """
    selector = DetrimentalSelector(named, grads, lr, rank_by, literal, seed)
    return [selector.select(f) for f in parse_fractions(fractions)]


def random_mask(named: list[tuple[str, torch.Tensor]], k: int, seed: int) -> Mask:
    """k flat indices drawn uniformly without replacement from all of `named` (the random control)."""
    n = sum(p.numel() for _, p in named)
    if k > n:
        raise ConfigError(f"cannot draw {k} parameters from {n} eligible ones")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=k, replace=False, shuffle=False)) if k else np.zeros(0, dtype=np.int64)
    return Mask([nm for nm, _ in named], [tuple(p.shape) for _, p in named], torch.from_numpy(idx.astype(np.int64)),
                None, {"kind": "random", "k": k, "seed": seed})


def detrimental_mask(
    model: torch.nn.Module,
    state_or_grads,
    lr: float = 2e-5,
    fraction: float = 0.1,
    rank_by: str = "shrink",
    exclude: str | tuple[str, ...] = "original",
    literal: bool = False,
    apply: bool = False,
) -> Mask:
    """The Mask of the top `fraction` of detrimental eligible parameters of `model`.

    `state_or_grads` is a GradientState or a dict name → fp32 gradient; `exclude` a preset name
    (original, influence, none) or name patterns; a pattern that matches no parameter name is a
    ConfigError. With `apply=False` nothing is written (apply it with `mask.apply(model)`); with
    `apply=True` the parameters are selected and zeroed in one pass (mft::zero_topk_; select + zero for
    tied or aliased weights) and the mask holds their values for `mask.restore(model)`.
    Cost: one counting pass and one selection pass over θ and g.
    """
    grads = getattr(state_or_grads, "grad_sum", state_or_grads)
    spec = SelectionSpec(lr=lr, fractions=(fraction,), rank_by=rank_by, literal=literal, exclude=exclude,
                         flags={"lr": "lr", "fractions": "fraction", "rank_by": "rank_by", "exclude": "exclude"})
    # A pattern matching nothing would silently leave every parameter eligible (a typo in a name).
    check_exclude_patterns(model, exclude, flag="exclude")
    named = [(n, p) for n, p in eligible_parameters(model, spec.exclude_patterns()) if n in grads]
    selector = DetrimentalSelector(named, grads, spec.lr, spec.rank_by, spec.literal)
    return (selector.select_and_zero_(spec.fraction) if apply else selector.select(spec.fraction)).mask
