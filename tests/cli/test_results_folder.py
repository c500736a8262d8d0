"""The results-folder contract: exclusive reservation, no rename over anything, rollback of a failed resume,
checkpoints kept on failure, file-system errors as one line."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from mft_engine.errors import ConfigError, OutputError, ResumeError
from mft_engine.report import ResultsFolder
from mft_engine.report import folder as folder_mod
from mft_engine.report.folder import interrupt_note, rename_noreplace


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root with a digest of its bytes (folders: 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def fixed_stamp(monkeypatch):
    monkeypatch.setattr(folder_mod, "timestamp", lambda: "20260101_000000")


def test_two_folders_in_the_same_second_never_share(tmp_path, fixed_stamp):
    with ResultsFolder(tmp_path, "mft") as a, ResultsFolder(tmp_path, "mft") as b:
        assert a.path != b.path
        a.write_text("who", "a")
        b.write_text("who", "b")
        pa, pb = a.commit(), b.commit()
    assert {pa.name, pb.name} == {"mft_20260101_000000", "mft_20260101_000000_2"}
    assert (pa / "who").read_text() == "a" and (pb / "who").read_text() == "b"


def test_a_precreated_partial_is_skipped_and_left_alone(tmp_path, fixed_stamp):
    squatter = tmp_path / ".mft_20260101_000000.partial"
    squatter.mkdir()
    (squatter / "theirs.txt").write_text("not ours")
    with ResultsFolder(tmp_path, "mft") as f:
        f.write_text("x", "1")
        final = f.commit()
    assert final.name == "mft_20260101_000000_2"
    assert (squatter / "theirs.txt").read_text() == "not ours"


def test_commit_takes_the_next_free_name_when_the_name_appeared(tmp_path, fixed_stamp):
    with ResultsFolder(tmp_path, "mft") as f:
        (tmp_path / "mft_20260101_000000").mkdir()  # someone else, meanwhile (empty: rename would replace it)
        final = f.commit()
    assert final.name == "mft_20260101_000000_2"
    assert (tmp_path / "mft_20260101_000000").is_dir() and not any((tmp_path / "mft_20260101_000000").iterdir())


def test_rename_noreplace_refuses_an_empty_target_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").is_dir()


def test_failure_removes_a_new_folder_and_the_parent_it_created(tmp_path):
    out = tmp_path / "new_parent"
    with pytest.raises(ConfigError):
        with ResultsFolder(out, "mft") as f:
            f.write_text("x", "1")
            raise ConfigError("bad input")
    assert not out.exists()


def test_failure_keeps_a_checkpoint_and_says_so(tmp_path):
    with pytest.raises(ConfigError, match="can be continued with --resume"):
        with ResultsFolder(tmp_path, "mft") as f:
            f.write_json("config.json", {"a": 1})
            f.keep_on_failure("ckpt.bin")
            f.write_bytes("ckpt.bin", b"state")
            f.write_text("summary.txt", "half")
            raise ConfigError("bad input")
    (partial,) = tmp_path.iterdir()
    assert sorted(p.name for p in partial.iterdir()) == ["ckpt.bin", "config.json", "logs"]


def test_interrupt_without_checkpoint_removes_the_folder_and_says_so(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ResultsFolder(tmp_path, "mft") as f:
            f.write_text("x", "1")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert "nothing could be resumed" in interrupt_note() and "removed" in interrupt_note()


def test_checkpoints_are_deleted_only_after_the_rename(tmp_path):
    with ResultsFolder(tmp_path, "mft") as f:
        f.keep_on_failure("ckpt.bin")
        f.write_bytes("ckpt.bin", b"state")
        f.write_text("results.json", "{}")
        final = f.commit()
    assert sorted(p.name for p in final.iterdir()) == ["logs", "results.json"]


def test_a_failed_resume_puts_the_folder_back_byte_for_byte(tmp_path):
    partial = tmp_path / ".mft_x.partial"
    (partial / "logs").mkdir(parents=True)
    (partial / "logs" / "run.log").write_text("earlier log\n")
    (partial / "summary.txt").write_text("earlier summary")
    (partial / "user_notes.md").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="left as it was found"):
        with ResultsFolder(tmp_path, resume=partial) as f:
            f.confirm()
            import logging

            logging.getLogger("mft_engine").info("this run's line")
            f.write_text("summary.txt", "new summary")
            f.write_text("new_file.txt", "new")
            (f.path / "sub").mkdir()
            f.write_text("sub/deep.txt", "deep")
            raise ConfigError("failed later")
    assert snapshot(tmp_path) == before


def test_a_refused_resume_writes_nothing_not_even_the_log(tmp_path):
    partial = tmp_path / ".mft_x.partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(ResumeError):
        with ResultsFolder(tmp_path, resume=partial):
            import logging

            logging.getLogger("mft_engine").info("checking")
            raise ResumeError("not resumable")
    assert snapshot(tmp_path) == before


def test_resume_of_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ResumeError, match="is not a folder"):
        ResultsFolder(tmp_path, resume=tmp_path / "nope")


@pytest.mark.parametrize("make", ["file", "under_file"])
def test_out_that_is_not_a_directory(tmp_path, make):
    f = tmp_path / "a_file"
    f.write_text("x")
    out = f if make == "file" else f / "sub"
    with pytest.raises(OutputError, match="is not a directory"):
        ResultsFolder(out, "mft")
    assert f.read_text() == "x"


def test_simulated_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match="No space left on device|no space left on device") as e:
        with ResultsFolder(tmp_path, "mft") as f:
            f.write_text("results.json", "{}")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_real_full_disk_keeps_the_checkpoint_and_nothing_half_written(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a size-limited tmpfs here (the simulated ENOSPC test covers it)")
    try:
        with pytest.raises(OutputError) as e:
            with ResultsFolder(disk, "mft") as f:
                f.write_json("config.json", {"a": 1})
                f.keep_on_failure("ckpt.bin")
                f.write_bytes("ckpt.bin", b"s" * 1000)
                f.write_bytes("gradient_state.safetensors", b"\0" * (1 << 20))  # does not fit
        msg = str(e.value)
        assert "no space left on device" in msg.lower() and "--resume" in msg and "\n" not in msg
        (partial,) = disk.iterdir()
        assert sorted(p.name for p in partial.iterdir()) == ["ckpt.bin", "config.json", "logs"]
        assert (partial / "ckpt.bin").read_bytes() == b"s" * 1000
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_read_only_out_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        with pytest.raises(OutputError, match="not writable|read-only") as e:
            ResultsFolder(ro / "results", "mft")
        assert "\n" not in str(e.value)
    finally:
        subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.parametrize("every", ["0", "2"])
def test_mft_run_on_a_full_disk(tmp_path, capsys, every):
    """End to end: the run fails while writing its outputs; one line, exit 2, nothing half-written."""
    from mft_engine.cli import main

    from .test_bad_input import TINY, sst2_folder

    g = sst2_folder(tmp_path / "g")
    disk = tmp_path / "disk"
    # bert-tiny's state is 70 MB: with a checkpoint, room for it but not for the second copy the outputs write
    if not _mount_tmpfs(disk, "2m" if every == "0" else "80m"):
        pytest.skip("cannot mount a size-limited tmpfs here (the simulated ENOSPC test covers it)")
    try:
        # --save-state: the 70 MB gradient state is what overflows the 2 MB disk (it is not written by default)
        code = main(["run", *TINY, "--data-dir", str(g), "--out", str(disk), "--checkpoint-every", every,
                     "--save-state"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "no space left on device" in err.lower()
        if every == "0":
            assert list(disk.iterdir()) == [] and "removed" in err
        else:
            (partial,) = disk.iterdir()
            assert f"--resume {partial}" in err
            assert sorted(p.name for p in partial.iterdir()) == ["collect_checkpoint.safetensors", "config.json", "logs"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
