"""learned-mask: exact per-tensor keep ratio after training (deterministic ties), gradients only on the
scores, the frozen weights unchanged, save → load → identical predictions, the untrained controls' keep
ratios, option validation, and `mft finetune --method learned-mask` recording the controls."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mft_engine.cli import main
from mft_engine.errors import ConfigError
from mft_engine.train import FinetuneConfig, get_method
from mft_engine.train.learned_mask import (
    ScoreMask,
    binary_masks,
    keep_count,
    masked_modules,
    to_mft_mask,
    top_k_mask,
)
from mft_engine.train.mask_baselines import baseline_masks, evaluate_baselines, row_l1_keep_mask

from ..cli.test_bad_input import assert_clean_failure
from ..conftest import synthetic_batch

# tiny_bert: 2 layers, hidden 32, intermediate 64 → per layer 4 × 32·32 + 2 × 32·64 weights
MASKED = 2 * (4 * 1024 + 2 * 2048)


def _prepare(model, **kw):
    cfg = FinetuneConfig.of(method="learned-mask", model="bert-tiny-random", **kw)
    m = get_method("learned-mask")
    return m, m.prepare(model, cfg)


def _train(prep, steps=6, lr=0.05, seed=0):
    opt = torch.optim.AdamW([p for g in prep.param_groups for p in g["params"]], lr=lr, weight_decay=0.0)
    prep.model.train()
    for s in range(steps):
        opt.zero_grad()
        prep.model(**synthetic_batch(16, 12, seed + s)).loss.backward()
        opt.step()
    prep.model.eval()


def test_top_k_mask_exact_count_and_ties_to_lower_index():
    s = torch.tensor([1.0, -2.0, 2.0, 2.0, 0.0, float("nan")])
    assert top_k_mask(s, 2).tolist() == [False, True, True, False, False, False]
    assert top_k_mask(s, 5).tolist() == [True, True, True, True, True, False]  # NaN ranks last
    assert top_k_mask(torch.ones(3, 4), 5).flatten().tolist() == [True] * 5 + [False] * 7
    assert top_k_mask(s, 6).all() and not top_k_mask(s, 0).any()
    assert keep_count(0.3, 10) == 3 and keep_count(0.7, 1024) == math.ceil(0.7 * 1024) and keep_count(1.0, 7) == 7


def test_keep_ratio_holds_per_tensor_after_training_and_only_scores_learn(tiny_model):
    base = copy.deepcopy(tiny_model)
    m, prep = _prepare(tiny_model, keep_ratio=0.3, lr=0.05)
    model = prep.model
    assert m.trainable_params(model) == MASKED and prep.notes["masked_weights"] == MASKED
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.endswith(".scores")}
    assert prep.param_groups[0]["weight_decay"] == 0.0
    start = binary_masks(model)
    # scores start at |W|: the initial mask is each tensor's magnitude mask
    for name, mask in start.items():
        w = dict(base.named_parameters())[name]
        assert torch.equal(mask, top_k_mask(w, keep_count(0.3, w.numel())))

    model.train()
    model(**synthetic_batch(8, 10, 0)).loss.backward()
    for n, p in model.named_parameters():
        if n.endswith(".scores"):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    model.zero_grad()

    _train(prep)
    end = binary_masks(model)
    assert sum(int((start[n] != end[n]).sum()) for n in end) > 0  # the mask did learn
    for name, mask in end.items():
        assert int(mask.sum()) == keep_count(0.3, mask.numel()), name
    base_params = dict(base.named_parameters())
    for n, p in model.named_parameters():
        if n.endswith(".scores"):
            continue
        plain = n.replace(".parametrizations.weight.original", ".weight")
        assert torch.equal(p, base_params[plain]), n
    # the forward is exactly W ⊙ m
    q = model.bert.encoder.layer[0].attention.self.query
    w0 = base.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(q.weight, w0 * end["bert.encoder.layer.0.attention.self.query.weight"])


def test_constant_init_starts_from_the_first_k_by_index(tiny_model):
    _, prep = _prepare(tiny_model, keep_ratio=0.5, mask_init="constant")
    for name, mask in binary_masks(prep.model).items():
        k = keep_count(0.5, mask.numel())
        assert mask.flatten()[:k].all() and not mask.flatten()[k:].any(), name


def test_save_load_gives_identical_predictions(tiny_model, tmp_path):
    base = copy.deepcopy(tiny_model)
    m, prep = _prepare(tiny_model, keep_ratio=0.6)
    _train(prep, steps=4)
    batch = {k: v for k, v in synthetic_batch(12, 10, 99).items() if k != "labels"}
    with torch.no_grad():
        want = prep.model(**batch).logits
    assert m.stored_bytes(prep.model) == sum(math.ceil(t.numel() / 8) for t in binary_masks(prep.model).values())
    m.save(prep.model, tmp_path / "stored")
    loaded = get_method("learned-mask").load(copy.deepcopy(base), tmp_path / "stored")
    assert binary_masks(loaded).keys() == binary_masks(prep.model).keys()
    for n, mask in binary_masks(loaded).items():
        assert torch.equal(mask, binary_masks(prep.model)[n])
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, want)
        # merged: a plain HF model; the mft Mask over the base model: the same predictions
        merged = m.merged_model(prep.model)
        assert not any(isinstance(mod, ScoreMask) for mod in merged.modules())
        assert torch.equal(merged(**batch).logits, want)
        plain = copy.deepcopy(base)
        mask = to_mft_mask(prep.model)
        assert len(mask) == MASKED - sum(keep_count(0.6, t.numel()) for t in binary_masks(prep.model).values())
        mask.apply(plain)
        assert torch.equal(plain(**batch).logits, want)
        mask.restore(plain)
        assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), base.parameters()))
        assert torch.equal(prep.model(**batch).logits, want)  # the live model is untouched by merging


def test_layer_and_module_selection(tiny_model):
    layer1 = masked_modules(tiny_model, "1", "all")
    assert len(layer1) == 6 and all(".layer.1." in p for p in layer1)
    qkv = masked_modules(tiny_model, "all", "attn-qkv")
    assert [p.rsplit(".", 1)[1] for p in qkv] == ["query", "key", "value"] * 2
    ffn = masked_modules(tiny_model, "0", "ffn-only")
    assert ffn == ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense"]
    assert masked_modules(tiny_model, "0,1", "*.attention.output.dense") == [
        f"bert.encoder.layer.{i}.attention.output.dense" for i in (0, 1)]
    _, prep = _prepare(tiny_model, mask_layers="1", mask_modules="intermediate")
    assert prep.notes["masked_modules"] == ["bert.encoder.layer.1.intermediate.dense"]
    with pytest.raises(ConfigError, match="--mask-layers 4 exceeds the model's 2 encoder layers"):
        masked_modules(tiny_model, "4,5", "all")
    with pytest.raises(ConfigError, match="select no linear layer"):
        masked_modules(tiny_model, "all", "nothing-like-this")


@pytest.mark.parametrize("kw,needle", [
    ({"keep_ratio": 0.0}, "--keep-ratio 0.0 is outside (0, 1]"),
    ({"keep_ratio": 1.5}, "outside (0, 1]"),
    ({"keep_ratio": -0.1}, "outside (0, 1]"),
    ({"keep_ratio": float("nan")}, "outside (0, 1]"),
    ({"mask_layers": "a,b"}, "--mask-layers"),
    ({"mask_layers": "-1"}, "--mask-layers"),
    ({"mask_modules": " "}, "--mask-modules is empty"),
    ({"mask_init": "gaussian"}, "--mask-init 'gaussian'"),
])
def test_bad_options(kw, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        FinetuneConfig.of(method="learned-mask", **kw)


def test_baselines_keep_the_same_count_per_tensor(tiny_model):
    paths = masked_modules(tiny_model, "all", "all")
    masks = baseline_masks(tiny_model, paths, 0.3, seed=3)
    assert set(masks) == {"magnitude", "random", "row-l1"}
    weights = {n: p.detach() for n, p in tiny_model.named_parameters()}
    for kind, per in masks.items():
        for name, m in per.items():
            assert int(m.sum()) == keep_count(0.3, m.numel()), (kind, name)
    assert all(torch.equal(a, b) for a, b in zip(baseline_masks(tiny_model, paths, 0.3, seed=3)["random"].values(),
                                                 masks["random"].values()))
    assert any(not torch.equal(a, b) for a, b in zip(baseline_masks(tiny_model, paths, 0.3, seed=4)["random"].values(),
                                                     masks["random"].values()))
    for name, m in masks["row-l1"].items():
        per_row = m.sum(1)
        assert int(per_row.max() - per_row.min()) <= 1
        a = weights[name].abs()
        for r in range(m.shape[0]):
            kept, dropped = a[r][m[r]], a[r][~m[r]]
            if kept.numel() and dropped.numel():
                assert kept.min() >= dropped.max()
    # exact rows when the keep ratio divides the row length
    w = torch.tensor([[3.0, -1.0, 2.0, 2.0], [0.5, 0.1, -0.2, 0.4]])
    assert row_l1_keep_mask(w, 0.5).tolist() == [[True, False, True, False], [True, False, False, True]]


def test_evaluate_baselines_restores_the_weights(tiny_model):
    before = [p.detach().clone() for p in tiny_model.parameters()]
    paths = masked_modules(tiny_model, "0", "attn-qkv")
    batch = synthetic_batch(8, 10, 5)

    def evaluate(model):
        with torch.no_grad():
            return {"metrics": {"loss": float(model(**batch).loss)}}

    out = evaluate_baselines(tiny_model, paths, 0.25, evaluate, seed=0)
    assert set(out) == {"dense", "magnitude", "random", "row-l1"}
    assert out["dense"]["keep_ratio"] == 1.0
    for kind in ("magnitude", "random", "row-l1"):
        assert out[kind]["keep_ratio"] == 0.25 and out[kind]["kept"] == 3 * 256 and out[kind]["masked_weights"] == 3072
        assert out[kind]["metrics"]["loss"] != out["dense"]["metrics"]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))


def test_finetune_records_baselines(keyword_glue, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["finetune", "--method", "learned-mask", "--model", "bert-tiny-random", "--data-dir", str(keyword_glue),
                 "--max-steps", "3", "--batch-size", "16", "--keep-ratio", "0.5", "--mask-layers", "1",
                 "--mask-modules", "attn-full", "--lr", "1e-3", "--out", str(out), "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    brief = json.loads(cap.out)
    # bert-tiny-random layer 1: q, k, v, attention output, each 128 × 128
    assert brief["trainable_params"] == 4 * 128 * 128
    assert brief["stored_bytes"] == 4 * 128 * 128 // 8
    rec = json.loads((tmp_path / brief["out_dir"] / "results.json").read_text())
    assert set(rec["baselines"]) == {"dense", "magnitude", "random", "row-l1"}
    for kind in ("magnitude", "random", "row-l1"):
        assert rec["baselines"][kind]["keep_ratio"] == 0.5
        assert "accuracy" in rec["baselines"][kind]["metrics"] and "accuracy" in rec["baselines"][kind]["metrics_whole"]
    assert rec["method_notes"]["kept_weights"] == 4 * 128 * 64
    assert rec["config"]["keep_ratio"] == 0.5 and rec["config"]["mask_layers"] == "1"
    assert "untrained controls" in (tmp_path / brief["out_dir"] / "summary.txt").read_text()
    meta = json.loads((tmp_path / brief["out_dir"] / "stored" / "method.json").read_text())
    assert meta["method"] == "learned-mask" and len(meta["shapes"]) == 4


@pytest.mark.parametrize("args,needles", [
    (["--keep-ratio", "0"], ["--keep-ratio 0.0", "outside (0, 1]"]),
    (["--keep-ratio", "1.01"], ["outside (0, 1]"]),
    (["--mask-layers", "4,5"], ["--mask-layers 4", "2 encoder layers"]),
])
def test_bad_cli_input(keyword_glue, tmp_path, capsys, args, needles):
    out = tmp_path / "results"
    code = main(["finetune", "--method", "learned-mask", "--model", "bert-tiny-random", "--data-dir", str(keyword_glue),
                 "--max-steps", "2", "--quiet", "--out", str(out), *args])
    assert_clean_failure(code, capsys.readouterr().err, out, *needles)
