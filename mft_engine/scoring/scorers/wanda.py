"""The `wanda` scorer: |W_ij|·‖X_j‖₂ (Sun et al. 2024, "A Simple and Effective Pruning Approach for LLMs")."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...fields import help_field
from ..base import Scorer, register_scorer
from ..inputs import ScoringInputs
from .stats import score_linear_weights


def within_row_rank_fraction(s: torch.Tensor) -> torch.Tensor:
    """r/in for each entry of a [out, in] score matrix: r = 1-based rank within its row, ascending, ties
    broken by the lower column index ranking lower. float64 [out, in] in (0, 1]; one sort per row."""
    order = torch.sort(s, dim=1, stable=True).indices
    ranks = torch.arange(1, s.shape[1] + 1, dtype=torch.float64).expand_as(s).contiguous()
    out = torch.empty(s.shape, dtype=torch.float64)
    out.scatter_(1, order, ranks)
    return out / s.shape[1]


@dataclass
class WandaOptions:
    """wanda's setting: global scores, or each entry's rank fraction within its row (Wanda's grouping)."""

    wanda_per_row: bool = help_field("wanda: score each entry by its rank fraction within its row", False)


@register_scorer
class WandaScorer(Scorer):
    """score = |W_ij|·‖X_j‖₂ for the weight W [out, in] of every nn.Linear (unsigned: predicted harm ≥ 0).

    ‖X_j‖₂ = sqrt(Σ x_j²) of input feature j over the tokens the collection pass fed the module (from the
    GradientState's activation statistics; MissingStatisticError without them). The score is global by
    default: it compares entries across all layers. With WandaOptions.wanda_per_row = True it is
    Wanda's per-output grouping made global: each entry's score is replaced by its within-row rank
    fraction r/in ∈ (0, 1] (r = 1-based ascending rank in its row, ties by lower column index), so taking
    the k globally lowest removes about the same fraction of every row, as Wanda's per-row pruning does.

    Biases, LayerNorm, embeddings and every other non-Linear-weight parameter are not scored: their
    tensors are NaN, which downstream code treats as "not scored"; after a call, `last_excluded` counts
    those tensors and `last_excluded_names` names them. Cost: one pass over each Linear weight
    (per-row: plus one sort per row).
    """

    name = "wanda"
    signed = False
    description = ("|W_ij|·‖X_j‖₂ on nn.Linear weights (activation statistics); unsigned: predicted harm "
                   "≥ 0; NaN (not scored) for biases and non-Linear parameters")
    options = WandaOptions

    def __init__(self) -> None:
        self.last_excluded = 0
        self.last_excluded_names: list[str] = []

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        per_row = bool(inputs.settings(WandaOptions).wanda_per_row)

        def wanda(w: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
            s = w.abs() * norms[None, :]
            return within_row_rank_fraction(s) if per_row else s

        out, excluded = score_linear_weights(inputs, self.name, wanda)
        self.last_excluded, self.last_excluded_names = len(excluded), excluded
        return out
