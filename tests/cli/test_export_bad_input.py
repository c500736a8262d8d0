"""`mft export` on a tampered results folder or a busy output: one line, exit 2, nothing it did not create touched."""
from __future__ import annotations


import pytest

from mft_engine.cli import main

from .test_bad_input import TINY, sst2_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = root / "results"
    assert main(["run", *TINY, "--data-dir", str(sst2_folder(root / "g")), "--out", str(out)]) == 0
    (d,) = list(out.iterdir())
    return d


def export(args, capsys):
    code = main(["export", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("text,needle", [
    ('{"config": 3', "not valid JSON"),
    ("[1, 2]", "not an mft run record"),
    ('{"config": {"model": "bert-tiny-random", "task": "sst2", "seed": 42}, "fractions": []}', "non-empty fractions"),
    ('{"config": {"model": "bert-tiny-random", "task": "sst2", "seed": 42}, "fractions": [{"fraction": "x"}]}',
     "numeric fraction"),
    ('{"config": {"model": 7, "task": "sst2", "seed": 42}, "fractions": [{"fraction": 0.1}]}', "config.model"),
])
def test_malformed_results_json(run_dir, tmp_path, capsys, text, needle):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    (bad / "results.json").write_text(text)
    code, err = export([bad, tmp_path / "exported"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "exported").exists()


def test_a_partial_folder_it_did_not_create_is_left_alone(run_dir, tmp_path, capsys):
    squatter = tmp_path / ".exported.partial"
    squatter.mkdir()
    (squatter / "theirs").write_text("x")
    code, err = export([run_dir, tmp_path / "exported"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and ".exported.partial exists" in err, err
    assert (squatter / "theirs").read_text() == "x" and not (tmp_path / "exported").exists()


def test_output_under_a_file(run_dir, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = export([run_dir, tmp_path / "f" / "exported"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "not a directory" in err, err


def test_export_into_an_empty_folder_the_user_made(run_dir, tmp_path, capsys):
    (tmp_path / "exported").mkdir()
    code, err = export([run_dir, tmp_path / "exported"], capsys)
    assert code == 0, err
    assert (tmp_path / "exported" / "config.json").is_file()
    assert not (tmp_path / ".exported.partial").exists()


def test_a_failed_final_rename_puts_back_the_users_empty_folder(run_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    import mft_engine.export as export_module

    def refused(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(export_module, "rename_noreplace", refused)
    (tmp_path / "exported").mkdir()
    code, err = export([run_dir, tmp_path / "exported"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "permission denied" in err, err
    assert (tmp_path / "exported").is_dir() and not any((tmp_path / "exported").iterdir())
    assert not (tmp_path / ".exported.partial").exists()
