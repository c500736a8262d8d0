"""The XLA kernels against ops.reference on the shared sample_inputs(), bit for bit, in the "f64" arithmetic
(CPU/GPU XLA devices). The "f32" (TPU) arithmetic is tested against its stated guarantee in
test_tpu_arithmetic.py."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_xla")

from mft_engine.ops import reference as ref
from mft_engine.ops import xla as mft_xla
from tests.ops.sample_inputs import (
    assert_bits_equal,
    clone_args,
    sample_inputs_accumulate,
    sample_inputs_detrimental_count,
    sample_inputs_detrimental_score,
    sample_inputs_select_topk,
    sample_inputs_zero_masked,
)


def to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, list):
        return [to(y, device) for y in x]
    return x


@pytest.fixture(autouse=True)
def f64():
    mft_xla.set_arithmetic("f64")
    yield
    mft_xla.set_arithmetic(None)


@pytest.mark.parametrize("sample", sample_inputs_detrimental_score(), ids=repr)
def test_detrimental_score(device, sample):
    theta, grad, lr, rank_by, literal = sample.args
    got = torch.ops.mft.detrimental_score.default(theta.to(device), grad.to(device), lr, rank_by, literal)
    assert_bits_equal(got.cpu(), ref.reference_detrimental_score(*sample.args), sample.desc)


@pytest.mark.parametrize("sample", sample_inputs_detrimental_count(), ids=repr)
def test_detrimental_count(device, sample):
    thetas, grads, lr, literal = sample.args
    got = torch.ops.mft.detrimental_count.default(to(thetas, device), to(grads, device), lr, literal)
    assert torch.equal(got.cpu(), ref.reference_detrimental_count(*sample.args)), sample.desc


@pytest.mark.parametrize("sample", sample_inputs_select_topk(), ids=repr)
def test_select_mask_is_select_topk(device, sample):
    """Masks, threshold and tie count equal the reference's selection, k = 0 and k = all included."""
    thetas, grads, lr, k, rank_by, literal = sample.args
    if not thetas or sum(t.numel() for t in thetas) == 0:
        pytest.skip("no elements")
    masks, threshold, n_tied = mft_xla.select_mask(to(thetas, device), to(grads, device), lr, k, rank_by, literal)
    indices, r_threshold, r_tied = ref.reference_select_topk(*sample.args)
    assert torch.equal(mft_xla.masks_to_indices(masks), indices), sample.desc
    assert_bits_equal(threshold.cpu(), r_threshold, sample.desc)
    assert int(n_tied.cpu()) == int(r_tied), sample.desc
    for m, t in zip(masks, thetas):
        assert m.shape == t.shape and m.dtype == torch.bool


def test_select_topk_schema_on_xla(device):
    """ops.select_topk (the fixed schema) works on XLA tensors through the mask."""
    sample = sample_inputs_select_topk()[7]
    thetas, grads, lr, k, rank_by, literal = sample.args
    idx, thr, tied = torch.ops.mft.select_topk.default(to(thetas, device), to(grads, device), lr, k, rank_by,
                                                        literal, 0)
    r_idx, r_thr, r_tied = ref.reference_select_topk(*sample.args)
    assert idx.device.type == "xla"
    assert torch.equal(idx.cpu(), r_idx) and torch.equal(thr.cpu(), r_thr) and int(tied.cpu()) == int(r_tied)


@pytest.mark.parametrize("sample", sample_inputs_accumulate(), ids=repr)
def test_accumulate(device, sample):
    expected = clone_args(sample.args)
    ref.reference_accumulate_(*expected)
    on_device = [a.to(device) for a in sample.args]
    torch.ops.mft.accumulate_.default(*on_device)
    for got, want, name in zip(on_device[:4], expected[:4], ("g_sum", "sq_sum", "pos", "neg")):
        assert_bits_equal(got.cpu(), want, f"{sample.desc} {name}")


@pytest.mark.parametrize("sample", sample_inputs_zero_masked(), ids=repr)
def test_zero_masked_and_restore(device, sample):
    params, indices = sample.args
    expected = [p.clone() for p in params]
    r_values = ref.reference_zero_masked_(expected, indices)
    on_device = [p.to(device) for p in params]
    values = torch.ops.mft.zero_masked_.default(on_device, indices.to(device))
    assert_bits_equal(values.cpu(), r_values, sample.desc)
    for got, want in zip(on_device, expected):
        assert_bits_equal(got.cpu(), want, sample.desc)
    torch.ops.mft.restore_.default(on_device, indices.to(device), values)
    for got, want in zip(on_device, params):
        assert_bits_equal(got.cpu(), want, sample.desc)


def test_non_finite_raises_like_the_reference(device):
    from mft_engine import ops
    from mft_engine.errors import NonFiniteError

    theta = torch.tensor([1.0, float("nan"), 2.0])
    grad = torch.ones(3)
    with pytest.raises(NonFiniteError, match="element 1"):
        ops.detrimental_score(theta.to(device), grad.to(device), 0.5)
    with pytest.raises(NonFiniteError, match="'w'"):
        mft_xla.select_mask([theta.to(device)], [grad.to(device)], 0.5, 1, names=["w"])


def test_k_beyond_the_detrimental_count_is_refused(device):
    theta, grad = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="k=3 exceeds the number of detrimental elements \\(2\\)"):
        mft_xla.select_mask([theta.to(device)], [grad.to(device)], 0.5, 3)


def test_registered_for_the_xla_key(device):
    for name in list(mft_xla.KERNELS) + ["select_mask_xla"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mft::{name}", "XLA"), name
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("mft::zero_topk_", "XLA")


def test_cpu_ops_unchanged_under_functionalize(device):
    """The Functionalize kernels leave CPU tensors to the C++ kernels (what functionalization did before)."""
    from torch.func import functionalize

    def run(g_sum, sq, pos, neg, grad):
        torch.ops.mft.accumulate_.default(g_sum, sq, pos, neg, grad)
        return g_sum, sq, pos, neg

    args = (torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int32),
            torch.tensor([1.0, -2.0, 0.0, 3.0]))
    expected = clone_args(args)
    ref.reference_accumulate_(*expected)
    out = functionalize(run)(*clone_args(args))
    for got, want in zip(out, expected[:4]):
        assert torch.equal(got, want)
