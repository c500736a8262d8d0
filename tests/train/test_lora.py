"""LoRA through PEFT on bert-tiny-random: placements matched by full module path, exact trainable counts,
the classifier head trained and stored with the adapter, save → load → identical predictions, merging."""
from __future__ import annotations

import pytest
import torch

from mft_engine.errors import ConfigError
from mft_engine.train import FinetuneConfig, get_method
from mft_engine.train.lora import matched_modules

from ..conftest import synthetic_batch

RANK = 4
HEAD = 128 * 2 + 2
SQUARE = RANK * (128 + 128)     # one 128 × 128 linear
FFN = RANK * (128 + 512)        # intermediate (128 → 512) or output (512 → 128)
EXPECTED = {
    "attn-qkv": 2 * 3 * SQUARE + HEAD,
    "attn-full": 2 * 4 * SQUARE + HEAD,
    "ffn-only": 2 * 2 * FFN + HEAD,
    "full": 2 * (4 * SQUARE + 2 * FFN) + HEAD,
}


def _lora(model, placement="attn-qkv", **kw):
    cfg = FinetuneConfig.of(method="lora", model="bert-tiny-random", lora_rank=RANK, lora_placement=placement, **kw)
    m = get_method("lora")
    torch.manual_seed(0)
    return m, m.prepare(model, cfg)


def _inputs(seed=0):
    b = synthetic_batch(5, 12, seed=seed, vocab=1000)
    b.pop("labels")
    return b


def test_placements_match_full_module_paths(bert_tiny):
    model = bert_tiny[0]
    attn_out = "bert.encoder.layer.0.attention.output.dense"
    ffn_out = "bert.encoder.layer.0.output.dense"
    qkv = matched_modules(model, "attn-qkv")
    assert [n.rsplit(".", 1)[1] for n in qkv] == ["query", "key", "value"] * 2
    full_attn = matched_modules(model, "attn-full")
    assert attn_out in full_attn and ffn_out not in full_attn
    ffn = matched_modules(model, "ffn-only")
    assert ffn_out in ffn and attn_out not in ffn
    assert ffn == ["bert.encoder.layer.0.intermediate.dense", ffn_out,
                   "bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"]
    assert sorted(matched_modules(model, "full")) == sorted(full_attn + ffn)
    assert not any("pooler" in n or "classifier" in n for n in matched_modules(model, "full"))


@pytest.mark.parametrize("placement", list(EXPECTED))
def test_trainable_counts_per_placement(bert_tiny, placement):
    expected_modules = set(matched_modules(bert_tiny[0], placement))
    m, prep = _lora(bert_tiny[0], placement)  # wraps the model in place
    assert m.trainable_params(prep.model) == EXPECTED[placement]
    adapted = {n.split("base_model.model.", 1)[1].rsplit(".lora_A", 1)[0]
               for n, _ in prep.model.named_parameters() if ".lora_A." in n}
    assert adapted == expected_modules == set(prep.notes["lora_modules"])
    trainable = [n for n, p in prep.model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert sorted(trainable) == ["base_model.model.classifier.modules_to_save.default.bias",
                                 "base_model.model.classifier.modules_to_save.default.weight"]
    # what is stored: the adapter matrices and the head, nothing else
    assert m.stored_bytes(prep.model) == 4 * EXPECTED[placement]


def test_save_load_gives_identical_predictions(bert_tiny, _bert_tiny_random, tmp_path):
    import copy

    m, prep = _lora(bert_tiny[0], "full")
    model = prep.model
    with torch.no_grad():  # a trained adapter and head: LoRA's B starts at 0, so move everything
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    x = _inputs()
    before = model(**x).logits
    m.save(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = m.load(copy.deepcopy(_bert_tiny_random.model), tmp_path / "adapter")
    after = loaded(**x).logits
    assert torch.equal(before, after)
    base = copy.deepcopy(_bert_tiny_random.model)
    assert not torch.allclose(base(**x).logits, after)  # the adapter and head changed something

    merged = m.merged_model(model)
    assert type(merged).__name__ == "BertForSequenceClassification"
    torch.testing.assert_close(merged.eval()(**x).logits, before, rtol=1e-5, atol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters())  # the trained model is left wrapped


@pytest.mark.parametrize("kw,needle", [({"lora_placement": "mlp"}, "attn-qkv, attn-full, ffn-only, full"),
                                        ({"lora_rank": 0}, "--lora-rank 0"),
                                        ({"lora_rank": -2}, "--lora-rank -2"),
                                        ({"lora_dropout": 1.0}, "--lora-dropout")])
def test_bad_lora_options(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        FinetuneConfig.of(method="lora", **kw)
