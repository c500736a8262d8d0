"""A validation split prepared for honest evaluation: tokenized once, halved by a seed.

Every choice made from validation data (early stopping, checkpoints, fitted settings) reads the scoring
half; reported figures come from the evaluation half (DESIGN.md, honest evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.batching import TokenizedSplit, eval_batches
from .predict import evaluate_model


@dataclass
class ValidationSets:
    """The validation split tokenized once, and its seeded scoring and evaluation halves (row positions)."""

    tokens: TokenizedSplit
    labels: list
    num_labels: int
    regression: bool
    scoring_rows: list[int]
    evaluation_rows: list[int]
    max_tokens: int = 8192

    def metrics(self, model: torch.nn.Module, which: str) -> dict:
        """Metrics of `model` on "scoring", "evaluation" or "whole". Cost: one forward over those rows."""
        rows = {"scoring": self.scoring_rows, "evaluation": self.evaluation_rows,
                "whole": list(range(len(self.labels)))}[which]
        batches = eval_batches(self.tokens, rows, self.labels, self.regression, self.max_tokens)
        # eval_batches yields positions into `rows`, so the labels are listed in `rows` order.
        return evaluate_model(model, batches, [self.labels[r] for r in rows], self.num_labels)
