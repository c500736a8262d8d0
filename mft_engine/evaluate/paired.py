"""Paired comparisons of two models on the same examples, and the Holm correction over many of them.

A removal sweep compares a masked model with the unmasked one on the *same* rows, so the tests are paired:

- accuracy: McNemar's test on the discordant pairs (b = right before and wrong after, c = wrong before and
  right after). Under H0 (no change of accuracy) b ~ Binomial(b + c, 1/2); the exact two-sided p-value is
  min(1, 2 P(X ≤ min(b, c))), the mid-p variant subtracts P(X = min(b, c)) (less conservative, not
  guaranteed to hold its level);
- a per-example difference (Δloss, Δcorrect): the paired percentile bootstrap of its mean, resampling
  examples (rows), with the two-sided p-value of the percentile interval's inversion,
  min(1, 2 min(1 + #{m* ≤ 0}, 1 + #{m* ≥ 0}) / (B + 1)): 0 lies outside the (1 − α) interval about when
  p < α, and p is never below 2 / (B + 1), so B bounds what a multiple-comparison correction can reach;
- Holm's step-down adjustment of a family of p-values (controls the family-wise error rate under any
  dependence between the tests).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from .bootstrap import DEFAULT_RESAMPLES, bootstrap_distribution


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's paired test of two classifiers' accuracies on the same n examples.

    `b`: right before, wrong after; `c`: wrong before, right after (so Δaccuracy = (c − b) / n);
    `p_exact`: the exact (binomial) two-sided p-value; `p_mid`: its mid-p variant.
    """

    b: int
    c: int
    p_exact: float
    p_mid: float

    def to_dict(self) -> dict:
        return asdict(self)


def binomial_half_cdf(k: int, n: int) -> tuple[float, float]:
    """(P(X ≤ k), P(X = k)) for X ~ Binomial(n, 1/2), computed in log space (exact to ~1e-13 relative).

    Cost: O(min(k, n − k) + 1) lgamma calls; valid for any n ≥ 0 (the tails of n in the millions included).
    """
    if n < 0 or k < 0 or k > n:
        raise ConfigError(f"binomial_half_cdf needs 0 <= k <= n, got k={k}, n={n}")
    log_half_n = n * math.log(0.5)

    def log_pmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n

    if k > n // 2:
        # the upper part: P(X ≤ k) = 1 − P(X ≥ k + 1) = 1 − P(X ≤ n − k − 1) by symmetry
        below, _ = binomial_half_cdf(n - k - 1, n) if k < n else (0.0, 0.0)
        return 1.0 - below, math.exp(log_pmf(k))
    logs = np.array([log_pmf(i) for i in range(k + 1)])
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum())), math.exp(log_pmf(k))


def mcnemar(before_correct: Sequence[bool] | np.ndarray, after_correct: Sequence[bool] | np.ndarray) -> McNemarResult:
    """McNemar's exact test (and mid-p) of `after` against `before`, both bool [n] over the same examples.

    Two-sided: p_exact = min(1, 2 P(X ≤ min(b, c))), p_mid = min(1, 2 P(X ≤ min(b, c)) − P(X = min(b, c)))
    with X ~ Binomial(b + c, 1/2); b = c = 0 gives 1 for both. Cost: O(n) plus O(min(b, c)) lgamma calls.
    Raises ConfigError when the two arrays differ in length.
    """
    x = np.asarray(before_correct, dtype=bool).reshape(-1)
    y = np.asarray(after_correct, dtype=bool).reshape(-1)
    if x.shape != y.shape:
        raise ConfigError(f"mcnemar got {x.size} and {y.size} examples; a paired test needs the same examples")
    b = int(np.count_nonzero(x & ~y))
    c = int(np.count_nonzero(~x & y))
    return mcnemar_counts(b, c)


def mcnemar_counts(b: int, c: int) -> McNemarResult:
    """McNemar's exact and mid-p two-sided p-values from the discordant counts b and c (see `mcnemar`)."""
    if b < 0 or c < 0:
        raise ConfigError(f"McNemar counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0, 1.0)
    if b == c:  # 2 P(X ≤ n/2) − P(X = n/2) = 1 by symmetry; computed, it would round below 1
        return McNemarResult(b, c, 1.0, 1.0)
    cdf, pmf = binomial_half_cdf(min(b, c), n)
    return McNemarResult(b, c, min(1.0, 2.0 * cdf), min(1.0, 2.0 * cdf - pmf))


@dataclass(frozen=True)
class PairedBootstrap:
    """The mean of per-example differences with its percentile-bootstrap interval and two-sided p-value.

    `mean` is the mean of the differences themselves; [low, high] the interval at `confidence`; `p_value`
    the inversion of the percentile interval (see the module docstring); `n`, `resamples`, `seed` how it
    was drawn.
    """

    mean: float
    low: float
    high: float
    p_value: float
    confidence: float
    n: int
    resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(differences: Sequence[float] | np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = 0.95, seed: int = 0) -> PairedBootstrap:
    """Paired bootstrap of mean(differences), differences float [n] = after − before per example.

    Resamples the n examples with replacement (evaluate.bootstrap.bootstrap_distribution: one seed gives
    the same rows for every difference array of the same length, so Δloss and Δcorrect of one comparison
    are resampled together). Interval: the (1 − c)/2 and (1 + c)/2 quantiles of the resampled means;
    p-value: min(1, 2 min(1 + #{m* ≤ 0}, 1 + #{m* ≥ 0}) / (B + 1)), never below 2 / (B + 1).
    Cost: O(resamples · n) time, memory as bootstrap_distribution.
    Raises ConfigError for empty or non-finite differences, resamples < 1 or confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"bootstrap confidence {confidence} must be in (0, 1)")
    x, means = bootstrap_distribution(differences, np.mean, resamples, seed, caller="paired_bootstrap")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    below = int(np.count_nonzero(means <= 0.0))
    above = int(np.count_nonzero(means >= 0.0))
    p = min(1.0, 2.0 * (1 + min(below, above)) / (resamples + 1))
    return PairedBootstrap(mean=float(x.mean()), low=float(low), high=float(high), p_value=p,
                           confidence=confidence, n=int(x.size), resamples=resamples, seed=seed)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, float64 [m], in the input's order.

    With p sorted ascending, adj_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)) (1-based); reject H_i at
    family-wise level α iff adj_i ≤ α. Ties keep their input order (the result does not depend on it).
    Cost: one sort, O(m log m). Raises ConfigError for a p-value outside [0, 1] or NaN.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size and not np.all((p >= 0.0) & (p <= 1.0)):
        bad = p[~((p >= 0.0) & (p <= 1.0))][:3].tolist()
        raise ConfigError(f"holm got p-values {bad} outside [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m, dtype=np.float64)
    out[order] = np.maximum.accumulate(scaled) if m else scaled
    return out


def example_losses(logits: np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct bool [n], cross-entropy float64 [n]) of logits float [n, C] against int labels [n].

    The loss is −log softmax(logits)[label], computed in float64 from the given logits (so two models' fp32
    logits are compared without fp32 rounding of the loss); correct = argmax == label (ties: the lower
    class, as numpy's argmax). Cost: O(n · C).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.size:
        raise ConfigError(f"example_losses got logits of shape {z.shape} for {y.size} labels; expected [n, C]")
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return z.argmax(axis=1) == y, log_norm - z[np.arange(y.size), y]
