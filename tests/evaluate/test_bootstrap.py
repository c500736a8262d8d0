"""The percentile bootstrap against cases whose resampling distribution is known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from mft_engine.errors import ConfigError
from mft_engine.evaluate.bootstrap import bootstrap_ci


def test_binomial_case_by_hand():
    # values 0,0,0,1: a resample's mean is K/4 with K ~ Binomial(4, 1/4).
    # P(K=0) = 81/256 = 0.316 > 0.025, so the 2.5% quantile is 0;
    # P(K<=2) = 243/256 = 0.949 and P(K<=3) = 255/256 = 0.996, so the 97.5% quantile is 3/4.
    ci = bootstrap_ci([0.0, 0.0, 0.0, 1.0], resamples=10_000, seed=1)
    assert ci.estimate == 0.25 and ci.n == 4 and ci.resamples == 10_000
    assert (ci.low, ci.high) == (0.0, 0.75)
    # an 80% interval: 10% quantile 0 (0.316 > 0.1), 90% quantile 1/2 (P(K<=1) = 0.738, P(K<=2) = 0.949)
    ci80 = bootstrap_ci([0.0, 0.0, 0.0, 1.0], confidence=0.8, seed=1)
    assert (ci80.low, ci80.high) == (0.0, 0.5)


def test_two_values_and_the_resample_distribution():
    # values 0 and 1: resample means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    x = [0.0, 1.0]
    ci = bootstrap_ci(x, seed=0)
    assert (ci.low, ci.high, ci.estimate) == (0.0, 1.0, 0.5)
    # the same draws as the function makes: the share of each outcome matches its probability
    rng = np.random.default_rng(0)
    means = np.asarray(x)[rng.integers(0, 2, size=(10_000, 2))].mean(axis=1)
    for v, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(means == v) == pytest.approx(p, abs=0.02)


def test_constant_and_single_value():
    ci = bootstrap_ci([0.8, 0.8, 0.8])
    assert ci.low == ci.high == ci.estimate == pytest.approx(0.8)
    one = bootstrap_ci([0.7])
    assert (one.low, one.high, one.estimate) == (0.7, 0.7, 0.7)


def test_seeded_and_other_statistics():
    x = np.random.default_rng(5).normal(size=50)
    a, b = bootstrap_ci(x, seed=3), bootstrap_ci(x, seed=3)
    assert a == b
    assert a.low < x.mean() < a.high
    # roughly the normal-theory interval for a mean of 50 values
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert a.high - a.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    med = bootstrap_ci(x, statistic=np.median, resamples=2000)
    assert med.estimate == pytest.approx(np.median(x)) and med.low <= med.estimate <= med.high
    assert a.to_dict()["method"] == "percentile"


def test_chunked_draws_cover_every_resample():
    # n large enough that the resamples are drawn in several chunks: every slot is filled
    x = np.arange(300_000, dtype=float) % 2
    ci = bootstrap_ci(x, resamples=30, seed=0)
    assert 0.49 < ci.low <= ci.high < 0.51


@pytest.mark.parametrize("values,kw,needle", [
    ([], {}, "no values"),
    ([1.0, float("nan")], {}, "non-finite"),
    ([1.0], {"resamples": 0}, "resamples 0"),
    ([1.0], {"confidence": 1.0}, "confidence 1.0"),
])
def test_bad_input(values, kw, needle):
    with pytest.raises(ConfigError, match=needle):
        bootstrap_ci(values, **kw)
