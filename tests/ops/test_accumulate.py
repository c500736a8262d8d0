"""mft::accumulate_ against `g_sum += g; sq_sum += g * g; ...`, bit for bit, on every CPU path."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from mft_engine import ops
from mft_engine.ops import reference as ref

from .sample_inputs import PATHS, accumulate_samples, assert_bits_equal, clone_args, sample_inputs_accumulate

SAMPLES = sample_inputs_accumulate()


def _check(sample, steps: int = 2) -> None:
    got = clone_args(sample.args)
    expect = clone_args(sample.args)
    for _ in range(steps):
        ops.accumulate_(*got)
        ref.reference_accumulate_(*expect)
    for name, a, b in zip(("g_sum", "sq_sum", "pos_count", "neg_count"), got[:4], expect[:4]):
        assert_bits_equal(a, b, f"{sample.desc}: {name}")


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference(sample, cpu_path):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[5::13], ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.mft.accumulate_.default, clone_args(sample.args))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accumulate_samples)
def test_property_matches_reference_on_every_path(sample):
    for path in PATHS:
        with ops.use_cpu_path(path):
            _check(sample, steps=1)


def test_nan_and_inf_propagate_like_pytorch(cpu_path):
    grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e19, -0.0])
    state = [torch.zeros(5), torch.zeros(5), torch.zeros(5, dtype=torch.int32), torch.zeros(5, dtype=torch.int32)]
    expect = [x.clone() for x in state]
    ops.accumulate_(*state, grad)
    ref.reference_accumulate_(*expect, grad)
    for a, b in zip(state, expect):
        assert torch.equal(a, b) or torch.allclose(a, b, equal_nan=True)
    assert state[2].tolist() == [0, 1, 0, 1, 0] and state[3].tolist() == [0, 0, 1, 0, 0]


def test_bad_arguments():
    g = torch.ones(4)
    ok = [torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int32)]
    with pytest.raises(TypeError, match="pos_count must be Int"):
        ops.accumulate_(ok[0], ok[1], torch.zeros(4), ok[3], g)
    with pytest.raises(ValueError, match="grad must have the shape of g_sum"):
        ops.accumulate_(*ok, torch.ones(5))
    with pytest.raises(ValueError, match="g_sum must be contiguous"):
        ops.accumulate_(torch.zeros(4, 2)[:, 0], ok[1], ok[2], ok[3], g)
    with pytest.raises(TypeError, match="grad must be float32"):
        ops.accumulate_(*ok, torch.ones(4, dtype=torch.float64))
