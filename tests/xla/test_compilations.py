"""One compiled graph serves every k: the selection runs for several k on the same tensors and torch_xla's
CompileTime metric grows by one, on the first call only."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_xla")

import torch_xla.debug.metrics as met

from mft_engine.ops import reference as ref
from mft_engine.ops import xla as mft_xla


def compilations() -> int:
    data = met.metric_data("CompileTime")
    return int(data[0]) if data else 0


def _inputs(seed: int, n: int):
    """Tensors of shapes no other test uses (n differs per test): a compiled graph is cached by shapes, so
    a shape seen before would compile nothing at all."""
    gen = torch.Generator().manual_seed(seed)
    thetas = [torch.randn(30, n, generator=gen) * 0.05, torch.randn(17, generator=gen) * 0.05]
    grads = [torch.randn(30, n, generator=gen) * 0.02, torch.randn(17, generator=gen) * 0.02]
    return thetas, grads


def test_one_compilation_for_every_k(device, arithmetic):
    thetas, grads = _inputs(3, 20 if arithmetic == "f64" else 21)
    n_det = int(ref.reference_detrimental_count(thetas, grads, 1.0).sum())
    x_thetas, x_grads = [t.to(device) for t in thetas], [g.to(device) for g in grads]
    before = compilations()
    per_call = []
    for k in (0, 1, 2, 17, n_det // 2, n_det):
        start = compilations()
        masks, _, _ = mft_xla.select_mask(x_thetas, x_grads, 1.0, k)
        per_call.append(compilations() - start)
        assert torch.equal(mft_xla.masks_to_indices(masks), ref.reference_select_topk(thetas, grads, 1.0, k)[0])
    assert per_call[0] == 1 and sum(per_call[1:]) == 0, per_call
    assert compilations() - before == 1


def test_one_compilation_for_select_topk_schema(device, arithmetic):
    thetas, grads = _inputs(5, 22 if arithmetic == "f64" else 23)
    x_thetas, x_grads = [t.to(device) for t in thetas], [g.to(device) for g in grads]
    before = compilations()
    for k in (0, 1, 3, 40):
        idx, _, _ = torch.ops.mft.select_topk.default(x_thetas, x_grads, 1.0, k, "shrink", False, 0)
        assert torch.equal(idx.cpu(), ref.reference_select_topk(thetas, grads, 1.0, k)[0])
    assert compilations() - before == 1
