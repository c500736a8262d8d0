"""The `taylor` scorer: the first-order Taylor estimate of the loss change when θ is zeroed."""
from __future__ import annotations

import torch

from ..base import Scorer, as_scores, register_scorer
from ..inputs import ScoringInputs
from .stats import score_gradient


@register_scorer
class TaylorScorer(Scorer):
    """score = −g_s·θ with g_s = ∇L_score: L(θ − θ_i e_i) − L(θ) to first order (signed; < 0: removal helps).

    Needs the scoring-half Objective. Cost: ∇L_score once per inputs (one forward + backward over the
    scoring half, shared with other scorers), then one pass over θ.
    """

    name = "taylor"
    signed = True
    description = "−∇L_score·θ: first-order change of the scoring-half loss when θ is zeroed"

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        inputs.require(self.name, score_objective=inputs.score)
        g = score_gradient(inputs)
        theta = inputs.theta()
        return {n: -(g[n] * as_scores(theta[n])) for n in inputs.names}
