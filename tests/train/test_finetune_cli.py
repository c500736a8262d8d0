"""`mft finetune` and `mft_engine.finetune`: bad input fails cleanly (one line, exit 2, no results folder),
--json carries the headline figures, and the results folder holds what results.json promises."""
from __future__ import annotations

import json

import pytest

import mft_engine
from mft_engine.cli import main

from ..cli.test_bad_input import assert_clean_failure
from ..conftest import tiny_bert

TINY = ["--model", "bert-tiny-random", "--max-steps", "6", "--batch-size", "16", "--quiet"]


def _cli(args, capsys):
    code = main(["finetune", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("args,needles", [
    (["--method", "adapter"], ["'adapter'", "bitfit, freeze, full, learned-mask, lora"]),
    (["--method", "lora", "--lora-placement", "mlp"], ["--lora-placement 'mlp'", "attn-qkv"]),
    (["--method", "lora", "--lora-rank", "0"], ["--lora-rank 0"]),
    (["--method", "lora", "--lora-rank", "-1"], ["--lora-rank -1"]),
    (["--save-at", "0.6,1.5"], ["1.5", "outside (0, 1]"]),
    (["--save-at", "0"], ["outside (0, 1]"]),
    (["--method", "bitfit", "--bitfit-groups", "embeddings"], ["--bitfit-groups"]),
    (["--method", "freeze", "--freeze-layers", "5"], ["--freeze-layers 5", "2 encoder layers"]),
    (["--lr", "0"], ["--lr 0"]),
])
def test_bad_input(keyword_glue, tmp_path, capsys, args, needles):
    out = tmp_path / "results"
    code, _, err = _cli([*TINY, "--data-dir", str(keyword_glue), "--out", str(out), *args], capsys)
    assert_clean_failure(code, err, out, *needles)


def test_labels_that_do_not_match_the_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    tiny_bert(num_labels=2).save_pretrained(str(ckpt))
    capsys.readouterr()  # transformers' "Writing model shards" bar
    task = tmp_path / "three"
    task.mkdir()
    rows = "text,label\n" + "".join(f"row {i},{'abc'[i % 3]}\n" for i in range(9))
    (task / "train.csv").write_text(rows)
    (task / "dev.csv").write_text(rows)
    out = tmp_path / "results"
    code, _, err = _cli(["--model", str(ckpt), "--task", str(task), "--out", str(out), "--quiet"], capsys)
    assert_clean_failure(code, err, out, "has 2 labels but the task has 3")


def test_json_and_results_folder(keyword_glue, tmp_path, capsys):
    out = tmp_path / "results"
    code, stdout, err = _cli([*TINY, "--method", "bitfit", "--precision", "bf16", "--data-dir", str(keyword_glue),
                              "--out", str(out), "--json"], capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    for key in ("method", "trainable_params", "total_params", "train_s", "peak_mem_bytes", "metrics", "out_dir"):
        assert key in brief
    assert brief["method"] == "bitfit" and brief["trainable_params"] == 3074 and brief["total_params"] == 4_386_178
    assert set(brief["metrics"]) == {"accuracy"} and brief["peak_mem_bytes"] > 2**20 and brief["train_s"] > 0
    assert brief["stored_bytes"] == 4 * 3074
    run = out / brief["out_dir"].rsplit("/", 1)[1]
    assert run.name.startswith("finetune_bitfit_") and run.is_dir()
    for name in ("results.json", "summary.txt", "training_loss.png", "logs/run.log", "stored/method.json"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints.json").exists()
    rec = json.loads((run / "results.json").read_text())
    assert rec["config"]["precision"] == "bf16" and rec["config"]["lr"] == 1e-3  # BitFit's default lr
    assert len(rec["training_loss"]) == 6 == rec["training"]["steps"]
    assert rec["data"]["n_scoring_half"] + rec["data"]["n_evaluation_half"] == rec["data"]["n_validation"] == 200
    assert set(rec["evaluation"]) == {"evaluation", "scoring", "whole"}
    assert rec["versions"]["torch"] and rec["machine"]["cpu"]
    assert "trainable parameters 3,074 of 4,386,178" in (run / "summary.txt").read_text()


def test_python_api(keyword_glue, tmp_path):
    cfg = mft_engine.FinetuneConfig.of(method="lora", model="bert-tiny-random", data_dir=str(keyword_glue),
                                    max_steps=4, batch_size=16, lora_rank=2, lora_placement="ffn-only",
                                    out=str(tmp_path))
    result = mft_engine.finetune(cfg)
    assert result.trainable_params == 2 * 2 * 2 * (128 + 512) + 258
    assert set(result.metrics) == {"accuracy"} and result.out_dir.parent == tmp_path
    assert (result.out_dir / "stored" / "adapter_model.safetensors").is_file()
    assert result.record["method_notes"]["placement"] == "ffn-only"
    assert cfg.to_dict()["lora_rank"] == 2 and mft_engine.FinetuneConfig.from_dict(cfg.to_dict()) == cfg
