"""The `gradient` scorer: the engine core's detrimental test on the training gradient, as a signed score."""
from __future__ import annotations

import torch

from ...ops import detrimental_score, round_lr
from ..base import Scorer, as_scores, register_scorer
from ..inputs import MissingStatisticError, ScoringInputs


@register_scorer
class GradientScorer(Scorer):
    """score = |θ − lr·g| − |θ|: how much one SGD step on the training gradient g moves θ away from 0.

    g is the GradientState's grad_sum; lr is rounded once to float32; the value is computed in float64
    from the float32 θ and g, with the engine's arithmetic (t = lr·|g| is exact): where the detrimental
    test holds (sign θ = sign g, θ ≠ 0, g ≠ 0, t < 2|θ|) it is −min(t, 2|θ| − t), taken from the
    `detrimental_score` op itself (shrink ranking), so "score < 0" is exactly "detrimental" and the order
    of the negative scores is the order the engine's selection uses; elsewhere it is the growth
    t − 2|θ| (same sign, overshoot) or t (opposite sign, θ = 0), ≥ 0. float64 parameters are rounded to
    float32 first (the test is defined on the float32 model).

    Signed, but in parameter units, not loss units: it predicts "removal helps" (score < 0) iff the
    parameter is detrimental, and its magnitude is the shrink of |θ|, not a predicted loss change.
    Needs a GradientState. Cost: one pass over θ and g per tensor, float64 temporaries of its size.
    """

    name = "gradient"
    signed = True
    description = ("|θ − lr·g| − |θ| on the training gradient g (parameter units, not loss units); "
                   "negative iff the engine's detrimental test holds")

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        state = inputs.state
        inputs.require(self.name, gradient_state=state)
        missing = [n for n in inputs.names if n not in state.grad_sum]
        if missing:
            raise MissingStatisticError(f"scorer 'gradient' needs the training gradient of {missing[:3]}, "
                                        "which the gradient state lacks; collect over these parameters")
        lr32 = round_lr(inputs.lr)
        theta = inputs.theta()
        out = {}
        for n in inputs.names:
            th = theta[n].detach().to("cpu", torch.float32)
            g = state.grad_sum[n].detach().to("cpu", torch.float32)
            shrink = detrimental_score(th, g, lr32, "shrink", name=n)
            t = lr32 * g.double().abs()
            two = 2.0 * th.double().abs()
            same = (torch.sign(th) == torch.sign(g)) & (th != 0)
            growth = torch.where(same, t - two, t)
            out[n] = as_scores(torch.where(shrink > 0, -shrink, growth))
        return out
