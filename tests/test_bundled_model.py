"""`--model minilm-sst2`: the fine-tuned SST-2 delta shipped in the package, merged into MiniLM at load."""
from __future__ import annotations

import copy

import pytest
import torch

from mft_engine.errors import ModelError
from mft_engine.models import load_model
from mft_engine.models.delta import (BUNDLED_DELTAS, MAX_BUNDLED_BYTES, bundled_path, extract_delta, merge_delta,
                                     read_delta, save_delta)


def test_the_bundled_delta_is_small_fp16_and_says_how_it_was_made():
    path = bundled_path("minilm-sst2")
    assert path.is_file() and path.stat().st_size <= MAX_BUNDLED_BYTES
    tensors, meta = read_delta(path)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(tensors)
    assert sum(k.endswith(".lora_A") for k in tensors) == 36  # 6 layers x (q, k, v, o, intermediate, output)
    for key in ("train_command", "train_commit", "whole_dev_accuracy", "base_sha256", "id2label", "scaling"):
        assert key in meta, key
    assert "mft finetune --method lora --lora-placement full" in meta["train_command"]
    assert (path.parent / "README.md").is_file()


def test_merge_equals_peft_merge_and_unload():
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=100, num_labels=2)).eval()
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                          target_modules=r".*\.(query|value|dense)"))
    with torch.no_grad():  # B starts at zero: give the adapters and the head something to merge
        for n, p in peft.named_parameters():
            if "lora_" in n or "classifier" in n:
                p.add_(torch.randn_like(p).to(torch.float16).float() * 0.1)
    tensors, lora = extract_delta(peft)
    assert lora == {"scaling": 2.0, "rank": 4}
    want = copy.deepcopy(peft).merge_and_unload()
    got = merge_delta(copy.deepcopy(base), tensors, lora)
    for (n, a), (_, b) in zip(want.named_parameters(), got.named_parameters()):
        assert torch.allclose(a, b, atol=2e-3), n


def test_a_delta_that_does_not_fit_is_one_line(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, vocab_size=100, num_labels=2))
    with pytest.raises(ModelError, match="classifier.weight does not fit"):
        merge_delta(model, {"classifier.weight": torch.zeros(3, 32, dtype=torch.float16)}, {"scaling": 1.0})
    bad = tmp_path / "x.safetensors"
    save_delta(bad, {"a": torch.zeros(1, dtype=torch.float16)}, {"scaling": 1.0})
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable delta"):
        read_delta(bad)


def test_minilm_sst2_loads_merged_with_named_labels_and_refuses_other_heads():
    assert "minilm-sst2" in BUNDLED_DELTAS
    lm = load_model("minilm-sst2", 2)
    base = load_model("minilm", 2)
    assert lm.kind == "bundled" and "fine-tuned sst2 delta" in lm.source
    assert lm.model.config.id2label == {0: "negative", 1: "positive"}
    q = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(lm.model.get_parameter(q), base.model.get_parameter(q))
    e = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(lm.model.get_parameter(e), base.model.get_parameter(e))  # only what the delta holds changes
    enc = lm.tokenizer(["a gripping, moving film", "dull, slow and lifeless"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert lm.model(**enc).logits.argmax(-1).tolist() == [1, 0]
    with pytest.raises(ModelError, match="2-class sst2 classifier; the task has 3 labels"):
        load_model("minilm-sst2", 3)
    with pytest.raises(ModelError, match="regression"):
        load_model("minilm-sst2", 1, problem_type="regression")


def test_minilm_random_has_minilm_s_shapes_and_random_weights():
    """minilm-random stands in for minilm where its weights are not installed (a lent GPU): the same
    parameter names and shapes, other values."""
    base, rand = load_model("minilm", 2).model, load_model("minilm-random", 2).model
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes(rand) == shapes(base)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(dict(rand.named_parameters())[name], dict(base.named_parameters())[name])
