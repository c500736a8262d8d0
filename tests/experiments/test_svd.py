"""svd.py against numpy on known matrices: ΔW = (α/r)·B·A of a real PEFT LoRA layer, singular values, stable
rank ‖M‖²_F / ‖M‖²₂ and effective rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mft_engine.errors import ModelError
from mft_engine.experiments.svd import (
    delta_w,
    effective_rank,
    lora_modules,
    low_rank_singular_values,
    module_kind,
    singular_values,
    stable_rank,
    svd_rows,
)


def _numpy_stable_rank(m: np.ndarray) -> float:
    return float(np.linalg.norm(m, "fro") ** 2 / np.linalg.norm(m, 2) ** 2)


def test_stable_rank_of_known_matrices():
    assert stable_rank(np.eye(7)) == pytest.approx(7.0)
    assert stable_rank(torch.eye(5)) == pytest.approx(5.0)
    u, v = np.arange(1.0, 6.0), np.array([2.0, -1.0, 0.5])
    assert stable_rank(np.outer(u, v)) == pytest.approx(1.0)
    d = np.array([3.0, 2.0, 1.0, 0.0])
    assert stable_rank(np.diag(d)) == pytest.approx((9 + 4 + 1) / 9)
    assert stable_rank(np.diag(d)) == pytest.approx(_numpy_stable_rank(np.diag(d)))
    assert stable_rank(np.zeros((4, 3))) == 0.0
    rng = np.random.default_rng(0)
    m = rng.standard_normal((9, 6))
    assert stable_rank(m) == pytest.approx(_numpy_stable_rank(m), rel=1e-10)
    # a 1-D input is taken as singular values (any order, any sign)
    assert stable_rank(np.array([1.0, 3.0, 2.0])) == pytest.approx(14 / 9)


def test_effective_rank_of_known_matrices():
    assert effective_rank(np.eye(6)) == pytest.approx(6.0)
    assert effective_rank(np.outer([1.0, 2.0], [3.0, 4.0, 5.0])) == pytest.approx(1.0)
    d = np.array([3.0, 1.0])
    p = d / d.sum()
    assert effective_rank(np.diag(d)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.zeros((3, 3))) == 0.0


def test_singular_values_match_numpy():
    m = np.random.default_rng(1).standard_normal((5, 8))
    np.testing.assert_allclose(singular_values(m), np.linalg.svd(m, compute_uv=False))
    np.testing.assert_allclose(singular_values(torch.from_numpy(m).float()), np.linalg.svd(m, compute_uv=False),
                               rtol=1e-5)


def test_low_rank_singular_values_without_the_product():
    rng = np.random.default_rng(2)
    b, a = rng.standard_normal((30, 4)), rng.standard_normal((4, 20))
    full = np.linalg.svd(2.5 * b @ a, compute_uv=False)
    np.testing.assert_allclose(low_rank_singular_values(torch.from_numpy(b), torch.from_numpy(a), 2.5), full[:4],
                               rtol=1e-10)
    assert np.allclose(full[4:], 0.0, atol=1e-10)


def _lora_linear(r=2, alpha=6.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5))
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"], lora_dropout=0.0))
    (path, layer), = lora_modules(model)
    return model, path, layer


def test_delta_w_of_a_peft_layer_is_scaled_b_times_a():
    model, path, layer = _lora_linear(r=2, alpha=6.0)
    assert path == "0"
    a = np.array([[1.0, 0, 0, 2, 0, 0], [0, 1, 0, 0, 0, -1]])
    b = np.array([[1.0, 0], [0, 1], [2, 0], [0, 0], [1, 1]])
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.from_numpy(a))
        layer.lora_B["default"].weight.copy_(torch.from_numpy(b))
    expected = (6.0 / 2) * b @ a
    dw = delta_w(layer)
    assert dw.shape == (5, 6) and dw.dtype == torch.float32
    np.testing.assert_allclose(dw.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(dw.numpy(), layer.get_delta_weight("default").detach().numpy(), rtol=1e-6)
    # merging adds exactly ΔW to W
    w0 = layer.base_layer.weight.detach().clone()
    merged = model.merge_and_unload()
    np.testing.assert_allclose((merged[0].weight.detach() - w0).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_delta_w_rejects_a_plain_linear():
    with pytest.raises(ModelError, match="not a LoRA layer"):
        delta_w(torch.nn.Linear(3, 3))


def test_svd_rows_of_a_lora_bert(bert_tiny_lora):
    model = bert_tiny_lora
    with torch.no_grad():  # B starts at 0: give every adapter a known rank-1 update
        for _, layer in lora_modules(model):
            layer.lora_B["default"].weight.zero_()
            layer.lora_B["default"].weight[0, 0] = 1.0
    rows = svd_rows(model, top=3)
    assert [r["kind"] for r in rows] == ["query", "key", "value"] * 2
    for r in rows:
        assert r["stable_rank"] == pytest.approx(1.0) and r["effective_rank"] == pytest.approx(1.0)
        assert r["sv_2"] == pytest.approx(0.0, abs=1e-9) and len(r["singular_values"]) == r["rank"] == 4
        layer = dict(lora_modules(model))[r["module"]]
        dw = delta_w(layer).double().numpy()
        assert r["spectral"] == pytest.approx(np.linalg.norm(dw, 2), rel=1e-6)
        assert r["frobenius"] == pytest.approx(np.linalg.norm(dw, "fro"), rel=1e-6)


def test_module_kind_tells_the_two_output_dense_apart():
    assert module_kind("bert.encoder.layer.3.attention.output.dense") == "attn-out"
    assert module_kind("bert.encoder.layer.3.output.dense") == "ffn-out"
    assert module_kind("bert.encoder.layer.3.intermediate.dense") == "ffn-in"
    assert module_kind("bert.encoder.layer.0.attention.self.value") == "value"


@pytest.fixture
def bert_tiny_lora(bert_tiny):
    from mft_engine.train import FinetuneConfig, get_method

    cfg = FinetuneConfig.of(method="lora", model="bert-tiny-random", lora_rank=4, lora_placement="attn-qkv")
    torch.manual_seed(0)
    return get_method("lora").prepare(bert_tiny[0], cfg).model
