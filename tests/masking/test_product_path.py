"""The fused mft::zero_topk_ on the path users run: the same indices and values as select + zero, and a
fallback to select + zero where its preconditions fail (tied or aliased weights)."""
from __future__ import annotations

import torch

from mft_engine import ops
from mft_engine.masking import DetrimentalSelector, detrimental_mask, eligible_parameters, fusable

from ..conftest import tiny_bert


def grads_for(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) * 1e3 for n, p in model.named_parameters()}


def test_fused_select_and_zero_equals_select_then_zero():
    model = tiny_bert()
    grads = grads_for(model)
    named = eligible_parameters(list(model.named_parameters()), ("classifier", "pooler"))
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    sel = DetrimentalSelector(named, grads, 2e-5, "shrink", False, seed=3)
    assert sel.fused
    expected = sel.select(0.1)
    thetas = [p.detach().clone() for _, p in named]
    expected_values = ops.zero_masked_(thetas, expected.mask.indices)
    got = sel.select_and_zero_(0.1)
    assert torch.equal(got.mask.indices, expected.mask.indices)
    assert torch.equal(got.mask.values, expected_values)
    assert (got.threshold, got.n_tied_at_threshold, got.k) == (expected.threshold, expected.n_tied_at_threshold, expected.k)
    for (n, p), t in zip(named, thetas):
        assert torch.equal(p.detach(), t), n  # zeroed in place exactly where select + zero would
    got.mask.restore(model)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), ref[n]), n


def test_tied_weights_fall_back_to_select_then_zero():
    model = tiny_bert()
    # tie two eligible weights: the fused pass would zero the shared storage through both names
    a = model.bert.encoder.layer[0].attention.self.query
    b = model.bert.encoder.layer[0].attention.self.key
    b.weight = a.weight
    named = eligible_parameters(list(model.named_parameters(remove_duplicate=False)), ("classifier", "pooler"))
    grads = grads_for(model)
    grads["bert.encoder.layer.0.attention.self.key.weight"] = grads["bert.encoder.layer.0.attention.self.query.weight"]
    assert not fusable([p.detach() for _, p in named], [grads[n] for n, _ in named])
    sel = DetrimentalSelector(named, grads, 2e-5)
    assert not sel.fused
    expected = sel.select(0.2)
    got = sel.select_and_zero_(0.2)
    assert torch.equal(got.mask.indices, expected.mask.indices)
    assert got.mask.values is not None and got.mask.values.numel() == got.k


def test_fusable_rejects_mixed_dtypes_and_non_contiguous():
    x, y = torch.ones(4, 4), torch.ones(4, 4)
    assert fusable([x, y], [torch.ones(4, 4), torch.ones(4, 4)])
    assert not fusable([x, y.half()], [x, y])
    assert not fusable([x.t(), y], [x, y])
    assert not fusable([x], [x])  # a grad aliasing its theta
    assert not fusable([], [])


def test_detrimental_mask_apply_equals_mask_then_apply():
    m1, m2 = tiny_bert(), tiny_bert()
    grads = grads_for(m1)
    fused = detrimental_mask(m1, grads, fraction=0.05, apply=True)
    plain = detrimental_mask(m2, grads, fraction=0.05).apply(m2)
    assert torch.equal(fused.indices, plain.indices) and torch.equal(fused.values, plain.values)
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p, q), n


def test_mft_run_zeroes_through_the_fused_op_and_reports_its_bound(tmp_path):
    import json

    from mft_engine.cli import main

    from ..cli.test_bad_input import TINY, sst2_folder

    out = tmp_path / "out"
    assert main(["run", *TINY, "--data-dir", str(sst2_folder(tmp_path / "g")), "--out", str(out)]) == 0
    (run_dir,) = list(out.iterdir())
    rec = json.loads((run_dir / "results.json").read_text())
    (f,) = rec["fractions"]
    assert f["zero_path"] == "zero_topk_"
    assert f["zero_s"] > 0 and f["zero_warm_s"] > 0 and f["read_bound_s"] > 0
    assert rec["read_bandwidth_bytes_per_s"] > 0
