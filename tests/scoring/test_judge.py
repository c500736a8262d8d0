"""The ground-truth figures against scikit-learn and scipy, and their edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

from mft_engine.scoring.ground_truth.judge import average_ranks, base_rate, best_signed, judge_scorer, sign_figures, spearman


@pytest.mark.parametrize("seed", range(5))
def test_sign_figures_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(200) < 0.35
    pred = np.where(rng.random(200) < 0.7, truth, ~truth)
    acc, bal, mcc = sign_figures(pred, truth)
    assert acc == pytest.approx(np.mean(pred == truth))
    assert bal == pytest.approx(balanced_accuracy_score(truth, pred))
    assert mcc == pytest.approx(matthews_corrcoef(truth, pred))


def test_constant_prediction_scores_the_base_rate_and_no_skill():
    truth = np.array([True] * 36 + [False] * 64)
    pred = np.zeros(100, dtype=bool)
    acc, bal, mcc = sign_figures(pred, truth)
    assert acc == pytest.approx(0.64) and bal == pytest.approx(0.5) and mcc == 0.0
    assert sign_figures(np.zeros(0, bool), np.zeros(0, bool)) == (None, None, None)


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 80).astype(float)
    b = a * 0.5 + rng.integers(0, 4, 80)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_judge_signed_scorer():
    delta = np.array([-2.0, -1.0, 1.0, 2.0, 3.0, 1e-9])
    scores = np.array([-5.0, 4.0, 1.0, -1.0, 2.0, -3.0])
    v = judge_scorer("s", True, scores, delta, noise_floor=1e-6)
    # the last one is within the noise floor: left out of the sign figures
    assert v.n_judged == 5 and v.n_scored == 6
    # predictions "helps" (score < 0) on the judged: [T, F, F, T, F]; truth: [T, T, F, F, F]
    assert v.sign_accuracy == pytest.approx(3 / 5)
    assert v.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert v.predicted_helpful == 3
    # its lowest scores (all six, n < 100): share with ΔL < -floor
    assert v.top100_precision == pytest.approx(2 / 6)
    assert v.spearman == pytest.approx(spearmanr(scores, delta).statistic)


def test_judge_unsigned_scorer_and_unscored_entries():
    delta = np.arange(10, dtype=float) - 3.0
    harm = np.arange(10, dtype=float)
    harm[2] = np.nan
    v = judge_scorer("h", False, harm, delta, noise_floor=0.0)
    assert v.sign_accuracy is None and v.balanced_accuracy is None and v.mcc is None
    assert v.n_unscored == 1 and v.n_scored == 9
    assert v.spearman == pytest.approx(1.0)
    assert v.top100_precision == pytest.approx(1.0)  # n < 100: its picks are every scored one


def test_base_rate_and_best():
    assert base_rate(np.array([1.0, -1.0, 2.0, 1e-12]), 1e-9) == pytest.approx(2 / 3)
    assert base_rate(np.array([0.0]), 0.0) is None
    a = judge_scorer("a", True, np.array([-1.0, 1.0, 1.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    b = judge_scorer("b", True, np.array([1.0, -1.0, 1.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    c = judge_scorer("c", False, np.array([1.0, 2.0, 3.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    assert best_signed([b, c, a]).name == "a"
    assert best_signed([c]) is None
