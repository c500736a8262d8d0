"""mft::zero_masked_ / mft::restore_: zeroing at flat indices, exact undo, index checks."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from mft_engine import ops
from mft_engine.ops import reference as ref

from .sample_inputs import assert_bits_equal, clone_args, sample_inputs_zero_masked, zero_masked_samples

SAMPLES = sample_inputs_zero_masked()


def _check(sample) -> None:
    params, indices = clone_args(sample.args)
    original = [p.clone() for p in params]
    expect_params, _ = clone_args(sample.args)
    saved = ops.zero_masked_(params, indices)
    expect_saved = ref.reference_zero_masked_(expect_params, indices)
    assert_bits_equal(saved, expect_saved, sample.desc)
    for p, e in zip(params, expect_params):
        assert_bits_equal(p, e, sample.desc)
    ops.restore_(params, indices, saved)
    for p, o in zip(params, original):
        assert_bits_equal(p, o, sample.desc + " restored")


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference_and_restores(sample):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[4::9], ids=repr)
def test_opcheck(sample):
    params, indices = clone_args(sample.args)
    torch.library.opcheck(torch.ops.mft.zero_masked_.default, (params, indices))
    saved = torch.ops.mft.zero_masked_(params, indices)
    torch.library.opcheck(torch.ops.mft.restore_.default, (params, indices, saved))


@settings(max_examples=30, deadline=None)
@given(zero_masked_samples)
def test_property_round_trip(sample):
    _check(sample)


def test_signed_zero_and_nan_restore_bit_for_bit():
    p = [torch.tensor([-0.0, float("nan"), 1.0, float("-inf")])]
    before = p[0].clone()
    idx = torch.tensor([0, 1, 3])
    saved = ops.zero_masked_(p, idx)
    assert p[0].tolist()[2] == 1.0 and not bool(torch.signbit(p[0]).any())
    ops.restore_(p, idx, saved)
    assert_bits_equal(p[0], before)


@pytest.mark.parametrize("indices,error,match", [
    ([3, 1], ValueError, r"indices\[1\]=1 follows indices\[0\]=3"),
    ([1, 1], ValueError, "strictly increasing"),
    ([0, 10], IndexError, r"indices\[1\]=10 is out of range for 10 elements"),
    ([-1], IndexError, r"indices\[0\]=-1"),
])
def test_bad_indices(indices, error, match):
    params = [torch.ones(4), torch.ones(6)]
    with pytest.raises(error, match=match):
        ops.zero_masked_(params, torch.tensor(indices, dtype=torch.int64))
    with pytest.raises(error, match=match):
        ops.restore_(params, torch.tensor(indices, dtype=torch.int64), torch.zeros(len(indices)))
    assert all(bool((p == 1).all()) for p in params)  # nothing was written


def test_bad_params():
    idx = torch.tensor([0])
    with pytest.raises(ValueError, match=r"params\[1\] must be contiguous"):
        ops.zero_masked_([torch.ones(3), torch.ones(3, 2)[:, 0]], idx)
    with pytest.raises(TypeError, match=r"params\[1\] has dtype"):
        ops.zero_masked_([torch.ones(3), torch.ones(3, dtype=torch.float16)], idx)
    with pytest.raises(TypeError, match="indices must be Long"):
        ops.zero_masked_([torch.ones(3)], torch.tensor([0], dtype=torch.int32))
    with pytest.raises(TypeError, match="values must be Half"):
        ops.restore_([torch.ones(3, dtype=torch.float16)], idx, torch.zeros(1))
    with pytest.raises(ValueError, match="values must be 1-D with 1 elements"):
        ops.restore_([torch.ones(3)], idx, torch.zeros(2))
    with pytest.raises(IndexError):
        ops.zero_masked_([], idx)
    assert ops.zero_masked_([], torch.zeros(0, dtype=torch.int64)).shape == (0,)
