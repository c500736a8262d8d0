"""Paired tests (evaluate/paired.py) against scipy's binomial test and distribution, an independent Holm
procedure, R's p.adjust, and the bootstrap interval they must agree with."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mft_engine.errors import ConfigError
from mft_engine.evaluate.bootstrap import bootstrap_ci
from mft_engine.evaluate.paired import (
    binomial_half_cdf,
    example_losses,
    holm,
    mcnemar,
    mcnemar_counts,
    paired_bootstrap,
)


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 9), (9, 3), (10, 10), (0, 25), (40, 61), (7, 8),
                                 (250, 310), (1200, 1301)])
def test_mcnemar_exact_equals_scipy_binomtest(b, c):
    got = mcnemar_counts(b, c)
    n = b + c
    assert got.p_exact == pytest.approx(stats.binomtest(min(b, c), n, 0.5).pvalue, rel=1e-10, abs=1e-300)
    k = min(b, c)
    mid = min(1.0, 2 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5))
    assert got.p_mid == pytest.approx(mid, rel=1e-10, abs=1e-300)
    assert got.p_mid <= got.p_exact


def test_mcnemar_textbook_value_and_counts():
    # b=1, c=8: n = 9, P(X <= 1) = (1 + 9) / 2^9, so p = 20/512 exactly; mid-p subtracts P(X=1) = 9/512
    assert mcnemar_counts(1, 8).p_exact == pytest.approx(20 / 512, rel=1e-12)
    assert mcnemar_counts(1, 8).p_mid == pytest.approx(11 / 512, rel=1e-12)
    before = np.array([1, 1, 1, 0, 0, 1, 0], dtype=bool)
    after = np.array([1, 0, 0, 1, 0, 1, 1], dtype=bool)
    r = mcnemar(before, after)
    assert (r.b, r.c) == (2, 2) and r.p_exact == 1.0 and r.p_mid == 1.0
    assert mcnemar(before, before).p_exact == 1.0
    with pytest.raises(ConfigError, match="same examples"):
        mcnemar(before, after[:3])


def test_binomial_half_cdf_matches_scipy_on_both_sides():
    for n in (1, 2, 17, 400):
        for k in sorted({0, 1, n // 3, n // 2, n // 2 + 1, n - 1, n}):
            cdf, pmf = binomial_half_cdf(k, n)
            assert cdf == pytest.approx(stats.binom.cdf(k, n, 0.5), rel=1e-11, abs=1e-300)
            assert pmf == pytest.approx(stats.binom.pmf(k, n, 0.5), rel=1e-11, abs=1e-300)


def _holm_by_procedure(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's rejections at level alpha, by the sequential procedure itself (not the adjusted p-values)."""
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


def test_holm_matches_the_step_down_procedure_and_r():
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") == c(0.05, 0.08, 0.09, 0.09, 0.09)
    np.testing.assert_allclose(holm([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05, 0.08, 0.09, 0.09, 0.09], rtol=1e-12)
    # input order is kept
    np.testing.assert_allclose(holm([0.04, 0.01, 0.5]), [0.08, 0.03, 0.5], rtol=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = int(rng.integers(1, 30))
        p = np.concatenate([rng.uniform(0, 0.02, m // 2), rng.uniform(0, 1, m - m // 2)])
        rng.shuffle(p)
        adj = holm(p)
        assert np.all(adj >= p) and np.all(adj <= 1.0)
        for alpha in (0.001, 0.01, 0.05, 0.2):
            np.testing.assert_array_equal(adj <= alpha, _holm_by_procedure(p, alpha))
    assert holm([]).size == 0
    with pytest.raises(ConfigError, match="outside"):
        holm([0.1, 1.5])


def test_paired_bootstrap_interval_is_bootstrap_ci_and_p_inverts_it():
    rng = np.random.default_rng(0)
    d = rng.normal(0.05, 1.0, size=300)
    r = paired_bootstrap(d, resamples=4000, seed=5)
    ci = bootstrap_ci(d, resamples=4000, seed=5)
    assert (r.mean, r.low, r.high) == pytest.approx((ci.estimate, ci.low, ci.high), rel=1e-12)
    assert r.p_value >= 2 / 4001
    for shift in (-0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4):
        x = d + shift
        rb = paired_bootstrap(x, resamples=4000, seed=5)
        # 0 outside the 95% interval <=> p < 0.05 (up to the one-resample granularity of both)
        if rb.low > 0.01 or rb.high < -0.01:
            assert rb.p_value < 0.05
        if rb.low < -0.01 and rb.high > 0.01:
            assert rb.p_value > 0.05


def test_paired_bootstrap_p_agrees_with_the_t_test_on_normal_differences():
    rng = np.random.default_rng(11)
    for mu in (0.0, 0.06, 0.12):
        d = rng.normal(mu, 1.0, size=2000)
        p_boot = paired_bootstrap(d, resamples=20000, seed=1).p_value
        p_t = stats.ttest_1samp(d, 0.0).pvalue
        assert abs(p_boot - p_t) < 0.02 + 0.1 * p_t, (mu, p_boot, p_t)


def test_paired_bootstrap_extremes_and_bad_input():
    assert paired_bootstrap(np.zeros(50), resamples=99).p_value == 1.0
    r = paired_bootstrap(np.full(50, 0.3), resamples=99)
    assert r.p_value == pytest.approx(2 / 100) and r.low == r.high == pytest.approx(0.3)
    for bad, needle in (([], "no values"), ([1.0, float("nan")], "non-finite")):
        with pytest.raises(ConfigError, match=needle):
            paired_bootstrap(bad)
    with pytest.raises(ConfigError, match="resamples"):
        paired_bootstrap([1.0, 2.0], resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        paired_bootstrap([1.0, 2.0], confidence=1.0)


def test_example_losses_equal_torch_cross_entropy():
    import torch

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(64, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=64)
    correct, loss = example_losses(logits, labels)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels),
                                            reduction="none").numpy()
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    np.testing.assert_array_equal(correct, logits.argmax(1) == labels)
    with pytest.raises(ConfigError, match="shape"):
        example_losses(logits[:, 0], labels)


def test_mcnemar_is_exact_under_the_null():
    """Under H0 the exact test never rejects more often than α (checked by enumeration of b for n = 30)."""
    n = 30
    for alpha in (0.01, 0.05):
        size = sum(stats.binom.pmf(b, n, 0.5) for b in range(n + 1) if mcnemar_counts(b, n - b).p_exact <= alpha)
        assert size <= alpha
