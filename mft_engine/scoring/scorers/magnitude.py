"""The `magnitude` scorer: |θ|."""
from __future__ import annotations

import torch

from ..base import Scorer, as_scores, register_scorer
from ..inputs import ScoringInputs


@register_scorer
class MagnitudeScorer(Scorer):
    """score = |θ| (unsigned: predicted harm ≥ 0 of zeroing θ; the smallest are removed first).

    Needs only the model. Cost: one pass over the eligible parameters, a float64 copy of each.
    """

    name = "magnitude"
    signed = False
    description = "|θ|; unsigned: predicted harm ≥ 0 of zeroing (smallest removed first)"

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        return {n: as_scores(t).abs() for n, t in inputs.theta().items()}
