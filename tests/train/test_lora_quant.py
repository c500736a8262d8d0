"""lora8 and qlora (LoRA over a bitsandbytes 8-bit / 4-bit NF4 base) on bert-tiny-random: the same trainable and
stored counts as LoRA, the head an unquantized nn.Linear that trains, save → load → identical predictions, a
merged fp32 checkpoint model, loss going down in a few steps, a whole `finetune` run; and the one-line errors when
bitsandbytes is missing, too old or cannot run on the device (these run without bitsandbytes too)."""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from mft_engine._optional import has_bitsandbytes
from mft_engine.cli import main
from mft_engine.errors import ConfigError
from mft_engine.train import FinetuneConfig, get_method, lora_quant
from mft_engine.train.lora import matched_modules

from ..cli.test_bad_input import assert_clean_failure
from .test_lora import EXPECTED, RANK, _inputs

QUANT = ["lora8", "qlora"]
BNB_LINEAR = {"lora8": "Linear8bitLt", "qlora": "Linear4bit"}


@pytest.fixture(scope="session")
def bnb_cpu():
    """Skips unless bitsandbytes imports and both methods' quantized layers run on this CPU."""
    if not has_bitsandbytes():
        pytest.skip("bitsandbytes>=0.50 is not installed")
    for name in QUANT:
        try:
            get_method(name).require_bitsandbytes(torch.device("cpu"))
        except ConfigError as e:
            pytest.skip(str(e))


def _prepare(model, method, placement="attn-qkv"):
    cfg = FinetuneConfig.of(method=method, model="bert-tiny-random", lora_rank=RANK, lora_placement=placement)
    m = get_method(method)
    torch.manual_seed(0)
    return m, m.prepare(model, cfg)


def _inner(prep):
    return prep.model.get_base_model()


@pytest.mark.parametrize("placement", ["attn-qkv", "full"])
@pytest.mark.parametrize("method", QUANT)
def test_trainable_and_stored_counts_equal_lora(bnb_cpu, bert_tiny, method, placement):
    expected_modules = matched_modules(bert_tiny[0], placement)
    m, prep = _prepare(bert_tiny[0], method, placement)
    assert m.trainable_params(prep.model) == EXPECTED[placement]          # adapters + head, as LoRA
    assert m.stored_bytes(prep.model) == 4 * EXPECTED[placement]
    assert prep.notes["lora_modules"] == expected_modules
    inner = _inner(prep)
    for name in expected_modules:  # the adapted layers sit on quantized bases
        assert type(inner.get_submodule(name).base_layer).__name__ == BNB_LINEAR[method]
    # every encoder linear is quantized (2 layers × 6); the pooler and the head are not
    assert prep.notes["quantization"]["quantized_linear_layers"] == 12
    assert type(inner.bert.pooler.dense) is torch.nn.Linear
    assert m.gradient_checkpointing is True and prep.notes["gradient_checkpointing"] is True
    assert get_method(method).gradient_checkpointing is True  # the class default, before any run


@pytest.mark.parametrize("method", QUANT)
def test_head_is_an_unquantized_linear_and_trains(bnb_cpu, bert_tiny, method):
    _, prep = _prepare(bert_tiny[0], method)
    head = _inner(prep).classifier.modules_to_save["default"]
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    assert head.weight.requires_grad and head.bias.requires_grad
    query = _inner(prep).bert.encoder.layer[0].attention.self.query
    base_before = query.base_layer.weight.detach().clone()
    head_before = head.weight.detach().clone()
    batch = _inputs()
    batch["labels"] = torch.tensor([0, 1, 0, 1, 1])
    opt = torch.optim.AdamW([p for g in prep.param_groups for p in g["params"]], lr=1e-2)
    prep.model.train()
    prep.model(**batch).loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert query.lora_B["default"].weight.grad.abs().sum() > 0  # gradients reach the lowest layer's adapter
    opt.step()
    assert not torch.equal(head.weight, head_before)
    assert torch.equal(query.base_layer.weight, base_before)  # the quantized base stays frozen


@pytest.mark.parametrize("method", QUANT)
def test_save_load_gives_identical_predictions(bnb_cpu, bert_tiny, _bert_tiny_random, tmp_path, method):
    m, prep = _prepare(bert_tiny[0], method, "full")
    model = prep.model
    with torch.no_grad():  # a trained adapter and head: LoRA's B starts at 0, so move everything
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    x = _inputs()
    with torch.no_grad():
        before = model(**x).logits
    m.save(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = m.load(copy.deepcopy(_bert_tiny_random.model), tmp_path / "adapter")
    with torch.no_grad():
        after = loaded(**x).logits
        again = model(**x).logits
        base = _bert_tiny_random.model(**x).logits
    assert torch.equal(before, after)
    assert torch.equal(before, again)  # saving left the trained model as it was
    assert not torch.allclose(base, after)

    merged = m.merged_model(model)  # the plain fp32 model behind --save-at checkpoints
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert not any(type(mod).__module__.startswith(("bitsandbytes", "peft")) for mod in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    with torch.no_grad():
        merged_logits = merged(**x).logits
        assert torch.equal(model(**x).logits, before)  # the trained model is left wrapped and quantized
    # equal up to the quantized layers' compute precision, far closer than the base without the update
    assert (merged_logits - before).abs().max() < 0.1 * (base - before).abs().max()


@pytest.mark.parametrize("method", QUANT)
def test_a_few_steps_reduce_the_loss(bnb_cpu, bert_tiny, method):
    _, prep = _prepare(bert_tiny[0], method, "full")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (32, 10), generator=g)
    labels = torch.arange(32) % 2
    ids[:, 3] = torch.where(labels == 1, 2204, 2919)  # one token decides the label ("good" / "bad")
    opt = torch.optim.AdamW([p for grp in prep.param_groups for p in grp["params"]], lr=1e-2)
    prep.model.train()
    losses = []
    for _ in range(8):
        loss = prep.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_finetune_run_records_quantization_and_checkpointing(bnb_cpu, keyword_glue, tmp_path):
    from mft_engine.models import load_model
    from mft_engine.train import finetune

    cfg = FinetuneConfig.of(method="qlora", model="bert-tiny-random", data_dir=str(keyword_glue), max_steps=4,
                         batch_size=16, lora_rank=2, out=str(tmp_path))
    result = finetune(cfg)
    rec = result.record
    assert rec["gradient_checkpointing"] is True
    assert rec["method_notes"]["quantization"]["bits"] == 4
    assert result.trainable_params == 2 * 2 * 3 * (128 + 128) + 258
    x = _inputs()
    loaded = get_method("qlora").load(load_model("bert-tiny-random", 2, seed=cfg.data.seed).model,
                                      result.out_dir / "stored")
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, result.model(**x).logits)


# --- bitsandbytes missing, too old, or unable to run: one line, exit 2 (no bitsandbytes needed) ---------------

@pytest.mark.parametrize("method", QUANT)
def test_missing_bitsandbytes_is_one_clear_line(monkeypatch, method):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    assert not has_bitsandbytes()
    with pytest.raises(ConfigError, match=rf"--method {method} needs bitsandbytes: bitsandbytes>=0.50 is not "
                                          r"installed \(pip install"):
        get_method(method)
    with pytest.raises(ConfigError, match="needs bitsandbytes"):
        FinetuneConfig.of(method=method)


def test_too_old_bitsandbytes_is_named(monkeypatch):
    import importlib.metadata

    from mft_engine import _optional

    monkeypatch.setattr(_optional, "_found", lambda module: True)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "0.45.5")
    with pytest.raises(ConfigError, match=r"bitsandbytes 0\.45\.5 is installed but >=0\.50 is needed"):
        get_method("qlora")


def test_cli_without_bitsandbytes_exits_2(monkeypatch, keyword_glue, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    out = tmp_path / "results"
    code = main(["finetune", "--method", "qlora", "--model", "bert-tiny-random", "--data-dir", str(keyword_glue),
                 "--max-steps", "2", "--out", str(out), "--quiet"])
    assert_clean_failure(code, capsys.readouterr().err, out, "--method qlora needs bitsandbytes", "not installed")


def test_bitsandbytes_that_cannot_run_here_exits_2(bnb_cpu, monkeypatch, keyword_glue, tmp_path, capsys):
    def no_kernel(self, device):
        raise RuntimeError("no 4-bit kernel for this device\nsecond line")

    monkeypatch.setattr(lora_quant, "_RUNS_ON", {})
    monkeypatch.setattr(lora_quant.QLoRA, "_smoke_test", no_kernel)
    out = tmp_path / "results"
    code = main(["finetune", "--method", "qlora", "--model", "bert-tiny-random", "--data-dir", str(keyword_glue),
                 "--max-steps", "2", "--out", str(out), "--quiet"])
    assert_clean_failure(code, capsys.readouterr().err, out, "--method qlora: bitsandbytes",
                         "cannot run 4-bit layers on cpu (RuntimeError: no 4-bit kernel for this device)")
