"""A toy scorer in one file: |θ|^p, with its typed options and the one registration line
(`@register_scorer`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mft_engine.errors import ConfigError
from mft_engine.fields import help_field
from mft_engine.scoring import Scorer, ScoringInputs, register_scorer


@dataclass
class ToyPowerOptions:
    """The toy scorer's one setting."""

    toy_power: float = help_field("toy-power: the exponent p of |θ|^p", 2.0)

    def __post_init__(self) -> None:
        if not self.toy_power > 0:
            raise ConfigError(f"toy_power={self.toy_power} must be > 0")


@register_scorer
class ToyPowerScorer(Scorer):
    """|θ|^p: unsigned, a monotone transform of magnitude (so it ranks parameters exactly as magnitude)."""

    name = "toy-power"
    signed = False
    description = "|θ|^p (p: toy_power); unsigned"
    options = ToyPowerOptions

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        p = inputs.settings(ToyPowerOptions).toy_power
        return {n: t.abs().to(torch.float64).pow(p).cpu() for n, t in inputs.theta().items()}
