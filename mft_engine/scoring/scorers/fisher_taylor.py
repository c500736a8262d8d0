"""The `fisher-taylor` scorer: LLM-Pruner's mixed first/second-order element salience."""
from __future__ import annotations

import torch

from ..base import Scorer, register_scorer
from ..inputs import ScoringInputs
from .stats import fisher_diagonal, second_order_scores


@register_scorer
class FisherTaylorScorer(Scorer):
    """score = −(θ·g_s − ½ θ² F_ii): LLM-Pruner's element importance (Ma et al. 2023, eq. 5) as a
    signed predicted loss change (< 0: removal helps).

    g_s = ∇L_score; F_ii = (1/n) Σ_e (∂ℓ_e/∂θ_i)², the empirical Fisher diagonal over the scoring-half
    examples, standing in for the Hessian diagonal. Needs the scoring-half Objective. Cost: ∇L_score
    (shared) and the Fisher diagonal (one per-example vmap pass over the scoring half, shared), each
    once per inputs.
    """

    name = "fisher-taylor"
    signed = True
    description = ("−(θ·∇L_score − ½·θ²·F_ii), F the empirical Fisher diagonal of the scoring half "
                   "(LLM-Pruner's element salience as a loss change)")

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        inputs.require(self.name, score_objective=inputs.score)
        return second_order_scores(inputs, fisher_diagonal(inputs))
