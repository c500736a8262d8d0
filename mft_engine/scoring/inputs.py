"""What a scorer sees: the model, the eligible parameters, the statistics it may need, and a cache.

Statistics are computed on first use and kept (`ScoringInputs.cached`), so several scorers that need the
scoring-half gradient pay for it once. Expensive curvature work (inverse solves, OBS blocks) is fitted and
saved by name under `fits_dir` (see scoring/curvature/fit.py); scorers load it by that name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ..collect import GradientState
from ..errors import ConfigError
from ..fields import build, check_field_types, flat_names, help_field
from ..report.progress import Progress
from .objective import Objective

T = TypeVar("T")

#: the memory bound of per-example work when none is given (MiB)
DEFAULT_MEMORY_MB = 1024


@dataclass
class StatisticsOptions:
    """Settings of the shared statistics (scorers/stats.py), not of one scorer."""

    per_example_memory_mb: float = help_field("MiB that per-example gradients may hold at once", DEFAULT_MEMORY_MB)

    def __post_init__(self) -> None:
        if not self.per_example_memory_mb > 0:
            raise ConfigError(f"per_example_memory_mb={self.per_example_memory_mb:g} must be > 0")


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
    - `fits_dir`: where fits are saved by name; `progress`: where long solves report (None: nowhere).
    - `options`: the scorers' settings, typed: instances of their `options` dataclasses (InfluenceOptions,
      ObsOptions, ..., StatisticsOptions), or a flat mapping of those dataclasses' field names
      (`{"obs_samples": 64, "wanda_per_row": True}`), which `settings` types and checks. A scorer reads
      its own with `settings(ItsOptions)`; what is not given takes the dataclass's defaults.
    """

    model: torch.nn.Module
    names: list[str]
    state: GradientState | None = None
    lr: float = 2e-5
    train: Objective | None = None
    score: Objective | None = None
    damping: float | None = None
    fits_dir: Path | None = None
    options: Any = field(default_factory=dict)
    progress: Progress | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.options, dict):
            known = set(flat_names(StatisticsOptions))
            from .base import option_classes  # lazily: base imports this module

            for cls in option_classes():
                known.update(flat_names(cls))
            unknown = sorted(set(self.options) - known)
            if unknown:
                raise ConfigError(f"unknown scorer option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        else:
            self.options = tuple(self.options)
            bad = [o for o in self.options if not dataclasses.is_dataclass(o) or isinstance(o, type)]
            if bad:
                raise ConfigError(f"scorer options must be options dataclass instances or a mapping, got {bad[0]!r}")

    def settings(self, cls: type[T]) -> T:
        """The settings of dataclass `cls` (a scorer's `options`, or StatisticsOptions): the instance given
        in `options`, else one built from the flat names `options` holds for `cls` (type-checked, then
        checked by `cls` itself: ConfigError naming the option), else `cls()`. Cost: one small dataclass."""
        if isinstance(self.options, dict):
            mine = {k: v for k, v in self.options.items() if k in set(flat_names(cls))}
            check_field_types(cls, mine)
            return build(cls, mine)
        for o in self.options:
            if isinstance(o, cls):
                return o
        return cls()

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
