"""mft::select_topk: exactly the oracle's set, threshold and tie count, on every CPU path, for small
inputs (full candidate scan) and large ones (sampled bracket)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from mft_engine import ops
from mft_engine.errors import ConfigError, NonFiniteError
from mft_engine.ops import reference as ref

from .sample_inputs import PATHS, assert_bits_equal, make_tensor, sample_inputs_select_topk, select_topk_samples

SAMPLES = sample_inputs_select_topk()


def _check(sample) -> None:
    idx, thr, tied = ops.select_topk(*sample.args, **sample.kwargs)
    e_idx, e_thr, e_tied = ref.reference_select_topk(*sample.args, **sample.kwargs)
    assert idx.dtype == torch.int64 and thr.dtype == torch.float64 and tied.dtype == torch.int64
    assert thr.dim() == 0 and tied.dim() == 0
    assert torch.equal(idx, e_idx), sample.desc
    assert_bits_equal(thr, e_thr, sample.desc)
    assert int(tied) == int(e_tied), sample.desc


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_reference(sample, cpu_path):
    _check(sample)


@pytest.mark.parametrize("sample", SAMPLES[3::11], ids=repr)
def test_opcheck(sample):
    torch.library.opcheck(torch.ops.mft.select_topk.default, sample.args, sample.kwargs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(select_topk_samples)
def test_property_matches_reference_on_every_path(sample):
    for path in PATHS:
        with ops.use_cpu_path(path):
            _check(sample)


def _large(kind: str, dtype=torch.float32):
    shapes = [(400, 700), (0,), (300, 500), (1000,)]
    thetas = [make_tensor(s, dtype, kind, 10 + i) for i, s in enumerate(shapes)]
    grads = [make_tensor(s, dtype, kind, 10 + i, "grad") for i, s in enumerate(shapes)]
    thetas[2] = thetas[2].t()  # non-contiguous: flat order is the logical row-major order
    grads[2] = grads[2].t()
    return thetas, grads


@pytest.mark.parametrize("kind,dtype,rank_by", [("normal", torch.float32, "shrink"),
                                                ("normal", torch.bfloat16, "update"),
                                                ("ties", torch.float32, "shrink")])
def test_large_inputs_use_the_bracket_and_stay_exact(kind, dtype, rank_by, cpu_path):
    thetas, grads = _large(kind, dtype)
    lr = 3.0 if kind == "normal" else 0.5
    n_det = int(ops.detrimental_count(thetas, grads, lr).sum())
    scores = ref.reference_scores(thetas, grads, lr, rank_by)
    order = torch.sort(scores, descending=True, stable=True).indices
    for k in (1, n_det // 25, n_det // 2, n_det):
        idx, thr, tied = ops.select_topk(thetas, grads, lr, k, rank_by=rank_by, seed=k)
        chosen = order[:k]
        assert torch.equal(idx, torch.sort(chosen).values), k
        assert thr.item() == scores[chosen].min().item()
        assert int(tied) == int((scores == thr).sum())


def test_heavy_ties_at_scale_stay_exact(cpu_path):
    # 1.2M equal scores overflow the candidate cap: the exact radix fallback takes over.
    n = 1_200_000
    thetas = [torch.ones(n // 2), -torch.ones(n - n // 2)]
    grads = [torch.ones(n // 2), -torch.ones(n - n // 2)]
    for k in (1, n // 2 + 3, n):
        idx, thr, tied = ops.select_topk(thetas, grads, 0.5, k)
        assert torch.equal(idx, torch.arange(k))
        assert thr.item() == 0.5 and int(tied) == n


def test_seed_changes_nothing_but_speed():
    thetas, grads = _large("normal")
    runs = [ops.select_topk(thetas, grads, 3.0, 12345, seed=s) for s in (0, 1, 2**40)]
    for idx, thr, tied in runs[1:]:
        assert torch.equal(idx, runs[0][0]) and thr.item() == runs[0][1].item() and int(tied) == int(runs[0][2])


def test_ties_go_to_the_lower_flat_index(cpu_path):
    thetas = [torch.ones(5), torch.ones(2, 3)]
    grads = [torch.ones(5), torch.ones(2, 3)]
    idx, thr, tied = ops.select_topk(thetas, grads, 0.5, 7)
    assert idx.tolist() == list(range(7))
    assert thr.item() == 0.5 and int(tied) == 11


def test_k_zero_and_empty_list():
    t = [torch.ones(3)]
    idx, thr, tied = ops.select_topk(t, t, 0.5, 0)
    assert idx.shape == (0,) and thr.item() == float("inf") and int(tied) == 0
    idx, thr, tied = ops.select_topk([], [], 0.5, 0)
    assert idx.shape == (0,) and thr.item() == float("inf")
    with pytest.raises(ValueError, match=r"k=1 exceeds the number of detrimental elements \(0\)"):
        ops.select_topk([], [], 0.5, 1)


def test_k_out_of_range():
    t = [torch.ones(3), -torch.ones(2)]
    g = [torch.ones(3), torch.ones(2)]  # 3 detrimental
    with pytest.raises(ValueError, match=r"k=4 exceeds the number of detrimental elements \(3\)"):
        ops.select_topk(t, g, 0.5, 4)
    with pytest.raises(ValueError, match="k=-1"):
        ops.select_topk(t, g, 0.5, -1)
    with pytest.raises(ValueError, match=r"k=4 exceeds"):
        ref.reference_select_topk(t, g, 0.5, 4)


@pytest.mark.parametrize("k", [0, 1, 20])
def test_non_finite_names_the_parameter(k, cpu_path):
    thetas = [torch.full((30,), 0.5), torch.full((30,), 0.5)]
    grads = [torch.full((30,), 0.5), torch.full((30,), 0.5)]
    grads[1][4] = float("-inf")
    with pytest.raises(NonFiniteError, match=r"'b' \(grads\[1\]\) at element 4"):
        ops.select_topk(thetas, grads, 0.1, k, names=["a", "b"])
    with pytest.raises(NonFiniteError, match=r"'b' \(grads\[1\]\) at element 4"):
        ref.reference_select_topk(thetas, grads, 0.1, k, names=["a", "b"])


def test_bad_arguments():
    t = [torch.ones(3)]
    with pytest.raises(ConfigError):
        ops.select_topk(t, t, -0.1, 1)
    with pytest.raises(ConfigError):
        ops.select_topk(t, t, 0.1, 1, rank_by="magnitude")
    with pytest.raises(TypeError, match=r"thetas\[0\] must be a torch.Tensor"):
        ops.select_topk([[1.0]], t, 0.1, 1)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        t = [torch.empty(4, 5), torch.empty(3)]
        idx, thr, tied = torch.ops.mft.select_topk(t, t, 0.1, 6, "shrink", False)
    assert idx.shape == (6,) and idx.dtype == torch.int64
    assert thr.shape == () and thr.dtype == torch.float64 and tied.dtype == torch.int64
