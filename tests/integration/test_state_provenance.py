"""`--state` is refused when it was built from another model, data, rows or collection settings."""
from __future__ import annotations

import json

import pytest

from mft_engine.cli import main
from mft_engine.collect import GradientState

from ..cli.test_bad_input import assert_clean_failure, sst2_folder

TINY = ["--model", "bert-tiny-random", "--batch-size", "8", "--quiet", "--no-control"]


@pytest.fixture(scope="module")
def state32(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    g = sst2_folder(root / "g", train_rows=[f"film {i} {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(80)])
    out = root / "out"
    assert main(["run", *TINY, "--samples", "32", "--data-dir", str(g), "--out", str(out), "--save-state"]) == 0
    (run_dir,) = list(out.iterdir())
    return g, run_dir / "gradient_state.safetensors"


def run(args, capsys):
    code = main(["run", *TINY, *args])
    return code, capsys.readouterr().err


def test_the_same_run_reuses_its_state_checked(state32, tmp_path, capsys):
    g, state = state32
    out = tmp_path / "out"
    code, err = run(["--samples", "32", "--data-dir", str(g), "--out", str(out), "--state", str(state)], capsys)
    assert code == 0, err
    (run_dir,) = list(out.iterdir())
    assert json.loads((run_dir / "results.json").read_text())["collection"]["provenance_checked"] is True


def test_a_state_of_32_rows_is_refused_for_a_64_row_run(state32, tmp_path, capsys):
    g, state = state32
    out = tmp_path / "out"
    code, err = run(["--samples", "64", "--data-dir", str(g), "--out", str(out), "--state", str(state)], capsys)
    assert_clean_failure(code, err, out, "--state", "32 rows", "64 rows")


def test_a_state_of_another_file_is_refused(state32, tmp_path, capsys):
    _, state = state32
    other = sst2_folder(tmp_path / "other", train_rows=[f"movie {i} {'fun' if i % 2 else 'dull'}\t{i % 2}" for i in range(80)])
    out = tmp_path / "out"
    code, err = run(["--samples", "32", "--data-dir", str(other), "--out", str(out), "--state", str(state)], capsys)
    assert_clean_failure(code, err, out, "--state", "data")


@pytest.mark.parametrize("flag", [["--seed", "7"], ["--eval-mode"], ["--batch-size", "4"], ["--max-length", "16"]])
def test_a_state_of_other_settings_is_refused(state32, tmp_path, capsys, flag):
    g, state = state32
    out = tmp_path / "out"
    code, err = run(["--samples", "32", "--data-dir", str(g), "--out", str(out), "--state", str(state), *flag], capsys)
    assert_clean_failure(code, err, out, "--state")


def test_a_state_written_before_provenance_is_used_with_a_warning(state32, tmp_path, capsys):
    g, state = state32
    old = GradientState.load(state)
    old.meta.pop("provenance")
    legacy = tmp_path / "legacy.safetensors"
    old.save(legacy)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="used unchecked"):
        code, err = run(["--samples", "32", "--data-dir", str(g), "--out", str(out), "--state", str(legacy)], capsys)
    assert code == 0, err
    (run_dir,) = list(out.iterdir())
    assert json.loads((run_dir / "results.json").read_text())["collection"]["provenance_checked"] is False
