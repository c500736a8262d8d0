"""mft::detrimental_score against the pure-PyTorch oracle, bit for bit, on every CPU path."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from mft_engine import ops
from mft_engine.errors import ConfigError, NonFiniteError
from mft_engine.ops import reference as ref

from .sample_inputs import (PATHS, assert_bits_equal, detrimental_score_samples, make_tensor,
                            sample_inputs_detrimental_score)

SAMPLES = sample_inputs_detrimental_score()


def _check(sample) -> None:
    expect = ref.reference_detrimental_score(*sample.args)
    got = ops.detrimental_score(*sample.args)
    assert_bits_equal(got, expect, sample.desc)
    assert got.is_contiguous()


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference(sample, cpu_path):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[1::9], ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.mft.detrimental_score.default, sample.args)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detrimental_score_samples)
def test_property_matches_reference_on_every_path(sample):
    for path in PATHS:
        with ops.use_cpu_path(path):
            _check(sample)


@settings(max_examples=20, deadline=None)
@given(detrimental_score_samples)
def test_property_score_is_positive_exactly_when_detrimental(sample):
    theta, grad, lr, rank_by, literal = sample.args
    s = ops.detrimental_score(theta, grad, lr, rank_by, literal)
    assert bool((s >= 0).all())
    other = ops.detrimental_score(theta, grad, lr, "update" if rank_by == "shrink" else "shrink", literal)
    assert torch.equal(s > 0, other > 0)  # the test does not depend on the ranking
    if not literal:
        th, g = theta.double(), grad.double()
        # −0 and +0 are never detrimental, and a detrimental step keeps the sign: the shrink score is
        # at most |θ|.
        assert not bool((s[th == 0] > 0).any())
        if rank_by == "shrink":
            assert bool((s <= th.abs()).all())


def test_hand_worked_values():
    theta = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 0.0, -0.0, 1.0])
    grad = torch.tensor([1.0, 3.0, 4.0, 5.0, -1.0, -1.0, 1.0, -1.0, 0.0])
    # lr 0.5: t = 0.5, 1.5, 2 (boundary: lands on -θ), 2.5 (overshoot), 0.5, grows, θ=0, θ=-0, g=0
    s = ops.detrimental_score(theta, grad, 0.5, "shrink")
    assert s.tolist() == [0.5, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    u = ops.detrimental_score(theta, grad, 0.5, "update")
    assert u.tolist() == [0.5, 1.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert not bool(torch.signbit(s).any())  # zeros are +0.0


def test_literal_differs_where_fp32_rounds_away_the_step():
    theta, grad = torch.tensor([1.0]), torch.tensor([1e-8])
    assert ops.detrimental_score(theta, grad, 0.5, literal=True).item() == 0.0  # 1 - 5e-9 == 1 in fp32
    assert ops.detrimental_score(theta, grad, 0.5, literal=False).item() > 0.0


def test_lr_is_rounded_once_to_float32():
    theta, grad = torch.tensor([1.0]), torch.tensor([1.0])
    lr = 0.1  # not a float32 value
    lr32 = torch.tensor(lr, dtype=torch.float32).item()
    assert ops.detrimental_score(theta, grad, lr, "update").item() == lr32
    assert ops.detrimental_score(theta, grad, lr32, "update").item() == lr32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["theta", "grad"])
def test_non_finite_is_an_error(bad, where, cpu_path):
    theta = make_tensor((40,), torch.float32, "normal", 1)
    grad = make_tensor((40,), torch.float32, "normal", 1, "grad")
    (theta if where == "theta" else grad)[17] = bad
    with pytest.raises(NonFiniteError, match=r"non-finite .*'w' \(%s\) at element 17" % where):
        ops.detrimental_score(theta, grad, 0.1, name="w")
    with pytest.raises(RuntimeError, match=f"non-finite value in {where} at element 17"):
        torch.ops.mft.detrimental_score(theta, grad, 0.1, "shrink", False)
    with pytest.raises(NonFiniteError):
        ref.reference_detrimental_score(theta, grad, 0.1)


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf"), 1e-50, 1e39])
def test_bad_lr(lr):
    t = torch.ones(3)
    with pytest.raises(ConfigError, match="lr="):
        ops.detrimental_score(t, t, lr)
    if math.isfinite(lr) and lr <= 0:
        with pytest.raises(ValueError, match="lr="):
            torch.ops.mft.detrimental_score(t, t, lr, "shrink", False)


def test_bad_arguments():
    t = torch.ones(3)
    with pytest.raises(ConfigError, match="rank_by"):
        ops.detrimental_score(t, t, 0.1, rank_by="size")
    with pytest.raises(ValueError, match="rank_by"):
        torch.ops.mft.detrimental_score(t, t, 0.1, "size", False)
    with pytest.raises(ValueError, match="grad must have the shape of theta"):
        ops.detrimental_score(t, torch.ones(4), 0.1)
    with pytest.raises(TypeError, match="theta must be float32, float16 or bfloat16"):
        ops.detrimental_score(t.double(), t, 0.1)
