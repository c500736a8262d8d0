"""mft::detrimental_count against the oracle on every CPU path, opcheck, errors naming the parameter."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mft_engine import ops
from mft_engine.errors import ConfigError, NonFiniteError
from mft_engine.ops import reference as ref

from .sample_inputs import PATHS, detrimental_count_samples, make_tensor, sample_inputs_detrimental_count

SAMPLES = sample_inputs_detrimental_count()


def _check(sample) -> None:
    expect = ref.reference_detrimental_count(*sample.args)
    got = ops.detrimental_count(*sample.args)
    assert got.dtype == torch.int64
    assert torch.equal(got, expect), (sample.desc, got, expect)


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference(sample, cpu_path):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[2::11], ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.mft.detrimental_count.default, sample.args)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detrimental_count_samples)
def test_property_matches_reference_on_every_path(sample):
    for path in PATHS:
        with ops.use_cpu_path(path):
            _check(sample)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detrimental_count_samples, st.data())
def test_property_non_finite_is_reported_at_its_position(sample, data):
    thetas, grads, lr, literal = sample.args
    candidates = [i for i, t in enumerate(thetas) if t.numel() > 0]
    if not candidates:
        return
    i = data.draw(st.sampled_from(candidates))
    j = data.draw(st.integers(0, thetas[i].numel() - 1))
    kind = data.draw(st.sampled_from(["thetas", "grads"]))
    bad = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    thetas, grads = [t.clone() for t in thetas], [g.clone() for g in grads]
    target = (thetas if kind == "thetas" else grads)[i]
    target[torch.unravel_index(torch.tensor(j), target.shape)] = bad  # logical row-major position j
    names = [f"p{n}" for n in range(len(thetas))]
    match = rf"'p{i}' \({kind}\[{i}\]\) at element {j};"
    for path in PATHS:
        with ops.use_cpu_path(path):
            with pytest.raises(NonFiniteError, match=match):
                ops.detrimental_count(thetas, grads, lr, literal, names=names)
            with pytest.raises(NonFiniteError, match=match):
                ops.select_topk(thetas, grads, lr, 0, names=names)
    with pytest.raises(NonFiniteError, match=match):
        ref.reference_detrimental_count(thetas, grads, lr, literal, names=names)


def test_large_list_matches_reference(cpu_path):
    thetas = [make_tensor((300, 700), torch.float32, "normal", 3), make_tensor((5,), torch.float32, "normal", 4)]
    grads = [make_tensor((300, 700), torch.float32, "normal", 3, "grad"),
             make_tensor((5,), torch.float32, "normal", 4, "grad")]
    assert torch.equal(ops.detrimental_count(thetas, grads, 2.0), ref.reference_detrimental_count(thetas, grads, 2.0))


def test_empty_list():
    assert ops.detrimental_count([], [], 0.1).tolist() == []


@pytest.mark.parametrize("where", ["theta", "grad"])
def test_non_finite_names_the_parameter(where, cpu_path):
    thetas = [torch.ones(10), torch.ones(20), torch.ones(5)]
    grads = [torch.ones(10), torch.ones(20), torch.ones(5)]
    (thetas if where == "theta" else grads)[1][13] = float("nan")
    grads[2][0] = float("inf")  # a later one: the first in flat order is reported
    kind = "thetas" if where == "theta" else "grads"
    with pytest.raises(NonFiniteError, match=rf"'layer\.1' \({kind}\[1\]\) at element 13"):
        ops.detrimental_count(thetas, grads, 0.1, names=["layer.0", "layer.1", "layer.2"])
    with pytest.raises(NonFiniteError, match=rf"{kind}\[1\] at element 13"):
        ops.detrimental_count(thetas, grads, 0.1)
    with pytest.raises(RuntimeError, match=rf"non-finite value in {kind}\[1\] at element 13"):
        torch.ops.mft.detrimental_count(thetas, grads, 0.1, False)


def test_bad_arguments():
    t = [torch.ones(3)]
    with pytest.raises(ConfigError):
        ops.detrimental_count(t, t, 0.0)
    with pytest.raises(ValueError, match="same length"):
        ops.detrimental_count(t, t + t, 0.1)
    with pytest.raises(ValueError, match=r"grads\[0\] must have the shape of thetas\[0\]"):
        ops.detrimental_count(t, [torch.ones(4)], 0.1)
    with pytest.raises(TypeError, match=r"grads\[0\] must be float32"):
        ops.detrimental_count(t, [torch.ones(3, dtype=torch.int32)], 0.1)
    with pytest.raises(ValueError, match="names has 2 entries"):
        ops.detrimental_count(t, t, 0.1, names=["a", "b"])
