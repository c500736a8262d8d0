"""Percentile-bootstrap confidence intervals (multi-seed summaries: mean and 95% CI per metric).

The percentile bootstrap: draw `resamples` samples of size n with replacement from the n values, compute
the statistic of each, and take the (1 − c)/2 and (1 + c)/2 quantiles of those statistics as the interval.
It is seeded, so the same values, seed and settings give the same interval bit for bit. With very few
values (3 seeds) it understates the spread: the resamples cannot leave the range of the values seen.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError

#: resamples of the CLI's summaries (the issue's 10,000)
DEFAULT_RESAMPLES = 10_000
#: resampled values drawn per chunk, bounding the extra memory to ~32 MiB of int64 indices
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class BootstrapCI:
    """A statistic with its percentile-bootstrap interval.

    `estimate` is the statistic of the values themselves (not of the resamples); [low, high] the interval
    at `confidence`; `n` the number of values, `resamples` and `seed` how it was drawn.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    resamples: int
    seed: int
    method: str = "percentile"

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_distribution(values: Sequence[float] | np.ndarray,
                           statistic: Callable[..., np.ndarray] = np.mean,
                           resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                           caller: str = "bootstrap_distribution") -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 [n], the statistic of each of `resamples` bootstrap resamples, float64 [resamples]).

    Resample indices come from `numpy.random.default_rng(seed)` in chunks of at most 2^22 drawn values,
    so the same values, seed and resamples give the same draws whatever the statistic: two value arrays of
    one length resampled with one seed are resampled on the same rows (a paired bootstrap).
    Cost: O(resamples · n) time; extra memory O(min(resamples · n, 2^22) + resamples) floats.
    Raises ConfigError (naming `caller`) for empty or non-finite values or resamples < 1.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ConfigError(f"{caller} got no values; expected at least one number")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{caller} got non-finite values {x[~np.isfinite(x)][:3].tolist()}; expected finite numbers")
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples {resamples} must be >= 1")
    n = x.size
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        stats[start:start + m] = statistic(x[idx], axis=1)
    return x, stats


def bootstrap_ci(values: Sequence[float] | np.ndarray,
                 statistic: Callable[..., np.ndarray] = np.mean,
                 resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Percentile-bootstrap interval of `statistic` over `values` (1-D, finite).

    `statistic(array, axis=1)` must reduce each row of a (rows, n) float64 array to one number (np.mean,
    np.median, np.std, ...). Resample indices come from `numpy.random.default_rng(seed)` in chunks of at
    most 2^22 drawn values; quantiles use numpy's default linear interpolation. With n == 1 the interval
    is the value itself.
    Cost: resamples × n random indices and gathers, O(resamples · n) time; extra memory
    O(min(resamples · n, 2^22) + resamples) floats.
    Raises ConfigError for empty or non-finite values, resamples < 1 or confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"bootstrap confidence {confidence} must be in (0, 1)")
    x, stats = bootstrap_distribution(values, statistic, resamples, seed, caller="bootstrap_ci")
    n = x.size
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return BootstrapCI(estimate=float(statistic(x[None, :], axis=1)[0]), low=float(low), high=float(high),
                       confidence=confidence, n=n, resamples=resamples, seed=seed)
