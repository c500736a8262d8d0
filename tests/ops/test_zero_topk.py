"""mft::zero_topk_: exactly the oracle's selection (select then zero), values saved bit for bit, undo
restores the inputs, and every error leaves the thetas untouched; on every CPU path."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from mft_engine import ops
from mft_engine.errors import ConfigError, NonFiniteError
from mft_engine.ops import reference as ref

from .sample_inputs import (PATHS, assert_bits_equal, clone_args, make_tensor, sample_inputs_zero_topk,
                            zero_topk_samples)

SAMPLES = sample_inputs_zero_topk()


def _check(sample) -> None:
    args = clone_args(sample.args)
    expect_args = clone_args(sample.args)
    original = [t.clone() for t in args[0]]
    idx, values, thr, tied = ops.zero_topk_(*args, **sample.kwargs)
    e_idx, e_values, e_thr, e_tied = ref.reference_zero_topk_(*expect_args, **sample.kwargs)
    assert idx.dtype == torch.int64 and thr.dtype == torch.float64 and tied.dtype == torch.int64
    assert thr.dim() == 0 and tied.dim() == 0
    assert torch.equal(idx, e_idx), sample.desc
    assert_bits_equal(values, e_values, sample.desc + " values")
    assert_bits_equal(thr, e_thr, sample.desc)
    assert int(tied) == int(e_tied), sample.desc
    for t, e in zip(args[0], expect_args[0]):
        assert_bits_equal(t, e, sample.desc + " zeroed thetas")
    ops.restore_(args[0], idx, values)
    for t, o in zip(args[0], original):
        assert_bits_equal(t, o, sample.desc + " restored")


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference(sample, cpu_path):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[3::11], ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.mft.zero_topk_.default, clone_args(sample.args), sample.kwargs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zero_topk_samples)
def test_property_matches_reference_on_every_path(sample):
    for path in PATHS:
        with ops.use_cpu_path(path):
            _check(sample)


def _large(kind: str, dtype=torch.float32, grad_dtype=None):
    shapes = [(400, 700), (0,), (300, 500), (1000,)]
    thetas = [make_tensor(s, dtype, kind, 10 + i) for i, s in enumerate(shapes)]
    grads = [make_tensor(s, grad_dtype or dtype, kind, 10 + i, "grad") for i, s in enumerate(shapes)]
    grads[2] = grads[2].t().contiguous().t()  # non-contiguous grad, same logical values
    return thetas, grads


@pytest.mark.parametrize("kind,dtype,grad_dtype,rank_by", [("normal", torch.float32, None, "shrink"),
                                                           ("normal", torch.bfloat16, torch.float32, "update"),
                                                           ("normal", torch.float16, None, "shrink"),
                                                           ("ties", torch.float32, None, "shrink")])
def test_large_inputs_match_select_then_zero(kind, dtype, grad_dtype, rank_by, cpu_path):
    thetas, grads = _large(kind, dtype, grad_dtype)
    lr = 3.0 if kind == "normal" else 0.5
    n_det = int(ops.detrimental_count(thetas, grads, lr).sum())
    for k in (1, n_det // 25, n_det // 2, n_det):
        mine = [t.clone() for t in thetas]
        theirs = [t.clone() for t in thetas]
        idx, values, thr, tied = ops.zero_topk_(mine, grads, lr, k, rank_by=rank_by, seed=k)
        e_idx, e_thr, e_tied = ops.select_topk(theirs, grads, lr, k, rank_by=rank_by)
        e_values = ops.zero_masked_(theirs, e_idx)
        assert torch.equal(idx, e_idx), k
        assert_bits_equal(values, e_values, f"k={k}")
        assert thr.item() == e_thr.item() and int(tied) == int(e_tied)
        for a, b in zip(mine, theirs):
            assert_bits_equal(a, b, f"k={k}")


def test_heavy_ties_at_scale_fall_back_exactly(cpu_path):
    # 1.2M equal scores overflow the candidate cap: the pass's zeros are undone and radix select runs.
    n = 1_200_000
    for k in (1, n // 2 + 3, n):
        thetas = [torch.ones(n // 2), -torch.ones(n - n // 2)]
        grads = [torch.ones(n // 2), -torch.ones(n - n // 2)]
        idx, values, thr, tied = ops.zero_topk_(thetas, grads, 0.5, k)
        assert torch.equal(idx, torch.arange(k))
        assert thr.item() == 0.5 and int(tied) == n
        flat = torch.cat(thetas)
        assert bool((flat[:k] == 0).all()) and bool((flat[k:].abs() == 1).all())
        assert bool((values.abs() == 1).all())


@pytest.mark.parametrize("k", [0, 1, 20, 59])
def test_non_finite_names_the_parameter_and_leaves_thetas(k, cpu_path):
    thetas = [torch.full((30,), 0.5), torch.full((30,), 0.5)]
    grads = [torch.full((30,), 0.5), torch.full((30,), 0.5)]
    grads[1][4] = float("-inf")
    with pytest.raises(NonFiniteError, match=r"'b' \(grads\[1\]\) at element 4"):
        ops.zero_topk_(thetas, grads, 0.1, k, names=["a", "b"])
    assert all(bool((t == 0.5).all()) for t in thetas)


def test_non_finite_after_certain_elements_were_zeroed(cpu_path):
    # Large enough for the sampled bracket: the pass zeroes certain elements before it meets the Inf.
    thetas, grads = _large("normal")
    thetas[3][-1] = float("nan")
    before = [t.clone() for t in thetas]
    n_det = 200_000
    with pytest.raises(NonFiniteError, match=r"thetas\[3\] at element 999"):
        ops.zero_topk_(thetas, grads, 3.0, n_det // 10)
    for t, b in zip(thetas, before):
        assert_bits_equal(t, b)


def test_k_out_of_range_leaves_thetas():
    t = [torch.ones(3), -torch.ones(2)]
    g = [torch.ones(3), torch.ones(2)]  # 3 detrimental
    with pytest.raises(ValueError, match=r"k=4 exceeds the number of detrimental elements \(3\)"):
        ops.zero_topk_(t, g, 0.5, 4)
    assert bool((t[0] == 1).all()) and bool((t[1] == -1).all())
    with pytest.raises(ValueError, match="k=-1"):
        ops.zero_topk_(t, g, 0.5, -1)
    big_t, big_g = _large("normal")
    before = [x.clone() for x in big_t]
    n_det = int(ops.detrimental_count(big_t, big_g, 3.0).sum())
    with pytest.raises(ValueError, match=rf"k={n_det + 1} exceeds"):
        ops.zero_topk_(big_t, big_g, 3.0, n_det + 1)
    for x, b in zip(big_t, before):
        assert_bits_equal(x, b)


def test_k_zero_and_empty_list():
    t = [torch.ones(3)]
    g = [torch.ones(3)]
    idx, values, thr, tied = ops.zero_topk_(t, g, 0.5, 0)
    assert idx.shape == (0,) and values.shape == (0,) and thr.item() == float("inf") and int(tied) == 0
    assert bool((t[0] == 1).all())
    idx, values, thr, tied = ops.zero_topk_([], [], 0.5, 0)
    assert idx.shape == (0,) and values.dtype == torch.float32
    with pytest.raises(ValueError, match=r"k=1 exceeds the number of detrimental elements \(0\)"):
        ops.zero_topk_([], [], 0.5, 1)


def test_bad_arguments():
    t = [torch.ones(3)]
    g = [torch.ones(3)]
    with pytest.raises(ConfigError):
        ops.zero_topk_(t, g, -0.1, 1)
    with pytest.raises(ConfigError):
        ops.zero_topk_(t, g, 0.1, 1, rank_by="magnitude")
    with pytest.raises(ValueError, match=r"thetas\[1\] must be contiguous"):
        ops.zero_topk_([torch.ones(3), torch.ones(3, 2)[:, 0]], [torch.ones(3), torch.ones(3)], 0.1, 1)
    with pytest.raises(TypeError, match=r"thetas\[1\] has dtype"):
        ops.zero_topk_([torch.ones(3), torch.ones(3, dtype=torch.float16)], [torch.ones(3), torch.ones(3)], 0.1, 1)
    with pytest.raises(ValueError, match=r"grads\[0\] must have the shape of thetas\[0\]"):
        ops.zero_topk_(t, [torch.ones(4)], 0.1, 1)
    with pytest.raises(ValueError, match="share memory"):
        ops.zero_topk_(t, t, 0.1, 1)
    with pytest.raises(ValueError, match=r"thetas\[0\] and thetas\[1\] share memory"):
        base = torch.ones(6)
        ops.zero_topk_([base[:4], base[2:]], [torch.ones(4), torch.ones(4)], 0.1, 1)
    assert bool((t[0] == 1).all())


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        t = [torch.empty(4, 5, dtype=torch.bfloat16), torch.empty(3, dtype=torch.bfloat16)]
        g = [torch.empty(4, 5), torch.empty(3)]
        idx, values, thr, tied = torch.ops.mft.zero_topk_(t, g, 0.1, 6, "shrink", False)
    assert idx.shape == (6,) and idx.dtype == torch.int64
    assert values.shape == (6,) and values.dtype == torch.bfloat16
    assert thr.shape == () and thr.dtype == torch.float64 and tied.dtype == torch.int64
