"""What an `mft run` folder records and draws (issue 19): timings whose parts add up, the chance warning,
the state only when asked, plots that say what they show, export with the task's label names, progress
lines in stderr and logs/run.log of a piped run, and `show`."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from mft_engine.cli import main
from mft_engine.config import RunConfig
from mft_engine.errors import ConfigError
from mft_engine.experiments.mft_study import chance_check, run_study
from mft_engine.experiments.outputs import TIMING_PARTS
from mft_engine.report import show
from mft_engine.report.progress import LineProgress

from ..cli.test_bad_input import sst2_folder

DEV = [f"{'great' if i % 3 else 'awful'} movie {i}\t{int(i % 3 > 0)}" for i in range(60)]
TRAIN = [f"a {'good' if i % 2 else 'bad'} movie {i}\t{i % 2}" for i in range(40)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sst2_folder(tmp_path_factory.mktemp("h19") / "g", train_rows=TRAIN, dev_rows=DEV)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One in-process run with LineProgress writing every step (interval 0) into a buffer."""
    out = tmp_path_factory.mktemp("out")
    buf = io.StringIO()
    cfg = RunConfig.of(model="bert-tiny-random", samples=16, batch_size=8, data_dir=str(data), out=str(out),
                       fraction=[0.05, 0.1])
    result = run_study(cfg, progress=LineProgress(stream=buf, interval=0))
    return result, buf.getvalue()


def test_timings_parts_add_up_to_the_total(run):
    result, _ = run
    t = result.record["timings"]
    assert "zero_and_evaluate_s" not in t
    assert {"evaluate_before_s", "evaluate_after_s", "evaluate_control_s", "zero_s", "write_s", "total_s"} <= set(t)
    parts = sum(t[k] for k in TIMING_PARTS)
    assert abs(parts - t["total_s"]) <= 0.05 * t["total_s"], (parts, t)
    saved = json.loads((result.out_dir / "results.json").read_text())["timings"]
    assert saved == pytest.approx(t)


def test_at_chance_the_summary_says_so(run):
    result, _ = run
    chance = result.record["chance"]
    assert chance["at_chance"] and chance["majority_rate"] == pytest.approx(40 / 60)
    text = (result.out_dir / "summary.txt").read_text()
    assert "WARNING: the classifier is at chance" in text and "majority class rate 0.6667" in text
    assert "random weights" in text  # what the classifier is


def test_chance_check_decides_on_the_interval():
    trained = {"accuracy": 0.9, "accuracy_ci95": [0.88, 0.92]}
    assert chance_check(trained, [0] * 49 + [1] * 51) == {"majority_rate": 0.51, "majority_label": 1,
                                                           "at_chance": False, "note": None}
    below = {"accuracy": 0.469, "accuracy_ci95": [0.436, 0.502]}  # the untrained head: below 0.509
    assert chance_check(below, [0] * 491 + [1] * 509)["at_chance"]
    assert chance_check({"pearson": 0.3}, [0.1, 0.2]) is None


def test_state_only_when_asked_and_the_summary_says_where(run, data, tmp_path):
    result, _ = run
    assert not (result.out_dir / "gradient_state.safetensors").exists()
    assert result.record["state_file"] is None
    assert "gradient state: not saved" in (result.out_dir / "summary.txt").read_text()
    cfg = RunConfig.of(model="bert-tiny-random", samples=8, batch_size=4, data_dir=str(data), out=str(tmp_path),
                       save_state=True, control=False)
    saved = run_study(cfg)
    assert (saved.out_dir / "gradient_state.safetensors").is_file()
    assert "gradient state: gradient_state.safetensors in this folder" in (saved.out_dir / "summary.txt").read_text()


def test_plots_and_per_layer_eligibility(run):
    result, _ = run
    names = sorted(p.name for p in result.out_dir.glob("*.png"))
    assert names == ["accuracy.png", "collection_loss.png", "layer_zeroed.png"]
    assert result.record["plots"] == ["accuracy.png", "layer_zeroed.png", "collection_loss.png"]
    per_layer = {r["layer"]: r for r in result.record["per_layer"]}
    assert per_layer["classifier"]["eligible"] == 0 and per_layer["pooler"]["eligible"] == 0  # drawn as excluded
    assert per_layer["layer.0"]["eligible"] == per_layer["layer.0"]["numel"]
    for f in result.record["fractions"]:
        lo, hi = f["after"]["accuracy_ci95"]
        assert lo <= f["after"]["accuracy"] <= hi


def test_line_progress_reaches_the_buffer_and_the_run_log(run):
    result, lines = run
    assert "progress collect gradients: 2/2 batches (100%)" in lines
    assert "progress evaluate before: 60/60 samples (100%)" in lines
    assert "s/batch" in lines or "batches/s" in lines
    log = (result.out_dir / "logs" / "run.log").read_text()
    assert "progress collect gradients:" in log and "progress evaluate after 0.1:" in log


def test_show_prints_the_summary_and_the_plots(run, tmp_path):
    result, _ = run
    text = show(result.out_dir)
    assert text.startswith("BERT-MFT study (mft run)")
    for name in ("accuracy.png", "layer_zeroed.png", "collection_loss.png"):
        assert str(result.out_dir.resolve() / name) in text
    assert f"results: {result.out_dir.resolve() / 'results.json'}" in text
    for bad, needle in ((tmp_path / "nope", "no such folder"), (tmp_path, "not a results folder")):
        with pytest.raises(ConfigError, match=needle):
            show(bad)
    partial = tmp_path / ".mft_x.partial"
    partial.mkdir()
    with pytest.raises(ConfigError, match="unfinished"):
        show(partial)


def test_export_config_has_the_task_label_names(data, tmp_path):
    out = tmp_path / "results"
    assert main(["run", "--model", "bert-tiny-random", "--samples", "8", "--batch-size", "4", "--quiet", "--no-control",
                 "--data-dir", str(data), "--out", str(out)]) == 0
    (run_dir,) = list(out.iterdir())
    assert main(["export", str(run_dir), str(tmp_path / "exported")]) == 0
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}


def test_a_piped_run_prints_progress_lines_on_stderr_and_in_the_run_log(data, tmp_path):
    """Not a terminal (stderr is a pipe): plain progress lines, every 10 s by default. MFT_PROGRESS_INTERVAL
    shortens the interval so a seconds-long run prints some."""
    out = tmp_path / "results"
    env = {**__import__("os").environ, "MFT_PROGRESS_INTERVAL": "0"}
    proc = subprocess.run([sys.executable, "-m", "mft_engine.cli", "run", "--model", "bert-tiny-random", "--samples",
                           "16", "--batch-size", "8", "--no-control", "--data-dir", str(data), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "progress collect gradients: 2/2 batches (100%)" in proc.stderr, proc.stderr
    (run_dir,) = list(out.iterdir())
    assert "progress collect gradients:" in (run_dir / "logs" / "run.log").read_text()
