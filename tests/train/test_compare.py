"""`mft compare RUN_DIR...`: the methods table (CSV, Markdown, trade-off plot) from finetune results folders,
and one clean line for a folder that is not one."""
from __future__ import annotations

import csv
import json

import pytest

from mft_engine.cli import main
from mft_engine.train import FinetuneConfig, finetune

from ..cli.test_bad_input import assert_clean_failure


@pytest.fixture(scope="module")
def two_runs(keyword_glue, tmp_path_factory):
    """A BitFit run and a LoRA run of 3 steps each on bert-tiny-random."""
    out = tmp_path_factory.mktemp("runs")
    dirs = []
    for method, extra in (("bitfit", {}), ("lora", {"lora_rank": 2})):
        cfg = FinetuneConfig.of(method=method, model="bert-tiny-random", data_dir=str(keyword_glue), max_steps=3,
                             batch_size=16, save_model=False, out=str(out), **extra)
        dirs.append(finetune(cfg).out_dir)
    return dirs


def _cli(args, capsys):
    code = main(["compare", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_methods_table(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = _cli([*map(str, two_runs), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    folder = out / brief["out_dir"].rsplit("/", 1)[1]
    assert folder.name.startswith("compare_")
    for name in ("methods.csv", "methods.md", "methods_tradeoff.png", "results.json", "summary.txt"):
        assert (folder / name).is_file(), name
    recs = [json.loads((d / "results.json").read_text()) for d in two_runs]
    rows = list(csv.DictReader((folder / "methods.csv").open()))
    assert [r["method"] for r in rows] == ["bitfit", "lora (attn-qkv, r=2)"]  # LoRA runs told apart by placement, rank
    for row, rec in zip(rows, recs):
        assert int(row["trainable_params"]) == rec["trainable_params"]
        assert float(row["trainable_share"]) == pytest.approx(rec["trainable_share"])
        assert float(row["train_s"]) == pytest.approx(rec["train_s"])
        assert int(row["stored_bytes"]) == rec["stored_bytes"]
        assert float(row["peak_mem_mib"]) == pytest.approx(rec["peak_mem_bytes"] / 2**20)
        assert row["gradient_checkpointing"] == "False"
        assert float(row["evaluation_accuracy"]) == pytest.approx(rec["metrics"]["accuracy"])
        assert float(row["whole_accuracy"]) == pytest.approx(rec["metrics_whole"]["accuracy"])
    assert rows[0]["trainable_params"] == "3074"
    md = (folder / "methods.md").read_text().splitlines()
    assert md[0].startswith("| method | trainable params | share |") and "accuracy (eval. half)" in md[0]
    assert "accuracy (whole)" in md[0] and md[1].startswith("|---|---:|")
    assert md[2].startswith("| bitfit | 3,074 |") and md[3].startswith("| lora (attn-qkv, r=2) |") and len(md) == 4
    rec = json.loads((folder / "results.json").read_text())
    assert rec["kind"] == "compare" and rec["plot_metric"] == "accuracy" and len(rec["rows"]) == 2


def test_markdown_goes_to_stdout(two_runs, tmp_path, capsys):
    code, stdout, err = _cli([str(two_runs[0]), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "| bitfit | 3,074 |" in stdout and "results: " in stdout


def _sweep_like(path):
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"kind": "sweep", "best": {"path": "cells/lr=0.001"}}))
    return path


@pytest.mark.parametrize("make,needle", [
    (lambda p: p, "no results.json"),
    (lambda p: p.parent / "missing", "is not a folder"),
    (lambda p: (p / "results.json").write_text("{not json") and p, "not valid JSON"),
    (lambda p: (p / "results.json").write_text(json.dumps({"before": {}, "config": {}})) and p, "lacks method"),
    (lambda p: _sweep_like(p / "sw"), "is a sweep folder"),
])
def test_not_a_finetune_folder(two_runs, tmp_path, capsys, make, needle):
    bad = tmp_path / "bad"
    bad.mkdir()
    bad = make(bad)
    out = tmp_path / "cmp"
    code, _, err = _cli([str(two_runs[0]), str(bad), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, needle)
