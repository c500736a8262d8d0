"""Checkpoints at target accuracy: the bookkeeping (reached, overshot, never reached, dense validation) and
a tiny run whose checkpoint folders load with load_model and `mft run --model DIR`."""
from __future__ import annotations

import json

import pytest

from mft_engine.cli import main
from mft_engine.data import eval_batches, load_task, tokenize_split, validation_halves
from mft_engine.evaluate import evaluate_model
from mft_engine.models import load_model
from mft_engine.train import CheckpointTargets, FinetuneConfig, finetune
from mft_engine.train.checkpoints import target_dirname


def test_targets_reached_overshot_and_never_reached():
    t = CheckpointTargets([0.85, 0.6, 0.75, 0.9], tolerance=0.02, dense_until=0.8)
    assert t.dense() and t.pending
    assert t.observe(1, 0.55) == []
    assert [r.target for r in t.observe(2, 0.62)] == [0.6]      # 2 points above: still reached
    assert t.dense()
    assert t.observe(3, 0.80) == []                              # 0.75 passed by 5 points
    assert not t.dense()                                         # only 0.85 and 0.9 remain
    assert [r.target for r in t.observe(9, 0.86)] == [0.85]
    d = t.to_dict()
    assert d["reached"] == [0.6, 0.85] and d["not_reached"] == [0.75, 0.9]
    by = {r["target"]: r for r in d["targets"]}
    assert by[0.6]["step"] == 2 and by[0.6]["scoring_accuracy"] == 0.62
    assert by[0.75]["step"] == 3 and "overshot" in by[0.75]["note"] and not by[0.75]["reached"]
    assert by[0.9]["step"] is None and by[0.9]["note"] == "never reached"
    assert target_dirname(0.6) == "acc_0.60" and target_dirname(0.875) == "acc_0.875"


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2", "0.6,nan"])
def test_targets_outside_the_unit_interval(value):
    from mft_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--save-at"):
        FinetuneConfig.of(save_at=value)


def _scoring_accuracy(folder, glue, seed):
    lm = load_model(str(folder), 2)
    val = load_task("sst2", "validation", glue)
    tokens = tokenize_split(lm.tokenizer, val, None, max_length=128)
    scoring, _ = validation_halves(len(val), seed)
    m = evaluate_model(lm.model, eval_batches(tokens, scoring, val.labels, False, 8192),
                       [val.labels[r] for r in scoring], 2)
    return type(lm.model).__name__, m["accuracy"]


def test_checkpoints_at_target_accuracy(keyword_glue, tmp_path, capsys):
    cfg = FinetuneConfig.of(method="full", model="bert-tiny-random", data_dir=str(keyword_glue), max_steps=40,
                         batch_size=16, lr=1e-3, save_at="0.6,0.95", save_tolerance=0.5, eval_every=10,
                         save_model=False, out=str(tmp_path / "results"))
    result = finetune(cfg)
    saved = json.loads((result.out_dir / "checkpoints.json").read_text())
    assert saved["reached"] == [0.6] and saved["not_reached"] == [0.95]
    row = saved["targets"][0]
    assert row["path"] == "checkpoints/acc_0.60" and 0.6 <= row["scoring_accuracy"] <= 1.0
    assert 0.0 <= row["evaluation_accuracy"] <= 1.0 and row["step"] >= 1
    assert saved["targets"][1]["note"] == "never reached"
    # while 0.6 was pending, every step was validated
    steps = [v["step"] for v in result.record["validations"]]
    assert steps[:row["step"]] == list(range(1, row["step"] + 1))
    folder = result.out_dir / row["path"]
    assert (folder / "config.json").is_file() and (folder / "mft_checkpoint.json").is_file()
    assert _scoring_accuracy(folder, keyword_glue, cfg.data.seed) == ("BertForSequenceClassification",
                                                                 row["scoring_accuracy"])
    assert result.checkpoints[0].path == str(folder)
    code = main(["run", "--model", str(folder), "--data-dir", str(keyword_glue), "--samples", "8",
                 "--batch-size", "4", "--quiet", "--no-control", "--out", str(tmp_path / "mft")])
    assert code == 0, capsys.readouterr().err


def test_lora_checkpoint_is_a_merged_plain_model(keyword_glue, tmp_path):
    cfg = FinetuneConfig.of(method="lora", model="bert-tiny-random", data_dir=str(keyword_glue), max_steps=3,
                         batch_size=16, save_at="0.01", save_tolerance=0.99, lora_rank=2, save_model=False,
                         out=str(tmp_path / "results"))
    result = finetune(cfg)
    (row,) = result.record["checkpoints"]["targets"]
    assert row["reached"] and row["step"] == 1
    kind, acc = _scoring_accuracy(result.out_dir / row["path"], keyword_glue, cfg.data.seed)
    assert kind == "BertForSequenceClassification" and acc == row["scoring_accuracy"]
    assert not list((result.out_dir / row["path"]).glob("adapter_*"))


def test_save_steps_bookkeeping():
    t = CheckpointTargets([0.9], tolerance=0.02, dense_until=0.8, steps=[5, 3])
    assert t.pending and not t.dense() and t.saves_at(3) and not t.saves_at(4)
    (r,) = t.observe(3, 0.55)                     # saved whatever the accuracy
    assert (r.step, r.saved, r.scoring_accuracy, r.folder) == (3, True, 0.55, "step_3")
    assert not t.saves_at(3) and t.observe(4, 0.6) == []
    assert [x.folder for x in t.observe(5, 0.91)] == ["step_5", "acc_0.90"]
    assert not t.pending
    d = t.to_dict()
    assert [s["step"] for s in d["steps"]] == [3, 5] and d["reached"] == [0.9]
    unsaved = CheckpointTargets([], steps=[7]).to_dict()["steps"][0]
    assert not unsaved["saved"] and "ended before" in unsaved["note"]


@pytest.mark.parametrize("kwargs,match", [({"save_steps": "0"}, "--save-steps"), ({"save_steps": "3,x"}, "--save-steps"),
                                          ({"stop_when_saved": True}, "--stop-when-saved")])
def test_save_steps_bad_values(kwargs, match):
    from mft_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        FinetuneConfig.of(**kwargs)


def test_save_steps_and_stop_when_saved(keyword_glue, tmp_path):
    from mft_engine.experiments.influence_sweep import InfluenceConfig

    cfg = FinetuneConfig.of(method="full", model="bert-tiny-random", data_dir=str(keyword_glue), max_steps=40,
                            batch_size=16, lr=1e-3, save_steps="2,4", stop_when_saved=True, save_model=False,
                            out=str(tmp_path / "results"))
    result = finetune(cfg)
    tr = result.record["training"]
    assert tr["steps"] == 4 and tr["stopped_when_saved"] and tr["total_steps"] == 40
    # the schedule still spans 40 steps: the learning rate at step 4 is that of the whole run's step 4
    assert result.record["learning_rate"][:4] == pytest.approx([1e-3 * (i + 1) / 5 for i in range(4)])
    saved = json.loads((result.out_dir / "checkpoints.json").read_text())
    assert saved["targets"] == [] and [s["step"] for s in saved["steps"] if s["saved"]] == [2, 4]
    row = saved["steps"][1]
    folder = result.out_dir / row["path"]
    assert json.loads((folder / "mft_checkpoint.json").read_text())["saved_at_step"] == 4
    assert _scoring_accuracy(folder, keyword_glue, cfg.data.seed)[1] == row["scoring_accuracy"]
    assert "step 4" in (result.out_dir / "summary.txt").read_text()
    listed = InfluenceConfig.of(checkpoints=str(result.out_dir)).checkpoint_list()
    assert listed == [("step_2", str(result.out_dir / "checkpoints/step_2")),
                      ("step_4", str(result.out_dir / "checkpoints/step_4"))]
