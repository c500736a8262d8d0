"""`mft sweep` (grid parsing, bad input, the sweep folder, choosing on the scoring half, resuming without
re-running finished cells, failed cells) and `mft finetune --seeds` (mean and bootstrap CI across seeds).

Every run is bert-tiny-random for 3 steps on the keyword SST-2 folder (about a second per cell)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from mft_engine.cli import main
from mft_engine.errors import ConfigError
from mft_engine.evaluate.bootstrap import bootstrap_ci
from mft_engine.train.sweep import runs as sweep_module
from mft_engine.train.sweep import SweepConfig, cell_id, parse_grid, parse_value

from ..cli.test_bad_input import assert_clean_failure

TINY = ["--method", "bitfit", "--model", "bert-tiny-random", "--max-steps", "3", "--quiet", "--no-save-model"]


def _cli(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ------------------------------------------------------------------------------------------- grid parsing

def test_values_take_the_field_type():
    assert parse_grid(["batch_size=8,16", "lr=3e-4,1e-4", "bitfit_head=true,no", "samples=none,64"]) == {
        "batch_size": [8, 16], "lr": [3e-4, 1e-4], "bitfit_head": [True, False], "samples": [None, 64]}
    # a value holding commas: semicolons separate the values
    assert parse_grid(["bitfit_groups=attention,classifier;all"]) == {"bitfit_groups": ["attention,classifier", "all"]}
    assert parse_grid({"lr": [1e-4]}) == {"lr": [1e-4]}
    assert parse_value("precision", "bf16") == "bf16"


def test_cell_ids_are_stable_and_distinct():
    cells = SweepConfig(grid=["batch_size=8,16", "lr=3e-4,3e-5"], fixed={"method": "bitfit"}).cells()
    assert [c.id for c in cells] == ["batch_size=8,lr=0.0003", "batch_size=8,lr=3e-05",
                                     "batch_size=16,lr=0.0003", "batch_size=16,lr=3e-05"]
    assert cells[0].config.batch_size == 8 and cells[0].config.method == "bitfit"
    assert cell_id({"lr": 1.2345678e-4}) != cell_id({"lr": 1.2345679e-4})
    odd = cell_id({"bitfit_groups": "attention classifier/x"})
    assert "/" not in odd and " " not in odd and odd == cell_id({"bitfit_groups": "attention classifier/x"})


@pytest.mark.parametrize("grid,fixed,needle", [
    (["epochz=1,2"], {}, "'epochz'"),
    (["batch_size=8,abc"], {}, "batch_size='abc': expected int"),
    (["lr=1e-4", "lr=1e-5"], {}, "lr is given twice"),
    (["lr"], {}, "not field=value"),
    (["out=a,b"], {}, "out cannot be an axis"),
    (["lr=1e-4,0"], {}, "--grid cell lr=0.0: --lr 0.0"),
    (["lr=1e-4,0.0001"], {}, "twice"),
    (["lr=1e-4"], {"lr": 1e-3}, "--lr is both"),
])
def test_bad_grids(grid, fixed, needle):
    with pytest.raises(ConfigError, match=None) as e:
        SweepConfig(grid=grid, fixed=fixed).cells()
    assert needle in str(e.value), str(e.value)


@pytest.mark.parametrize("args,needles", [
    (["--grid", "epochz=1,2"], ["--grid field 'epochz'", "batch_size"]),
    (["--grid", "lr=1e-3", "--grid", "batch_size=8,x"], ["batch_size='x'"]),
    (["--grid", "lr=1e-3,-1"], ["--lr -1.0"]),
    ([], ["--grid is required"]),
    (["--grid", "lr=1e-3", "--name", "a/b"], ["--name 'a/b'"]),
])
def test_bad_input_writes_nothing(keyword_glue, tmp_path, capsys, args, needles):
    out = tmp_path / "results"
    code, _, err = _cli(["sweep", *TINY, "--data-dir", str(keyword_glue), "--out", str(out), *args], capsys)
    assert_clean_failure(code, err, out, *needles)


def test_resume_of_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    code, _, err = _cli(["sweep", "--resume", str(tmp_path)], capsys)
    assert_clean_failure(code, err, tmp_path / "none", "is not a sweep folder")


# ------------------------------------------------------------------------------------------- a whole sweep

@pytest.fixture(scope="module")
def grid_sweep(keyword_glue, tmp_path_factory):
    """A finished 2 x 2 sweep (batch_size x lr) named 'g', run through the CLI with --json."""
    out = tmp_path_factory.mktemp("sweeps")
    args = ["sweep", *TINY, "--data-dir", str(keyword_glue), "--out", str(out), "--name", "g",
            "--grid", "batch_size=8,16", "--grid", "lr=1e-3,3e-3", "--json"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(args)
    assert code == 0
    return out, args, json.loads(buf.getvalue())


def test_sweep_folder_and_best_cell(grid_sweep):
    out, _, brief = grid_sweep
    root = out / "sweep_g"
    assert brief["out_dir"] == str(root) and brief["n_cells"] == 4 == brief["n_finished"]
    for name in ("sweep.json", "sweep.csv", "summary.txt", "sweep_heatmap.png", "results.json", "logs/run.log"):
        assert (root / name).is_file(), name
    assert not list(out.glob(".*")) and not list((root / "cells").glob(".*"))  # no staging or partial left
    ids = ["batch_size=8,lr=0.001", "batch_size=8,lr=0.003", "batch_size=16,lr=0.001", "batch_size=16,lr=0.003"]
    assert [c["id"] for c in brief["cells"]] == ids
    recs = {i: json.loads((root / "cells" / i / "results.json").read_text()) for i in ids}
    assert recs["batch_size=16,lr=0.003"]["config"]["batch_size"] == 16
    assert recs["batch_size=16,lr=0.003"]["config"]["lr"] == 3e-3
    assert all(r["config"]["max_steps"] == 3 and r["method"] == "bitfit" for r in recs.values())
    # chosen on the scoring half (the first of equal scores), reported on the evaluation half
    best = max(ids, key=lambda i: recs[i]["metrics_scoring_half"]["accuracy"])
    assert brief["best"]["id"] == best and brief["selection"]["half"] == "scoring"
    assert brief["best"]["evaluation_half"] == recs[best]["metrics"]
    assert brief["best"]["whole"] == recs[best]["metrics_whole"]
    rows = list(csv.DictReader((root / "sweep.csv").open()))
    assert [r["cell"] for r in rows] == ids and {"batch_size", "lr", "scoring_accuracy", "evaluation_accuracy",
                                                 "whole_accuracy", "train_s"} <= set(rows[0])
    assert float(rows[0]["evaluation_accuracy"]) == recs[ids[0]]["metrics"]["accuracy"]
    rec = json.loads((root / "results.json").read_text())
    assert rec["kind"] == "sweep" and rec["best"]["id"] == best and rec["versions"]["torch"] and rec["machine"]["cpu"]
    assert rec["config"]["grid"] == {"batch_size": [8, 16], "lr": [1e-3, 3e-3]}
    summary = (root / "summary.txt").read_text()
    assert f"best cell (highest accuracy on the scoring half): {best}" in summary and "<- best" in summary


def test_rerun_with_the_same_name_runs_only_unfinished_cells(grid_sweep, capsys):
    out, args, _ = grid_sweep
    root = out / "sweep_g"
    cells = root / "cells"
    gone = "batch_size=8,lr=0.003"
    shutil.rmtree(cells / gone)
    mtimes = {p.name: (p / "results.json").stat().st_mtime_ns for p in cells.iterdir()}
    code, stdout, err = _cli(args, capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    assert brief["n_finished_earlier"] == 3 and brief["n_finished"] == 4
    assert {p.name: (p / "results.json").stat().st_mtime_ns for p in cells.iterdir() if p.name != gone} == mtimes
    attempts = {c["id"]: c["attempts"] for c in brief["cells"]}
    assert attempts[gone] == 2 and all(v == 1 for k, v in attempts.items() if k != gone)
    # other fixed settings than the stored ones: one line, the sweep untouched
    changed = [a if a != "3" else "4" for a in args]
    code, _, err = _cli(changed, capsys)
    assert code == 2 and "--max-steps differ" in err and len(err.strip().splitlines()) == 1
    assert (root / "results.json").is_file() and len(list(cells.iterdir())) == 4


class _Kill(sweep_module.Progress):
    """Raises KeyboardInterrupt at the second training step (as Ctrl-C or a kill mid-cell would)."""

    def __init__(self):
        self.phase_name = ""
        self.steps = 0

    def phase(self, name, total=None):
        self.phase_name = name

    def advance(self, n=1, **info):
        if self.phase_name.startswith("train"):
            self.steps += n
            if self.steps >= 2:
                raise KeyboardInterrupt


def _sweep_killed_in_its_second_cell(keyword_glue, out, capsys, monkeypatch, lrs: str):
    """Run sweep 'k' over lr=`lrs` with the second cell interrupted; (calls, kill_at, exit code, stderr),
    where `calls` records the lr of every finetune call and emptying `kill_at` stops the kills."""
    real = sweep_module.finetune
    calls, kill_at = [], [2]

    def killing(cfg, progress=None, **kw):
        calls.append(cfg.lr)
        return real(cfg, _Kill() if len(calls) in kill_at else None, **kw)

    monkeypatch.setattr(sweep_module, "finetune", killing)
    code, _, err = _cli(["sweep", *TINY, "--data-dir", str(keyword_glue), "--out", str(out), "--name", "k",
                         "--grid", f"lr={lrs}"], capsys)
    return calls, kill_at, code, err


def test_killed_mid_cell_then_resumed(keyword_glue, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    calls, kill_at, code, err = _sweep_killed_in_its_second_cell(keyword_glue, out, capsys, monkeypatch,
                                                                 "1e-3,2e-3,3e-3")
    assert code == 130 and calls == [1e-3, 2e-3]
    partial = out / ".sweep_k.partial"
    state = json.loads((partial / "sweep.json").read_text())
    assert [c["status"] for c in state["cells"]] == ["finished", "interrupted", "pending"]
    # the killed cell could not be resumed, so it removed its own staging folder; the finished one stays
    assert sorted(p.name for p in (partial / "cells").iterdir()) == ["lr=0.001"]
    assert f"--resume {partial}" in err
    first = (partial / "cells" / "lr=0.001" / "results.json").stat().st_mtime_ns

    calls.clear()
    kill_at.clear()
    code, stdout, err = _cli(["sweep", "--resume", str(partial), "--json", "--quiet"], capsys)
    assert code == 0, err
    assert calls == [2e-3, 3e-3]  # the finished cell was not run again
    final = out / "sweep_k"
    assert json.loads(stdout)["out_dir"] == str(final) and not partial.exists()
    assert (final / "cells" / "lr=0.001" / "results.json").stat().st_mtime_ns == first
    assert sorted(p.name for p in (final / "cells").iterdir()) == ["lr=0.001", "lr=0.002", "lr=0.003"]
    assert not (final / "sweep_heatmap.png").exists()  # 1-D grid


def test_failed_cells(keyword_glue, tmp_path, capsys):
    out = tmp_path / "results"
    base = ["sweep", "--method", "freeze", "--model", "bert-tiny-random", "--max-steps", "2", "--no-save-model",
            "--quiet", "--data-dir", str(keyword_glue), "--out", str(out)]
    code, stdout, err = _cli([*base, "--grid", "freeze_layers=1,5", "--json"], capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    status = {c["id"]: (c["status"], c["error"]) for c in brief["cells"]}
    assert status["freeze_layers=1"] == ("finished", None)
    assert status["freeze_layers=5"][0] == "failed" and "2 encoder layers" in status["freeze_layers=5"][1]
    assert brief["best"]["id"] == "freeze_layers=1" and brief["n_failed"] == 1
    assert "failed cells:" in (out / brief["out_dir"].rsplit("/", 1)[1] / "summary.txt").read_text()
    # every cell failing: one line, exit 2, no sweep folder left
    out2 = tmp_path / "results2"
    code, _, err = _cli([*base[:-1], str(out2), "--grid", "freeze_layers=5,6"], capsys)
    assert_clean_failure(code, err, out2, "every cell of the sweep failed", "--freeze-layers 5")


# ------------------------------------------------------------------------------------------ multi-seed runs

def test_seeds_mean_and_bootstrap_ci(keyword_glue, tmp_path, capsys):
    out = tmp_path / "results"
    code, stdout, err = _cli(["finetune", *TINY, "--data-dir", str(keyword_glue), "--out", str(out),
                              "--seeds", "1,2", "--json"], capsys)
    assert code == 0, err
    brief = json.loads(stdout)
    root = out / brief["out_dir"].rsplit("/", 1)[1]
    assert root.name.startswith("finetune_seeds_bitfit_") and brief["seeds"] == [1, 2]
    runs = [json.loads((root / "runs" / f"seed-{s}" / "results.json").read_text()) for s in (1, 2)]
    assert [r["config"]["seed"] for r in runs] == [1, 2]
    for key in ("metrics", "metrics_whole"):
        vals = [r[key]["accuracy"] for r in runs]
        s = brief[key]["accuracy"]
        ci = bootstrap_ci(vals, resamples=10_000, seed=0)
        assert s["values"] == vals and s["mean"] == pytest.approx(sum(vals) / 2)
        assert (s["ci_low"], s["ci_high"]) == (ci.low, ci.high) and min(vals) <= s["ci_low"] <= s["ci_high"] <= max(vals)
    assert brief["bootstrap"] == {"method": "percentile", "statistic": "mean", "resamples": 10_000,
                                  "confidence": 0.95, "seed": 0}
    for name in ("seeds.csv", "summary.txt", "results.json", "logs/run.log"):
        assert (root / name).is_file(), name
    assert "95% CI" in (root / "summary.txt").read_text()
    assert len(list(csv.DictReader((root / "seeds.csv").open()))) == 2


@pytest.mark.parametrize("args,needle", [
    (["--seeds", "1,x"], "--seeds '1,x'"),
    (["--seeds", "1,1"], "repeats a seed"),
    (["--seeds", "1,2", "--seed", "3"], "--seed and --seeds"),
])
def test_bad_seeds(keyword_glue, tmp_path, capsys, args, needle):
    out = tmp_path / "results"
    code, _, err = _cli(["finetune", *TINY, "--data-dir", str(keyword_glue), "--out", str(out), *args], capsys)
    assert_clean_failure(code, err, out, needle)


def test_an_error_while_resuming_keeps_every_finished_cell(keyword_glue, tmp_path, capsys, monkeypatch):
    import errno
    import hashlib
    import os

    out = tmp_path / "results"
    calls, kill_at, code, _ = _sweep_killed_in_its_second_cell(keyword_glue, out, capsys, monkeypatch, "1e-3,2e-3")
    assert code == 130
    partial = out / ".sweep_k.partial"
    first = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (partial / "cells" / "lr=0.001").rglob("*") if p.is_file()}

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    calls.clear()
    kill_at.clear()
    write_csv = sweep_module.write_csv
    monkeypatch.setattr(sweep_module, "write_csv", disk_full)
    code, _, err = _cli(["sweep", "--resume", str(partial), "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left on device" in err.lower() and f"--resume {partial}" in err
    assert calls == [2e-3]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (partial / "cells" / "lr=0.001").rglob("*") if p.is_file()} == first
    assert sorted(p.name for p in (partial / "cells").iterdir()) == ["lr=0.001", "lr=0.002"]

    monkeypatch.setattr(sweep_module, "write_csv", write_csv)  # the disk has room again
    calls.clear()
    code, _, err = _cli(["sweep", "--resume", str(partial), "--quiet"], capsys)
    assert code == 0, err
    assert calls == []  # both cells were kept finished
    assert (out / "sweep_k" / "sweep.csv").is_file()
