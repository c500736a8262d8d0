"""What a scorer sees: the model, the eligible parameters, the statistics it may need, and a cache.

Statistics are computed on first use and kept (`ScoringInputs.cached`), so several scorers that need the
scoring-half gradient pay for it once. Expensive curvature work (inverse solves, OBS blocks) is fitted and
saved by name under `fits_dir` (see scoring/fit.py); scorers load it by that name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..collect import GradientState
from ..errors import ConfigError
from .objective import Objective


class MissingStatisticError(ConfigError):
    """A scorer needs a statistic the inputs lack (e.g. activation statistics in the GradientState)."""


@dataclass
class ScoringInputs:
    """The inputs of every scorer.

    - `model`: the classifier, eval mode; `names`: the eligible parameter names, in model order.
    - `state`: the GradientState of the N training samples (g = its grad_sum, activation Σx² per Linear),
      collected in eval mode; `lr`: the learning rate of the gradient test (rounded once to fp32).
    - `train`: Objective over the same N training samples (the curvature H is its Gauss-Newton matrix).
    - `score`: Objective over the scoring half of the validation split (L_score, ∇L_score, its GN diagonal).
    - `damping`: λ of (H + λI), absolute; None = 1e-3 × mean diagonal of H, computed by the fit.
    - `fits_dir`: where fits are saved by name; `options`: per-scorer settings (e.g. "wanda_per_row",
      "influence_solver", "obs_block", "obs_samples").
    """

    model: torch.nn.Module
    names: list[str]
    state: GradientState | None = None
    lr: float = 2e-5
    train: Objective | None = None
    score: Objective | None = None
    damping: float | None = None
    fits_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def theta(self) -> dict[str, torch.Tensor]:
        """The eligible parameters' current values, detached (views, not copies)."""
        own = dict(self.model.named_parameters())
        return {n: own[n].detach() for n in self.names}

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """The statistic under `key`, computing it once."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def peek(self, key: str, default: Any = None) -> Any:
        """The statistic under `key` if something computed it already, else `default` (never computes)."""
        return self._cache.get(key, default)

    def require(self, scorer: str, **needed: Any) -> None:
        """Raise MissingStatisticError naming every input in `needed` that is None or empty."""
        missing = [k for k, v in needed.items() if v is None or (hasattr(v, "__len__") and len(v) == 0)]
        if missing:
            raise MissingStatisticError(f"scorer {scorer!r} needs {', '.join(missing)}, which the inputs lack")
