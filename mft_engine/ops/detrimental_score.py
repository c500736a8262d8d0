"""mft::detrimental_score — the detrimental test and its ranking score for one tensor."""
from __future__ import annotations

import torch

from ._args import check_backend, check_rank_by, raise_nonfinite, round_lr


def detrimental_score(theta: torch.Tensor, grad: torch.Tensor, lr: float, rank_by: str = "shrink",
                      literal: bool = False, name: str | None = None) -> torch.Tensor:
    """Per-element score of how much one SGD step θ − lr·g shrinks θ toward zero; 0 if it does not.

    lr is rounded once to float32. Algebraic test (default), in float64 from the exact float32 values:
    t = lr·|g| (exact), detrimental iff sign(θ) = sign(g), θ ≠ 0, g ≠ 0 (−0 counts as 0) and t < 2|θ|;
    score "shrink" = min(t, 2|θ| − t) (= |θ| − |θ − lr·g| exactly, one rounding), "update" = t.
    literal=True evaluates the original float32 code instead: u = fl(lr·g), n = fl(θ − u), detrimental
    iff |n| < |θ|, score "shrink" = fl(|θ| − |n|), "update" = |u|. Non-detrimental elements score 0.0;
    detrimental ones score > 0.

    Shapes/dtypes: theta and grad have the same shape, each float32, float16 or bfloat16 (widened
    exactly). Returns float64 of that shape (contiguous).
    Raises ConfigError for lr <= 0 or a bad rank_by, NonFiniteError (naming `name` if given) for NaN/Inf.
    Cost: one pass over theta and grad plus the float64 output.
    """
    lr32 = round_lr(lr)
    check_rank_by(rank_by)
    try:
        check_backend(theta, grad)
        return torch.ops.mft.detrimental_score.default(theta, grad, lr32, rank_by, bool(literal))
    except RuntimeError as err:
        raise_nonfinite(err, None if name is None else [name], [theta], [grad], single=True)
