"""The `taylor-train` scorer: taylor's first-order estimate with the training gradient instead of ∇L_score."""
from __future__ import annotations

import torch

from ..base import Scorer, as_scores, register_scorer
from ..inputs import ScoringInputs
from .stats import objective_gradient


def train_gradient(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """g_t = ∇L_train: the gradient of the mean training loss over the training Objective's examples (the N
    rows the GradientState's g was collected on), eval mode (no dropout), w.r.t. each eligible parameter.

    Returns {name: float64 CPU tensor shaped like the parameter}. Cost (once per inputs, cached as
    "train_gradient"): one forward + backward over the N training examples in the model's dtype.
    """
    inputs.require("taylor-train", training_objective=inputs.train)
    return objective_gradient(inputs, "train_gradient", inputs.train)


@register_scorer
class TaylorTrainScorer(Scorer):
    """score = −g_t·θ with g_t = ∇L_train, the eval-mode mean training gradient (signed; < 0: removal helps).

    The same formula as `taylor` on data the scorer is allowed to fit (the training rows, never the
    validation split): beside taylor it separates what the data contributes from what the method does.
    It predicts the training-loss change, so judged on the scoring half it is an out-of-sample scorer.
    Needs the training Objective. Cost: ∇L_train once per inputs (one forward + backward over the N
    training examples), then one pass over θ.
    """

    name = "taylor-train"
    signed = True
    description = "−∇L_train·θ: first-order change of the (eval-mode, mean) training loss when θ is zeroed"

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        g = train_gradient(inputs)
        theta = inputs.theta()
        return {n: -(g[n] * as_scores(theta[n])) for n in inputs.names}
