"""The detrimental selection: count, choose k, select the top k exactly, and the random control."""
from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import ops
from ..config import EXCLUDE_PRESETS, parse_fractions, round_lr_fp32
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

    Detrimental: sign(θ) = sign(g) ≠ 0 and lr·|g| < 2|θ| (fp64 from fp32; `literal`: fp32 |θ−lr·g| < |θ|).
    k = ceil(fraction × detrimental count); ties broken by lower flat index. Cost: one counting pass over
    θ and g, then per fraction one sampled-bracket pass (mft::select_topk); O(k) extra memory.
    """
    fractions = parse_fractions(fractions)
    names = [n for n, _ in named]
    thetas = [p.detach() for _, p in named]
    gs = [grads[n] for n in names]
    counts = ops.detrimental_count(thetas, gs, lr, literal=literal, names=names)
    n_det = int(counts.sum())
    per_tensor = dict(zip(names, counts.tolist()))
    n_eligible = sum(t.numel() for t in thetas)
    out = []
    for f in fractions:
        k = k_for(f, n_det)
        idx, thr, tied = ops.select_topk(thetas, gs, lr, k, rank_by=rank_by, literal=literal, names=names, seed=seed)
        info = {"kind": "detrimental", "fraction": f, "k": k, "lr_fp32": round_lr_fp32(lr), "rank_by": rank_by,
                "literal": literal}
        mask = Mask(names, [tuple(t.shape) for t in thetas], idx, None, info)
        out.append(Selection(mask, f, k, n_eligible, n_det, float(thr), int(tied), per_tensor))
    return out


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
) -> Mask:
    """The Mask of the top `fraction` of detrimental eligible parameters of `model` (not yet applied).

    `state_or_grads` is a GradientState or a dict name → fp32 gradient; `exclude` a preset name
    (original, influence, none) or name patterns; a pattern that matches no parameter name is a
    ConfigError. Apply it with `mask.apply(model)`.
    """
    grads = getattr(state_or_grads, "grad_sum", state_or_grads)
    patterns = EXCLUDE_PRESETS[exclude] if isinstance(exclude, str) and exclude in EXCLUDE_PRESETS else (
        tuple(p.strip() for p in exclude.split(",") if p.strip()) if isinstance(exclude, str) else tuple(exclude))
    # A pattern matching nothing would silently leave every parameter eligible (a typo in a name).
    check_exclude_patterns(model, exclude, flag="exclude")
    named = [(n, p) for n, p in eligible_parameters(model, patterns) if n in grads]
    return select_detrimental(named, grads, lr, [fraction], rank_by, literal)[0].mask
