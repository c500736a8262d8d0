"""How far to trust a scorer: its scores at sampled parameters judged against their true removal effect ΔL,
each scorer on its own claim.

- Signed scorers (`Scorer.signed = True`) predict the loss change: "removal helps" where score < 0. They
  are judged on the sign of ΔL (sign accuracy, balanced accuracy, MCC over the items whose |ΔL| is above
  the noise floor), Spearman ρ against ΔL, and the precision of their k most negative scores (share with
  ΔL < −floor).
- Unsigned scorers predict a harm ≥ 0: they are judged against |ΔL| (Spearman ρ against |ΔL|; precision =
  overlap of their k least-harm picks with the k smallest |ΔL|), never against the sign, which they do not
  predict.
- Every scorer: the mean true ΔL of its k picks (its k lowest scores) beside the mean of a random k of the
  same scored items, each with a 95% interval, and the share of its picks whose ΔL is significantly
  harmful / helpful.
- Each item's ΔL is classed significantly helpful / harmful / undetermined by a percentile bootstrap over
  its per-example loss changes (`classify_items`); a signed scorer's false-positive rate is the share of the
  items it predicts helpful (score < 0) whose removal is significantly harmful.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ...evaluate.bootstrap import bootstrap_ci

TOP = 100
CONFIDENCE = 0.95
#: item classes of `classify_items`
HELPFUL, UNDETERMINED, HARMFUL = -1, 0, 1


@dataclass
class ScorerVerdict:
    """One scorer's figures against the ground truth of one set of examples (None where a figure does not
    apply or is undefined).

    `target`: what it is judged against ("ΔL" for signed, "|ΔL|" for unsigned scorers). `n_scored`: sampled
    parameters it scored (NaN scores, e.g. wanda on biases, are left out and counted in `n_unscored`);
    `n_judged`: those whose |ΔL| is above the noise floor (the sign figures use these). `k`: its picks (its
    k lowest scores, k = min(100, n_scored)); `picks_mean_delta` [`picks_ci_low`, `picks_ci_high`]: their
    mean true ΔL with a percentile-bootstrap interval over the picks; `random_mean_delta`
    [`random_ci_low`, `random_ci_high`]: the mean ΔL of a random k of the scored items (the mean over all
    of them) and the 2.5/97.5 percentiles of the means of random k-subsets; the `*_abs_delta` twins are the
    same for |ΔL|. `picks_harmful` / `picks_helpful`: share of the picks significantly harmful / helpful.
    `false_positive_rate` (signed only): share of the items predicted helpful (score < 0) that are
    significantly harmful; `n_predicted_helpful` those items. Item classes come from `classify_items`
    (None when no per-example changes were given).
    """

    name: str
    signed: bool
    target: str
    n_scored: int
    n_unscored: int
    n_judged: int
    sign_accuracy: float | None
    balanced_accuracy: float | None
    mcc: float | None
    spearman: float | None
    top100_precision: float | None
    predicted_helpful: int | None
    k: int = 0
    picks_mean_delta: float | None = None
    picks_ci_low: float | None = None
    picks_ci_high: float | None = None
    random_mean_delta: float | None = None
    random_ci_low: float | None = None
    random_ci_high: float | None = None
    picks_mean_abs_delta: float | None = None
    random_mean_abs_delta: float | None = None
    random_abs_ci_low: float | None = None
    random_abs_ci_high: float | None = None
    picks_harmful: float | None = None
    picks_helpful: float | None = None
    false_positive_rate: float | None = None
    n_predicted_helpful_classified: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x (float64), ties given their average rank (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # Boundaries of runs of equal values; each run gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (NaN when either is constant)."""
    ra, rb = average_ranks(np.asarray(a, np.float64)), average_ranks(np.asarray(b, np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den else float("nan")


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def sign_figures(pred_helps: np.ndarray, truth_helps: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Accuracy, balanced accuracy (mean recall of both classes) and MCC of boolean predictions.

    A class absent from the truth makes balanced accuracy use the one recall there is; MCC with a
    constant prediction or truth is 0 (sklearn's convention). Empty input: all None.
    """
    n = pred_helps.size
    if n == 0:
        return None, None, None
    tp = float(np.sum(pred_helps & truth_helps))
    tn = float(np.sum(~pred_helps & ~truth_helps))
    fp = float(np.sum(pred_helps & ~truth_helps))
    fn = float(np.sum(~pred_helps & truth_helps))
    acc = (tp + tn) / n
    recalls = [r for r in (tp / (tp + fn) if tp + fn else None, tn / (tn + fp) if tn + fp else None) if r is not None]
    bal = float(np.mean(recalls)) if recalls else None
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denom if denom else 0.0
    return acc, bal, mcc


def classify_items(changes: np.ndarray, noise_floor: float = 0.0, resamples: int = 1000, seed: int = 0,
                   confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class each item's ΔL by a percentile bootstrap over its per-example loss changes.

    `changes` [k, n] float64: row i holds ℓ_e(θ with item i zeroed) − ℓ_e(θ) for the n examples, so
    ΔL_i = its mean. The same `resamples` multinomial resamples of the n examples (numpy default_rng(seed))
    serve every item; an item is HARMFUL (+1) when the lower `confidence` quantile of its resampled means
    is > 0 and ΔL_i > noise_floor, HELPFUL (−1) when the upper one is < 0 and ΔL_i < −noise_floor, else
    UNDETERMINED (0). Returns (classes int8 [k], low [k], high [k]).
    Cost: k·n·resamples multiply-adds (GEMMs over chunks of resamples); extra memory k·resamples floats
    plus one chunk of resample weights (≤ 2^22 floats).
    """
    x = np.asarray(changes, dtype=np.float64)
    k, n = x.shape
    if k == 0 or n == 0:
        z = np.zeros(k)
        return np.zeros(k, dtype=np.int8), z, z.copy()
    rng = np.random.default_rng(seed)
    means = np.empty((k, resamples), dtype=np.float64)
    rows = max(1, (1 << 22) // n)
    p = np.full(n, 1.0 / n)
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        w = rng.multinomial(n, p, size=m).astype(np.float64) / n      # [m, n]: one resample's weights per row
        means[:, start:start + m] = x @ w.T
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
    delta = x.mean(axis=1)
    classes = np.zeros(k, dtype=np.int8)
    classes[(low > 0) & (delta > noise_floor)] = HARMFUL
    classes[(high < 0) & (delta < -noise_floor)] = HELPFUL
    return classes, low, high


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """{"helpful": n, "harmful": n, "undetermined": n} of `classify_items`' classes."""
    c = np.asarray(classes)
    return {"helpful": int(np.sum(c == HELPFUL)), "harmful": int(np.sum(c == HARMFUL)),
            "undetermined": int(np.sum(c == UNDETERMINED))}


def _random_k_interval(values: np.ndarray, k: int, resamples: int, seed: int,
                       confidence: float) -> tuple[float, float]:
    """2.5/97.5 percentiles (at `confidence`) of the mean of `resamples` random k-subsets of `values`,
    drawn without replacement. Cost: resamples × n random keys and a partial sort per draw."""
    rng = np.random.default_rng(seed)
    n = values.size
    stats = np.empty(resamples, dtype=np.float64)
    rows = max(1, (1 << 22) // max(n, 1))
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        keys = rng.random((m, n))
        pick = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (m, 1))
        stats[start:start + m] = values[pick].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def judge_scorer(name: str, signed: bool, scores: np.ndarray, delta: np.ndarray, noise_floor: float,
                 classes: np.ndarray | None = None, resamples: int = 1000, seed: int = 0) -> ScorerVerdict:
    """Judge `scores` [n] against the true changes `delta` [n] (float64) of the same sampled parameters,
    on the scorer's own claim (module docstring).

    Signed: sign accuracy, balanced accuracy and MCC of "score < 0" vs "ΔL < 0" over |ΔL| > noise_floor;
    ρ(score, ΔL); top-100 precision = share of its k lowest scores whose ΔL < −noise_floor. Unsigned:
    ρ(score, |ΔL|); top-100 precision = overlap of its k lowest-harm picks with the k smallest |ΔL|. Both:
    the picks' mean ΔL and |ΔL| against a random k, with intervals from `resamples` draws seeded by
    `seed`; with `classes` [n] (classify_items of the same items) the share of picks significantly
    harmful / helpful and, for signed scorers, the false-positive rate. Ties at a cut go to the lower
    position (stable sort). Cost: O(n log n) plus resamples × (n + k).
    """
    scores = np.asarray(scores, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    ok = np.isfinite(scores)
    s, d = scores[ok], delta[ok]
    cl = None if classes is None else np.asarray(classes)[ok]
    top = min(TOP, s.size)
    target = d if signed else np.abs(d)
    rho = None
    if s.size >= 3 and np.ptp(s) > 0 and np.ptp(target) > 0:
        rho = _finite_or_none(spearman(s, target))
    judged = np.abs(d) > noise_floor
    acc = bal = mcc = prec = fpr = None
    helpful = n_pred_cls = None
    lowest = np.argsort(s, kind="stable")[:top]
    if signed:
        pred = s[judged] < 0
        truth = d[judged] < 0
        acc, bal, mcc = sign_figures(pred, truth)
        helpful = int(np.sum(s < 0))
        if top:
            prec = float(np.mean(d[lowest] < -noise_floor))
        if cl is not None:
            predicted = s < 0
            n_pred_cls = int(predicted.sum())
            fpr = float(np.mean(cl[predicted] == HARMFUL)) if n_pred_cls else None
    elif top:
        smallest = np.argsort(np.abs(d), kind="stable")[:top]
        prec = len(set(lowest.tolist()) & set(smallest.tolist())) / top
    v = ScorerVerdict(name, signed, "ΔL" if signed else "|ΔL|", int(s.size), int((~ok).sum()), int(judged.sum()),
                      acc, bal, mcc, rho, prec, helpful, k=int(top), false_positive_rate=fpr,
                      n_predicted_helpful_classified=n_pred_cls)
    if top:
        picked = d[lowest]
        ci = bootstrap_ci(picked, resamples=resamples, confidence=CONFIDENCE, seed=seed)
        v.picks_mean_delta, v.picks_ci_low, v.picks_ci_high = ci.estimate, ci.low, ci.high
        v.random_mean_delta = float(d.mean())
        v.random_ci_low, v.random_ci_high = _random_k_interval(d, top, resamples, seed + 1, CONFIDENCE)
        v.picks_mean_abs_delta = float(np.abs(picked).mean())
        v.random_mean_abs_delta = float(np.abs(d).mean())
        v.random_abs_ci_low, v.random_abs_ci_high = _random_k_interval(np.abs(d), top, resamples, seed + 1, CONFIDENCE)
        if cl is not None:
            v.picks_harmful = float(np.mean(cl[lowest] == HARMFUL))
            v.picks_helpful = float(np.mean(cl[lowest] == HELPFUL))
    return v


def base_rate(delta: np.ndarray, noise_floor: float) -> float | None:
    """Share of the sampled parameters above the noise floor whose removal raises the loss (ΔL > 0):
    what a constant "removal hurts" guess scores."""
    d = np.asarray(delta, dtype=np.float64)
    d = d[np.abs(d) > noise_floor]
    return float(np.mean(d > 0)) if d.size else None


def best_signed(verdicts: list[ScorerVerdict]) -> ScorerVerdict | None:
    """The signed scorer with the highest balanced accuracy (first in order on ties); None if none has one."""
    cands = [v for v in verdicts if v.signed and v.balanced_accuracy is not None]
    return max(cands, key=lambda v: v.balanced_accuracy) if cands else None


def gradient_influence_disagreement(gradient: dict[str, torch.Tensor], influence: dict[str, torch.Tensor],
                                    names: list[str]) -> dict[str, int | float | None]:
    """The follow-up study's "false-positive rate", named for what it measures: of the gradient-detrimental
    entries (gradient score < 0), the share the influence scorer does not call beneficial (influence score
    ≥ 0, or NaN). It compares two scorers with each other, not a scorer with the truth (that is
    `ScorerVerdict.false_positive_rate`).

    Returns gradient_detrimental, influence_beneficial, detrimental_and_beneficial (counts over every
    entry of `names`) and gradient_influence_disagreement = (detrimental − both) / detrimental (None when
    nothing is detrimental). Cost: one pass over the scores.
    """
    det = ben = both = 0
    for n in names:
        d = gradient[n] < 0
        b = influence[n] < 0
        det += int(d.sum())
        ben += int(b.sum())
        both += int((d & b).sum())
    return {"gradient_detrimental": det, "influence_beneficial": ben, "detrimental_and_beneficial": both,
            "gradient_influence_disagreement": (det - both) / det if det else None}


def disagreement_value(row: dict) -> float | None:
    """The gradient–influence disagreement of a results row, read under its new key or the old one
    (`false_positive_rate`, as results written before the rename hold it)."""
    if "gradient_influence_disagreement" in row:
        return row["gradient_influence_disagreement"]
    return row.get("false_positive_rate")


def clopper_pearson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided interval of a binomial proportion, successes of n.

    The bounds solve P(X ≥ successes; p_low) = α/2 and P(X ≤ successes; p_high) = α/2 (α = 1 − confidence)
    by bisection on the binomial tail in log space (no scipy); (0, 1) when n is 0. Cost: O(n) per
    bisection step, 200 steps.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} must lie in [0, {n}]")
    alpha = (1.0 - confidence) / 2.0

    def cdf(x: int, p: float) -> float:  # P(X ≤ x)
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 1.0 if x >= n else 0.0
        lp, lq = math.log(p), math.log1p(-p)
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
                for i in range(x + 1)]
        top = max(logs)
        return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))

    def solve(f, target: float) -> float:  # f decreasing in p on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if f(mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if successes == 0 else 1.0 - solve(lambda p: 1.0 - cdf(successes - 1, 1.0 - p), alpha)
    high = 1.0 if successes == n else solve(lambda p: cdf(successes, p), alpha)
    return low, high
