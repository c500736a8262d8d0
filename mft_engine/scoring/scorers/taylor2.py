"""The `taylor2` scorer: second-order Taylor with the exact Gauss-Newton diagonal of the scoring loss."""
from __future__ import annotations

import torch

from ..base import Scorer, as_scores, register_scorer
from ..inputs import ScoringInputs
from .stats import second_order_scores


def score_gauss_newton_diagonal(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """G_ii: the exact diagonal of the Gauss-Newton matrix of L_score over `inputs.names`.

    G = (1/n) Σ_e J_eᵀ (diag p_e − p_e p_eᵀ) J_e (J_e = ∂logits_e/∂θ), from scoring/curvature/hvp.py's
    gauss_newton_diagonal. Returns {name: float64 CPU tensor shaped like the parameter}; cached under
    "score_gn_diagonal". Cost: that function's (per-example, per-class backward passes over the scoring
    half), once per inputs.
    """
    inputs.require("taylor2", score_objective=inputs.score)

    def compute() -> dict[str, torch.Tensor]:
        from ..curvature.hvp import gauss_newton_diagonal  # lazily: the curvature code is only needed here

        objective = inputs.score
        if list(objective.names) != list(inputs.names):
            # The same loss over exactly the eligible parameters, so no diagonal is spent on others.
            objective = objective.restricted(list(inputs.names))
        diag = gauss_newton_diagonal(objective)
        return {n: as_scores(diag[n]) for n in inputs.names}

    return inputs.cached("score_gn_diagonal", compute)


@register_scorer
class Taylor2Scorer(Scorer):
    """score = −g_s·θ + ½ G_ii θ²: L(θ − θ_i e_i) − L(θ) to second order, the curvature term taken from
    the exact Gauss-Newton diagonal G_ii of the scoring-half loss (signed; < 0: removal helps).

    G_ii ≥ 0, so the second-order term only adds predicted harm. Needs the scoring-half Objective.
    Cost: ∇L_score (shared) plus the GN diagonal (see score_gauss_newton_diagonal), each once per inputs.
    """

    name = "taylor2"
    signed = True
    description = ("−∇L_score·θ + ½·G_ii·θ², G the exact Gauss-Newton diagonal of the scoring-half loss: "
                   "second-order change of that loss when θ is zeroed")

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        inputs.require(self.name, score_objective=inputs.score)
        return second_order_scores(inputs, score_gauss_newton_diagonal(inputs))
