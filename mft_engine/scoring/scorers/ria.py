"""The `ria` scorer: relative importance and activations (Zhang et al. 2024, "Plug-and-Play")."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...fields import help_field
from ..base import Scorer, register_scorer
from ..inputs import ScoringInputs
from .stats import score_linear_weights


def relative_importance(w: torch.Tensor) -> torch.Tensor:
    """RI_ij = |W_ij|/Σ_k|W_ik| + |W_ij|/Σ_k|W_kj| for W [out, in]: row i's sum over the input dimension,
    column j's sum over the output dimension; a term whose sum is 0 (all-zero row or column) is 0.
    float64 [out, in]; two reductions and one pass."""
    a = w.abs().double()
    row = a.sum(dim=1, keepdim=True)
    col = a.sum(dim=0, keepdim=True)
    zero = torch.zeros((), dtype=torch.float64)
    return torch.where(row > 0, a / row, zero) + torch.where(col > 0, a / col, zero)


@dataclass
class RiaOptions:
    """ria's setting: the exponent of the activation norm."""

    ria_alpha: float = help_field("ria: exponent a of ‖X_j‖₂^a (the authors use 0.5)", 0.5)

    def __post_init__(self) -> None:
        if not self.ria_alpha >= 0:
            raise ConfigError(f"ria_alpha={self.ria_alpha:g} must be >= 0 (the authors use 0.5)")


@register_scorer
class RiaScorer(Scorer):
    """score = (|W_ij|/Σ_k|W_ik| + |W_ij|/Σ_k|W_kj|)·‖X_j‖₂^a for every nn.Linear weight W [out, in], a =
    RiaOptions.ria_alpha (default 0.5, the authors' choice); unsigned: predicted harm ≥ 0.

    Σ_k|W_ik| sums row i over the input dimension, Σ_k|W_kj| column j over the output dimension;
    ‖X_j‖₂ = sqrt(Σ x_j²) from the GradientState's activation statistics (MissingStatisticError without
    them). Exclusions as wanda: non-Linear-weight tensors are NaN ("not scored"); `last_excluded` and
    `last_excluded_names` count and name them after a call. Cost: one pass over each Linear weight plus
    its row and column sums.
    """

    name = "ria"
    signed = False
    description = ("(|W_ij|/Σ_k|W_ik| + |W_ij|/Σ_k|W_kj|)·‖X_j‖₂^0.5 on nn.Linear weights; unsigned: "
                   "predicted harm ≥ 0; NaN (not scored) for biases and non-Linear parameters")
    options = RiaOptions

    def __init__(self) -> None:
        self.last_excluded = 0
        self.last_excluded_names: list[str] = []

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        alpha = float(inputs.settings(RiaOptions).ria_alpha)
        out, excluded = score_linear_weights(
            inputs, self.name, lambda w, norms: relative_importance(w) * norms.pow(alpha)[None, :])
        self.last_excluded, self.last_excluded_names = len(excluded), excluded
        return out
