"""Sample selection, fixed and token-budget batches, length splits, validation halves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mft_engine.data import (
    fixed_batches,
    select_samples,
    split_by_length,
    token_budget_batches,
    validation_halves,
)
from mft_engine.errors import ConfigError

FAST = settings(max_examples=40, deadline=None)


def test_select_first_and_seeded():
    assert select_samples(10, 3) == [0, 1, 2]
    a = select_samples(1000, 50, order="seeded", seed=7)
    assert a == select_samples(1000, 50, order="seeded", seed=7)
    assert a == np.random.default_rng(7).choice(1000, size=50, replace=False).tolist()  # draw order kept
    assert len(set(a)) == 50 and a != sorted(a)
    assert a != select_samples(1000, 50, order="seeded", seed=8)
    assert select_samples(5, None) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kw, match", [(dict(n=11), "exceeds the 10 rows"), (dict(n=0), "at least 1"),
                                       (dict(n=3, order="random"), "first")])
def test_select_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        select_samples(10, **kw)


def test_fixed_batches_drop_or_keep_last():
    rows = select_samples(5000, 1000, order="seeded", seed=0)
    batches = fixed_batches(rows, 32)
    assert len(batches) == 31 and all(len(b) == 32 for b in batches)
    assert [r for b in batches for r in b] == rows[:992]  # sample order kept
    kept = fixed_batches(rows, 32, keep_last=True)
    assert len(kept) == 32 and len(kept[-1]) == 8 and [r for b in kept for r in b] == rows
    assert fixed_batches(range(10), 32) == [] and fixed_batches(range(10), 32, keep_last=True) == [list(range(10))]
    with pytest.raises(ConfigError):
        fixed_batches(rows, 0)


@FAST
@given(st.lists(st.integers(1, 64), min_size=1, max_size=200), st.integers(1, 512), st.sampled_from([None, 3]))
def test_token_budget_batches_partition_and_fit(lengths, budget, max_bs):
    batches = token_budget_batches(lengths, budget, max_batch_size=max_bs)
    assert sorted(r for b in batches for r in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[r] for r in b) <= budget
        assert max_bs is None or len(b) <= max_bs
    assert batches == token_budget_batches(lengths, budget, max_batch_size=max_bs)


def test_token_budget_batches_subset_and_shuffle():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    assert token_budget_batches(lengths, 10, indices=[2, 1, 3]) == [[1, 3], [2]]
    plain = token_budget_batches(lengths, 12)
    assert plain == [[1, 6, 3, 4], [0], [5], [2]]
    mixed = token_budget_batches(lengths, 12, shuffle_seed=1)
    assert sorted(mixed) == sorted(plain) and mixed == token_budget_batches(lengths, 12, shuffle_seed=1)


@FAST
@given(st.lists(st.integers(1, 128), min_size=1, max_size=64), st.floats(0.0, 0.9))
def test_split_by_length_partitions_with_bounded_waste(lengths, waste):
    batch = list(range(len(lengths)))[::-1]
    subs = split_by_length(batch, lengths, max_pad_waste=waste)
    assert sorted(r for s in subs for r in s) == sorted(batch)
    for s in subs:
        ls = [lengths[r] for r in s]
        assert len(s) == 1 or 1 - sum(ls) / (len(s) * max(ls)) <= waste + 1e-12
    # The weighted sum of sub-batch means is the batch mean (how a fixed batch's loss is rebuilt).
    losses = np.random.default_rng(0).random(len(lengths))
    weighted = sum(len(s) / len(batch) * losses[s].mean() for s in subs)
    assert weighted == pytest.approx(losses.mean())


def test_split_by_length_token_cap():
    assert split_by_length([0, 1, 2, 3], [10, 10, 10, 10], max_pad_waste=0.5, max_tokens=20) == [[0, 1], [2, 3]]


def test_validation_halves():
    score, evaluate = validation_halves(872, seed=3)
    assert len(score) == 436 and len(evaluate) == 436
    assert sorted(score + evaluate) == list(range(872)) and score == sorted(score)
    assert (score, evaluate) == validation_halves(872, seed=3) and score != validation_halves(872, seed=4)[0]
    odd = validation_halves(5, seed=0)
    assert (len(odd[0]), len(odd[1])) == (2, 3)
    with pytest.raises(ConfigError):
        validation_halves(1)
