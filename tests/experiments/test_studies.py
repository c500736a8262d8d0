"""Each study end to end on bert-tiny-random with tiny SST-2 / MRPC folders (a few steps per run): the CLI's
--json object, the results folder's files, and the shapes of the tables; bad input fails cleanly."""
from __future__ import annotations

import csv
import json

import pytest

from mft_engine.cli import main

from ..cli.test_bad_input import assert_clean_failure

TINY = ["--model", "bert-tiny-random", "--max-steps", "2", "--batch-size", "8", "--max-length", "16"]
COMMON_FILES = {"results.json", "summary.txt", "logs"}


def _study(args, capsys):
    code = main(["study", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _ok(args, study_glue, tmp_path, capsys) -> tuple[dict, object]:
    out = tmp_path / "results"
    code, stdout, err = _study([*args, *TINY, "--data-dir", str(study_glue), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    folder = out / brief["out_dir"].rsplit("/", 1)[1]
    assert folder.is_dir() and [p.name for p in out.iterdir()] == [folder.name]  # no .partial left
    record = json.loads((folder / "results.json").read_text())
    assert record["config"]["model"] == "bert-tiny-random" and record["versions"] and record["machine"]
    return brief, folder


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_data_centric(study_glue, tmp_path, capsys):
    brief, folder = _ok(["data-centric", "--samples", "32", "--subset-size", "8"], study_glue, tmp_path, capsys)
    assert brief["study"] == "data-centric" and brief["primary_metric"] == "accuracy"
    table = brief["table"]
    assert [r["strategy"] for r in table] == ["all (teacher)", "uniform", "easy", "hard", "middle", "mixed"]
    assert table[0]["size"] == 32 and all(r["size"] == 8 and r["n_label_0"] == r["n_label_1"] == 4
                                          for r in table[1:])
    assert all(0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["accuracy_whole"] <= 1.0 for r in table)
    by = {r["strategy"]: r for r in table}
    assert by["easy"]["mean_teacher_loss"] <= by["middle"]["mean_teacher_loss"] <= by["hard"]["mean_teacher_loss"]
    assert COMMON_FILES | {"strategies.csv", "sample_losses.csv", "strategies.png", "loss_distribution.png"} \
        <= {p.name for p in folder.iterdir()}
    assert len(_csv(folder / "strategies.csv")) == 6
    losses = _csv(folder / "sample_losses.csv")
    assert len(losses) == 32 and sum(int(r["in_hard"]) for r in losses) == 8
    record = json.loads((folder / "results.json").read_text())
    assert {k: len(v) for k, v in record["subsets"].items()} == dict.fromkeys(
        ["uniform", "easy", "hard", "middle", "mixed"], 8)
    assert "uniform" in (folder / "summary.txt").read_text()


def test_data_centric_with_a_given_teacher(study_glue, tmp_path, bert_tiny):
    from mft_engine.experiments.data_centric import DataCentricConfig, run_data_centric

    teacher = tmp_path / "teacher"
    bert_tiny[0].save_pretrained(str(teacher))
    cfg = DataCentricConfig.of(model="bert-tiny-random", data_dir=str(study_glue), samples=24, subset_size=6,
                            strategies="easy,hard", teacher=str(teacher), max_steps=1, batch_size=8,
                            out=str(tmp_path / "r"))
    result = run_data_centric(cfg)
    assert [r["strategy"] for r in result.table] == ["easy", "hard"]
    assert result.record["teacher"] == str(teacher.resolve())
    assert result.table[0]["mean_teacher_loss"] < result.table[1]["mean_teacher_loss"]


def test_noise(study_glue, tmp_path, capsys):
    brief, folder = _ok(["noise", "--samples", "24", "--kinds", "emoji,word-del", "--levels", "0.5,0.2"],
                        study_glue, tmp_path, capsys)
    table = brief["table"]
    assert len(table) == 2 * (1 + 2 * 2)  # clean- and noise-trained × (clean + kinds × levels)
    assert [(r["training"], r["kind"], r["level"]) for r in table[:3]] == [
        ("clean", "none", 0.0), ("clean", "emoji", 0.2), ("clean", "emoji", 0.5)]
    assert {r["training"] for r in table} == {"clean", "augmented"}
    assert all(r["changed_share"] == (0.0 if r["kind"] == "none" else 1.0) for r in table)
    assert COMMON_FILES | {"noise.csv", "accuracy_vs_noise.png"} <= {p.name for p in folder.iterdir()}
    assert len(_csv(folder / "noise.csv")) == 10
    record = json.loads((folder / "results.json").read_text())
    assert len(record["degradation"]) == 4 and record["trials"]["augmented"]["corrupted_rows"] == 12


def test_few_shot(study_glue, tmp_path, capsys):
    brief, folder = _ok(["few-shot", "--samples", "32", "--min-k", "8", "--seeds", "1,2"], study_glue, tmp_path,
                        capsys)
    curve = brief["curve"]
    assert [r["k"] for r in curve] == [0, 8, 16, 32] and all(r["n_seeds"] == 2 for r in curve)
    assert all(r["accuracy_min"] <= r["accuracy_mean"] <= r["accuracy_max"] for r in curve)
    assert all("accuracy_ci_low" in r for r in curve)
    runs = _csv(folder / "few_shot.csv")
    assert len(runs) == 8 and {r["seed"] for r in runs} == {"1", "2"}
    assert all(int(r["n_label_0"]) == int(r["n_label_1"]) == int(r["k"]) // 2 for r in runs)
    assert all(int(r["steps"]) == (0 if r["k"] == "0" else 2) for r in runs)
    assert COMMON_FILES | {"curve.csv", "scaling_curve.png"} <= {p.name for p in folder.iterdir()}
    assert len(_csv(folder / "curve.csv")) == 4


def test_transfer(study_glue, tmp_path, capsys):
    brief, folder = _ok(["transfer", "--samples", "16", "--target-samples", "16", "--placements",
                         "attn-qkv,ffn-only", "--lora-rank", "4", "--curve-points", "2"], study_glue, tmp_path, capsys)
    table = brief["table"]
    assert [r["placement"] for r in table] == ["attn-qkv", "ffn-only"]
    assert [r["lora_modules"] for r in table] == [6, 4]
    head = 128 * 2 + 2
    assert all(r["transfer_trainable_params"] == head for r in table)
    assert [r["scratch_trainable_params"] for r in table] == [6 * 4 * 256 + head, 4 * 4 * 640 + head]
    for r in table:
        assert {"transfer_accuracy", "transfer_f1", "scratch_accuracy_whole", "gain_accuracy",
                "source_stable_rank"} <= set(r)
        assert 1.0 <= r["source_stable_rank"] <= r["source_effective_rank"] + 1e-9 <= 4.0 + 1e-9
    record = json.loads((folder / "results.json").read_text())
    assert record["data"]["task"] == "sst2" and record["target_data"]["task"] == "mrpc"
    names = {p.name for p in folder.iterdir()}
    assert COMMON_FILES | {"transfer.csv", "svd_modules.csv", "curves.csv", "transfer.png", "curves.png",
                           "rank_vs_transfer.png", "svd_attn-qkv.png", "svd_ffn-only.png"} <= names
    svd = _csv(folder / "svd_modules.csv")
    assert len(svd) == 2 * (6 + 4) and {r["adapter"] for r in svd} == {"source", "target-scratch"}
    assert all(float(r["scale"]) == 16.0 / 4 and int(r["rank"]) == 4 for r in svd)
    assert len(_csv(folder / "curves.csv")) == 2 * 2 * 3  # placements × runs × (step 0 + 2 points)


def test_transfer_head_only_training_freezes_the_merged_backbone(bert_tiny):
    from mft_engine.experiments.transfer import _head_only, _with_new_head
    from mft_engine.models import load_model

    fresh = load_model("bert-tiny-random", 3, seed=1).model
    model = _with_new_head(bert_tiny[0], fresh)
    prepared, method = _head_only(model)
    assert model.num_labels == 3 and model.classifier.out_features == 3
    assert method.trainable_params(prepared.model) == 128 * 3 + 3
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("args,needle", [
    (["transfer", "--placements", "attn-qkv,mlp"], "--placements 'mlp'"),
    (["noise", "--levels", "0.1,2"], "--levels 2"),
    (["data-centric", "--strategies", "hardest"], "--strategies 'hardest'"),
    (["data-centric", "--samples", "16", "--subset-size", "20"], "--subset-size 20 exceeds the pool of 16"),
    (["few-shot", "--ks", "8,100"], "--ks 100 exceeds the pool"),
    (["few-shot", "--lr", "0"], "--lr 0"),
])
def test_bad_input(study_glue, tmp_path, capsys, args, needle):
    out = tmp_path / "results"
    code, _, err = _study([*args, *TINY, "--data-dir", str(study_glue), "--out", str(out), "--quiet"], capsys)
    assert_clean_failure(code, err, out, needle)
