"""The ground-truth figures against scikit-learn and scipy, and their edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

from mft_engine.scoring.ground_truth.judge import (
    HARMFUL,
    HELPFUL,
    UNDETERMINED,
    average_ranks,
    base_rate,
    best_signed,
    class_counts,
    classify_items,
    clopper_pearson,
    disagreement_value,
    gradient_influence_disagreement,
    judge_scorer,
    sign_figures,
    spearman,
)


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
    harm = np.abs(delta)
    harm[2] = np.nan
    v = judge_scorer("h", False, harm, delta, noise_floor=0.0)
    assert v.sign_accuracy is None and v.balanced_accuracy is None and v.mcc is None
    assert v.n_unscored == 1 and v.n_scored == 9 and v.target == "|ΔL|"
    assert v.spearman == pytest.approx(1.0)   # a perfect predictor of |ΔL|
    assert v.top100_precision == pytest.approx(1.0)  # n < 100: its picks are every scored one
    assert v.false_positive_rate is None


def test_unsigned_rho_is_against_abs_delta_where_the_targets_disagree():
    """Built so that ρ against ΔL and against |ΔL| differ in sign: the harm predicts |ΔL| well, while ΔL is
    sign-symmetric. The judge must report scipy's ρ(score, |ΔL|)."""
    rng = np.random.default_rng(3)
    mag = rng.random(60) + 0.01
    sign = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    sign[mag > np.quantile(mag, 0.7)] = -1.0          # the largest changes help: ρ(score, ΔL) < 0
    delta = sign * mag
    harm = mag + 0.05 * rng.random(60)
    against_abs, against_signed = spearmanr(harm, np.abs(delta)).statistic, spearmanr(harm, delta).statistic
    assert against_abs > 0.5 and against_signed < 0     # the two targets give different answers
    v = judge_scorer("h", False, harm, delta, noise_floor=0.0)
    assert v.spearman == pytest.approx(against_abs, abs=1e-12)
    signed = judge_scorer("s", True, harm, delta, noise_floor=0.0)   # the same numbers read as a signed claim
    assert signed.target == "ΔL" and signed.spearman == pytest.approx(against_signed, abs=1e-12)


def test_top_k_precision_of_an_unsigned_scorer_uses_the_smallest_abs_delta():
    n = 300
    delta = np.linspace(-1, 1, n)
    harm = np.abs(delta)                           # exact: its 100 picks are the 100 smallest |ΔL|
    assert judge_scorer("h", False, harm, delta, 0.0).top100_precision == pytest.approx(1.0)
    assert judge_scorer("h", False, -harm, delta, 0.0).top100_precision == pytest.approx(0.0)


def test_picks_against_a_random_k_with_intervals():
    rng = np.random.default_rng(0)
    delta = rng.normal(size=400)
    good = judge_scorer("g", True, delta + 0.01 * rng.normal(size=400), delta, 0.0, resamples=500)
    assert good.k == 100
    assert good.picks_mean_delta == pytest.approx(np.sort(delta)[:100].mean(), rel=0.05)
    assert good.picks_ci_low <= good.picks_mean_delta <= good.picks_ci_high < good.random_ci_low
    assert good.random_mean_delta == pytest.approx(delta.mean())
    assert good.random_ci_low < good.random_mean_delta < good.random_ci_high
    bad = judge_scorer("b", True, -delta, delta, 0.0, resamples=500)
    assert bad.picks_ci_low > bad.random_ci_high


def test_item_classes_from_per_example_changes():
    rng = np.random.default_rng(1)
    n = 200
    changes = np.stack([1e-3 + 1e-4 * rng.normal(size=n),      # every example worse: harmful
                        -1e-3 + 1e-4 * rng.normal(size=n),     # every example better: helpful
                        rng.normal(size=n) * 1e-3,             # noise around 0: undetermined
                        np.zeros(n),                           # nothing changes
                        np.full(n, 1e-9)])                     # harmful, but within a noise floor of 1e-8
    classes, low, high = classify_items(changes, noise_floor=1e-8, resamples=400, seed=2)
    assert classes.tolist() == [HARMFUL, HELPFUL, UNDETERMINED, UNDETERMINED, UNDETERMINED]
    mean = changes.mean(1)
    assert np.all(low <= mean + 1e-18) and np.all(mean <= high + 1e-18)
    assert class_counts(classes) == {"helpful": 1, "harmful": 1, "undetermined": 3}
    again = classify_items(changes, noise_floor=1e-8, resamples=400, seed=2)
    assert np.array_equal(again[1], low)  # seeded


def test_false_positive_rate_counts_predicted_helpful_that_are_significantly_harmful():
    delta = np.array([-1.0, -1.0, 1.0, 1.0, 1.0, 0.1])
    classes = np.array([HELPFUL, UNDETERMINED, HARMFUL, HARMFUL, UNDETERMINED, UNDETERMINED])
    scores = np.array([-1.0, -1.0, -1.0, 1.0, -1.0, 1.0])   # predicted helpful: items 0, 1, 2, 4
    v = judge_scorer("s", True, scores, delta, 0.0, classes=classes, resamples=200)
    assert v.false_positive_rate == pytest.approx(1 / 4) and v.n_predicted_helpful_classified == 4
    assert v.picks_harmful == pytest.approx(2 / 6) and v.picks_helpful == pytest.approx(1 / 6)
    assert judge_scorer("s", True, scores, delta, 0.0).false_positive_rate is None  # no classes given


def test_gradient_influence_disagreement_and_the_old_key():
    import torch

    g = {"a": torch.tensor([-1.0, -1.0, 2.0, -3.0]), "b": torch.tensor([[-1.0, 1.0]])}
    i = {"a": torch.tensor([-1.0, 1.0, -2.0, float("nan")]), "b": torch.tensor([[-5.0, -1.0]])}
    row = gradient_influence_disagreement(g, i, ["a", "b"])
    assert row == {"gradient_detrimental": 4, "influence_beneficial": 4, "detrimental_and_beneficial": 2,
                   "gradient_influence_disagreement": 0.5}
    assert disagreement_value(row) == 0.5
    assert disagreement_value({"false_positive_rate": 0.25}) == 0.25   # results written before the rename
    assert gradient_influence_disagreement({"a": torch.ones(2)}, {"a": torch.ones(2)}, ["a"])[
        "gradient_influence_disagreement"] is None


@pytest.mark.parametrize("k,n", [(0, 100), (3, 100), (50, 100), (100, 100), (1, 7), (0, 1)])
def test_clopper_pearson_matches_the_beta_quantiles(k, n):
    from scipy.stats import beta

    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(beta.ppf(0.025, k, n - k + 1) if k else 0.0, abs=1e-9)
    assert high == pytest.approx(beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, abs=1e-9)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_base_rate_and_best():
    assert base_rate(np.array([1.0, -1.0, 2.0, 1e-12]), 1e-9) == pytest.approx(2 / 3)
    assert base_rate(np.array([0.0]), 0.0) is None
    a = judge_scorer("a", True, np.array([-1.0, 1.0, 1.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    b = judge_scorer("b", True, np.array([1.0, -1.0, 1.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    c = judge_scorer("c", False, np.array([1.0, 2.0, 3.0]), np.array([-1.0, 1.0, 2.0]), 0.0)
    assert best_signed([b, c, a]).name == "a"
    assert best_signed([c]) is None
