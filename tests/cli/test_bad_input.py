"""Bad input: one clear line naming the problem, exit 2, no traceback, no half-written results folder."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mft_engine.cli import main

TINY = ["--model", "bert-tiny-random", "--samples", "8", "--batch-size", "4", "--quiet", "--no-control"]


def sst2_folder(root, train_rows=None, dev_rows=None):
    d = root / "SST-2"
    d.mkdir(parents=True)
    train_rows = train_rows if train_rows is not None else [f"a {'good' if i % 2 else 'bad'} movie {i} \t{i % 2}"
                                                          for i in range(16)]
    dev_rows = dev_rows if dev_rows is not None else ["fine film \t1", "awful film \t0", "so so \t0", "great \t1"]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(train_rows) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(dev_rows) + "\n")
    return root


def run_cli(args, capsys):
    code = main(["run", *args])
    err = capsys.readouterr().err
    return code, err


def assert_clean_failure(code, err, out_dir, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


@pytest.mark.parametrize("args,needle", [
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-5"], "--lr"),
    (["--fraction", "0"], "outside (0, 1]"),
    (["--fraction", "1.5"], "outside (0, 1]"),
    (["--fraction", "0.1,abc"], "--fraction"),
    (["--rank-by", "size"], "--rank-by"),
    (["--reduction", "median"], "--reduction"),
])
def test_bad_config(tmp_path, capsys, args, needle):
    out = tmp_path / "results"
    code, err = run_cli([*TINY, "--data-dir", str(sst2_folder(tmp_path / "g")), "--out", str(out), *args], capsys)
    assert_clean_failure(code, err, out, needle)


def test_missing_data_folder(tmp_path, capsys):
    out = tmp_path / "results"
    code, err = run_cli([*TINY, "--data-dir", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, str(tmp_path / "nope"))


def test_malformed_row(tmp_path, capsys):
    out = tmp_path / "results"
    g = sst2_folder(tmp_path / "g", train_rows=["ok \t1", "broken row without a label", "fine \t0"] * 4)
    code, err = run_cli([*TINY, "--data-dir", str(g), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, "train.tsv", "line 3")


def test_unknown_label(tmp_path, capsys):
    out = tmp_path / "results"
    g = sst2_folder(tmp_path / "g", dev_rows=["fine \t1", "odd \tpositive"])
    code, err = run_cli([*TINY, "--data-dir", str(g), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, "'positive'")


def test_empty_split(tmp_path, capsys):
    out = tmp_path / "results"
    g = sst2_folder(tmp_path / "g", dev_rows=[])
    code, err = run_cli([*TINY, "--data-dir", str(g), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, "dev.tsv")


def test_model_path_that_is_not_a_model(tmp_path, capsys):
    out = tmp_path / "results"
    (tmp_path / "notamodel").mkdir()
    args = ["--model", str(tmp_path / "notamodel"), "--samples", "8", "--batch-size", "4", "--quiet"]
    code, err = run_cli([*args, "--data-dir", str(sst2_folder(tmp_path / "g")), "--out", str(out)], capsys)
    assert_clean_failure(code, err, out, "notamodel")


def test_nonfinite_gradient_in_state_names_parameter(tmp_path, capsys):
    g = sst2_folder(tmp_path / "g")
    out = tmp_path / "results"
    assert main(["run", *TINY, "--data-dir", str(g), "--out", str(out), "--save-state"]) == 0
    run_dir = next(out.iterdir())
    from mft_engine.collect import GradientState

    st = GradientState.load(run_dir / "gradient_state.safetensors")
    st.grad_sum["bert.encoder.layer.1.output.dense.weight"][0, 0] = float("inf")
    st.save(tmp_path / "bad_state.safetensors")
    out2 = tmp_path / "results2"
    code, err = run_cli([*TINY, "--data-dir", str(g), "--out", str(out2), "--state",
                         str(tmp_path / "bad_state.safetensors")], capsys)
    assert_clean_failure(code, err, out2, "bert.encoder.layer.1.output.dense.weight", "non-finite")


def test_export_with_mask_of_another_model(tmp_path, capsys):
    g = sst2_folder(tmp_path / "g")
    out = tmp_path / "results"
    assert main(["run", *TINY, "--data-dir", str(g), "--out", str(out)]) == 0
    run_dir = next(out.iterdir())
    from mft_engine.masking import Mask

    m = Mask.load(run_dir / "mask.safetensors")
    m.names = m.names + ["classifier.weight"]
    m.shapes = m.shapes + [(3, 128)]
    m.save(run_dir / "mask.safetensors")
    capsys.readouterr()
    code = main(["export", str(run_dir), str(tmp_path / "exported")])
    err = capsys.readouterr().err
    assert code == 2 and "classifier.weight" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exported").exists()


def test_resume_with_another_configuration(tmp_path, capsys):
    partial = tmp_path / "results" / ".mft_x.partial"
    partial.mkdir(parents=True)
    from mft_engine.config import RunConfig

    (partial / "config.json").write_text(json.dumps(RunConfig.of(model="bert-tiny-random", samples=8, batch_size=4).to_dict()))
    code = main(["run", "--resume", str(partial), "--samples", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--samples" in err and len(err.strip().splitlines()) == 1


def test_console_script_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mft_engine.cli", "run", "--lr", "-1", "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "Traceback" not in r.stderr
