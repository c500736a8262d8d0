"""How far to trust a scorer: its scores at sampled parameters judged against their true removal effect ΔL.

Signed scorers predict "removal helps" where score < 0 and are judged on the sign of ΔL (changes within
the noise floor are left out of the sign figures and counted); every scorer gets Spearman's ρ with ΔL
(unsigned: its predicted harm against ΔL as harm) and a top-100 precision.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TOP = 100


@dataclass
class ScorerVerdict:
    """One scorer's figures against ground truth (None where a figure does not apply or is undefined).

    `n_scored`: sampled parameters the scorer scored (NaN scores, e.g. wanda on biases, are left out and
    counted in `n_unscored`); `n_judged`: those whose |ΔL| is above the noise floor (sign figures use these).
    """

    name: str
    signed: bool
    n_scored: int
    n_unscored: int
    n_judged: int
    sign_accuracy: float | None
    balanced_accuracy: float | None
    mcc: float | None
    spearman: float | None
    top100_precision: float | None
    predicted_helpful: int | None

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


def judge_scorer(name: str, signed: bool, scores: np.ndarray, delta: np.ndarray, noise_floor: float) -> ScorerVerdict:
    """Judge `scores` [n] against the true changes `delta` [n] (float64) of the same sampled parameters.

    Signed: sign accuracy, balanced accuracy and MCC of "score < 0" vs "ΔL < 0" over |ΔL| > noise_floor;
    top-100 precision = share of its 100 lowest scores whose ΔL < −noise_floor. Unsigned: top-100
    precision = overlap of its 100 lowest-harm picks with the 100 smallest ΔL. Both: Spearman ρ of the
    score with ΔL over every scored parameter. Cost: O(n log n).
    """
    scores = np.asarray(scores, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    ok = np.isfinite(scores)
    s, d = scores[ok], delta[ok]
    top = min(TOP, s.size)
    rho = None
    if s.size >= 3 and np.ptp(s) > 0 and np.ptp(d) > 0:
        rho = _finite_or_none(spearman(s, d))
    judged = np.abs(d) > noise_floor
    acc = bal = mcc = prec = None
    helpful = None
    # Ties at the cut are broken by position (a stable sort), so the picks are reproducible.
    lowest = np.argsort(s, kind="stable")[:top]
    if signed:
        pred = s[judged] < 0
        truth = d[judged] < 0
        acc, bal, mcc = sign_figures(pred, truth)
        helpful = int(np.sum(s < 0))
        if top:
            prec = float(np.mean(d[lowest] < -noise_floor))
    elif top:
        smallest = np.argsort(d, kind="stable")[:top]
        prec = len(set(lowest.tolist()) & set(smallest.tolist())) / top
    return ScorerVerdict(name, signed, int(s.size), int((~ok).sum()), int(judged.sum()), acc, bal, mcc, rho, prec,
                         helpful)


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
