"""Full, BitFit and freeze on bert-tiny-random: exact trainable counts, bias groups, per-group learning
rates and bias clipping, stored parameters and their save/load; the method registry."""
from __future__ import annotations

import pytest
import torch

from mft_engine.errors import ConfigError, ModelError
from mft_engine.train import FinetuneConfig, Method, get_method, method_names, register_method
from mft_engine.train.bitfit import bias_group

from ..conftest import synthetic_batch, tiny_bert

# bert-tiny-random: vocab 30,522, 512 positions, 2 layers, hidden 128, intermediate 512, 2 labels.
TOTAL = 4_386_178
LAYER = 198_272           # one encoder layer
POOLER_AND_HEAD = 16_512 + 258


def _prepare(model, method, **kw):
    cfg = FinetuneConfig.of(method=method, model="bert-tiny-random", **kw)
    m = get_method(method)
    return m, m.prepare(model, cfg), cfg


def test_registry_names_and_unknown_method():
    assert {"full", "bitfit", "lora", "freeze"} <= set(method_names())
    with pytest.raises(ConfigError, match="bitfit, freeze, full, learned-mask, lora"):
        get_method("qlora-ish")
    with pytest.raises(ConfigError, match="registered"):
        FinetuneConfig.of(method="adapter")


def test_register_rejects_bad_and_duplicate_names():
    class Upper(Method):
        name = "Full"

    class Again(Method):
        name = "full"

    with pytest.raises(ConfigError, match="lowercase"):
        register_method(Upper)
    with pytest.raises(ConfigError, match="already registered"):
        register_method(Again)


def test_full_trains_everything(bert_tiny):
    m, prep, _ = _prepare(bert_tiny[0], "full")
    assert m.trainable_params(prep.model) == TOTAL
    assert m.stored_bytes(prep.model) == 4 * TOTAL


def test_bitfit_default_trains_3074_biases_and_not_the_classifier_weight(bert_tiny):
    m, prep, _ = _prepare(bert_tiny[0], "bitfit")
    assert m.trainable_params(prep.model) == 3074
    trainable = {n for n, p in prep.model.named_parameters() if p.requires_grad}
    assert all(n.endswith(".bias") for n in trainable)
    assert "classifier.bias" in trainable and "classifier.weight" not in trainable
    assert "bert.embeddings.LayerNorm.bias" in trainable
    # 128 embedding LN + 2 × (3·128 qkv + 128 attn out + 2·128 LN + 512 + 128) + 128 pooler + 2 classifier
    assert prep.notes["trainable_per_group"] == {"layernorm": 128 + 2 * 256, "attention": 2 * 512,
                                                 "feed-forward": 2 * 640, "pooler": 128, "classifier": 2}
    assert m.stored_bytes(prep.model) == 4 * 3074


def test_bitfit_head_and_group_selection(bert_tiny):
    model = bert_tiny[0]
    m, prep, _ = _prepare(model, "bitfit", bitfit_head=True)
    assert m.trainable_params(prep.model) == 3074 + 256
    m, prep, _ = _prepare(model, "bitfit", bitfit_groups="attention,classifier")
    assert m.trainable_params(prep.model) == 2 * 512 + 2
    assert {g["name"] for g in prep.param_groups} == {"attention", "classifier"}


def test_bias_groups_tell_attention_output_from_ffn_output():
    assert bias_group("bert.encoder.layer.0.attention.output.dense.bias") == "attention"
    assert bias_group("bert.encoder.layer.0.output.dense.bias") == "feed-forward"
    assert bias_group("bert.encoder.layer.1.attention.self.key.bias") == "attention"
    assert bias_group("bert.encoder.layer.1.intermediate.dense.bias") == "feed-forward"
    assert bias_group("bert.encoder.layer.0.attention.output.LayerNorm.bias") == "layernorm"
    assert bias_group("bert.embeddings.LayerNorm.bias") == "layernorm"
    assert bias_group("bert.pooler.dense.bias") == "pooler"
    assert bias_group("classifier.bias") == "classifier"


def test_bitfit_group_learning_rates_reach_the_optimizer(bert_tiny):
    from mft_engine.train.loop import build_optimizer

    _, prep, cfg = _prepare(bert_tiny[0], "bitfit", lr=1e-3, bitfit_lr="attention=3e-3,classifier=2e-3")
    opt = build_optimizer(prep.param_groups, cfg.lr, cfg.weight_decay)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["attention (no decay)"] == 3e-3 and lrs["classifier (no decay)"] == 2e-3
    assert lrs["feed-forward (no decay)"] == 1e-3
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)  # biases are never decayed


@pytest.mark.parametrize("bad,needle", [("bitfit_groups", "--bitfit-groups"), ("bitfit_lr", "--bitfit-lr")])
def test_bitfit_bad_options(bad, needle):
    value = {"bitfit_groups": "attention,embeddings", "bitfit_lr": "attention:1e-3"}[bad]
    with pytest.raises(ConfigError, match=needle):
        FinetuneConfig.of(method="bitfit", **{bad: value})


def test_bitfit_clip_bounds_the_bias_gradient_norm():
    model = tiny_bert()
    m, prep, cfg = _prepare(model, "bitfit", bitfit_clip=1e-3)
    prep.model.train()
    prep.model(**synthetic_batch(8, 10, seed=0)).loss.backward()
    biases = [p for p in prep.model.parameters() if p.requires_grad]
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in biases])) > 1e-3
    m.clip_gradients(prep.model, cfg)
    assert float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in biases]))) <= 1e-3 * (1 + 1e-5)


@pytest.mark.parametrize("k,expected", [(0, 2 * LAYER + POOLER_AND_HEAD), (1, LAYER + POOLER_AND_HEAD),
                                        (2, POOLER_AND_HEAD)])
def test_freeze_counts(bert_tiny, k, expected):
    m, prep, _ = _prepare(bert_tiny[0], "freeze", freeze_layers=k)
    assert m.trainable_params(prep.model) == expected
    assert not any(p.requires_grad for n, p in prep.model.named_parameters() if "embeddings" in n)


def test_freeze_more_layers_than_the_model_has(bert_tiny):
    with pytest.raises(ConfigError, match="--freeze-layers 3 exceeds the model's 2"):
        _prepare(bert_tiny[0], "freeze", freeze_layers=3)


def test_stored_parameters_round_trip(tmp_path):
    model = tiny_bert(seed=1)
    m, prep, _ = _prepare(model, "bitfit")
    with torch.no_grad():
        for p in prep.model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    m.save(prep.model, tmp_path / "stored")
    fresh = m.load(tiny_bert(seed=1), tmp_path / "stored")
    batch = synthetic_batch(6, 9, seed=3)
    batch.pop("labels")
    prep.model.eval()
    assert torch.equal(prep.model(**batch).logits, fresh(**batch).logits)
    with pytest.raises(ModelError, match="not 'full'"):
        get_method("full").load(tiny_bert(seed=1), tmp_path / "stored")
    with pytest.raises(ModelError, match="does not fit"):
        m.load(tiny_bert(num_labels=3, seed=1), tmp_path / "stored")
