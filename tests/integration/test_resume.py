"""Kill `mft run` at each phase and resume it: the same results as the uninterrupted run. Refused resumes
touch nothing; Ctrl-C/SIGTERM say what was kept; concurrent runs never share a folder."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mft_engine.cli import main
from mft_engine.collect import GradientState

from ..cli.test_bad_input import sst2_folder

ARGS = ["--model", "bert-tiny-random", "--samples", "400", "--batch-size", "8", "--checkpoint-every", "3",
        "--quiet", "--fraction", "0.05,0.1"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    rows = [f"{'good fun' if i % 2 else 'dull boring'} film number {i} " + "word " * (i % 23) + f"\t{i % 2}"
            for i in range(400)]
    dev = [f"{'great' if i % 3 else 'awful'} movie {i} " + "x " * (i % 17) + f"\t{int(i % 3 > 0)}" for i in range(300)]
    return sst2_folder(root / "g", train_rows=rows, dev_rows=dev)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert main(["run", *ARGS, "--data-dir", str(data), "--out", str(out)]) == 0
    (run_dir,) = list(out.iterdir())
    return run_dir


def comparable(run_dir: Path) -> dict:
    """What an interrupted-and-resumed run must reproduce: masks byte for byte, counts and metrics."""
    rec = json.loads((run_dir / "results.json").read_text())
    fr = [{k: v for k, v in f.items() if k not in ("zero_s", "zero_warm_s", "read_bound_s")} for f in rec["fractions"]]
    masks = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.glob("mask*.safetensors")}
    state = GradientState.load(run_dir / "gradient_state.safetensors")
    return {"counts": rec["counts"], "before": rec["before"], "fractions": fr, "masks": masks,
            "rows": rec["data"]["rows_used"], "losses": state.batch_losses,
            "g": {n: state.grad_sum[n].tolist() for n in state.names[:4]}}


def start_run(data: Path, out: Path, extra: list[str] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mft_engine.cli", "run", *ARGS, "--data-dir", str(data),
                             "--out", str(out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(proc: subprocess.Popen, out: Path, found) -> Path | None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        for partial in out.glob(".mft_*.partial") if out.exists() else []:
            if found(partial):
                return partial
        time.sleep(0.002)
    return None


def log_has(line: str):
    def check(partial: Path) -> bool:
        log = partial / "logs" / "run.log"
        return log.is_file() and line in log.read_text()
    return check


@pytest.mark.parametrize("boundary", [
    "collect:checkpoint",       # during collection, after its first checkpoint
    "phase collect end",        # after collection: resumes without collecting again
    "phase evaluate-after start",
    "phase write start",
])
def test_kill_at_each_phase_then_resume_gives_the_same_results(data, reference, tmp_path, boundary):
    out = tmp_path / "killed"
    proc = start_run(data, out)
    if boundary == "collect:checkpoint":
        partial = wait_for(proc, out, lambda p: (p / "collect_checkpoint.safetensors").is_file())
    else:
        partial = wait_for(proc, out, log_has(boundary))
    assert partial is not None, "the run ended before the kill point: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if boundary == "collect:checkpoint":
        assert 0 < GradientState.load(partial / "collect_checkpoint.safetensors").n_batches < 50
    assert main(["run", "--resume", str(partial), "--quiet"]) == 0
    assert not partial.exists()
    (final,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert comparable(final) == comparable(reference)
    assert not (final / "collect_checkpoint.safetensors").exists()
    log = (final / "logs" / "run.log").read_text()
    if boundary != "collect:checkpoint":
        # the kill came after collection: the resumed run did not compute a batch again
        assert "the checkpoint holds the whole collection" in log


def test_resume_of_a_finished_folder_with_a_user_file_touches_nothing(reference, tmp_path, capsys):
    import shutil

    done = tmp_path / "mft_done"
    shutil.copytree(reference, done)
    (done / "my_notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert main(["run", "--resume", str(done), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finished results folder" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_resume_without_checkpoint_is_refused_and_touches_nothing(data, tmp_path, capsys):
    partial = tmp_path / ".mft_20260101_000000.partial"
    (partial / "logs").mkdir(parents=True)
    (partial / "config.json").write_text(json.dumps({"model": "bert-tiny-random", "data_dir": str(data)}))
    (partial / "logs" / "run.log").write_text("an earlier run\n")
    before = snapshot(tmp_path)
    assert main(["run", "--resume", str(partial), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--checkpoint-every 0" in err
    assert snapshot(tmp_path) == before


def test_resume_whose_training_file_is_missing_is_refused_and_touches_nothing(data, tmp_path, capsys):
    import shutil

    g = tmp_path / "g"
    shutil.copytree(data, g)
    out = tmp_path / "out"
    proc = start_run(g, out)
    partial = wait_for(proc, out, lambda p: (p / "collect_checkpoint.safetensors").is_file())
    assert partial is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (g / "SST-2" / "train.tsv").rename(g / "moved.tsv")
    before = snapshot(out)
    assert main(["run", "--resume", str(partial), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(out) == before
    (g / "moved.tsv").rename(g / "SST-2" / "train.tsv")  # and with the file back, the resume goes through
    assert main(["run", "--resume", str(partial), "--quiet"]) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("every", ["0", "3"])
def test_interrupt_says_what_was_kept(data, tmp_path, sig, every):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mft_engine.cli", "run", "--model", "bert-tiny-random", "--samples",
                             "400", "--batch-size", "8", "--checkpoint-every", every, "--quiet", "--data-dir", str(data),
                             "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            # a shell's background job inherits SIGINT ignored, and Python keeps it so
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ready = (lambda p: (p / "collect_checkpoint.safetensors").is_file()) if every != "0" else log_has("phase collect start")
    partial = wait_for(proc, out, ready)
    assert partial is not None
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode().strip()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    if every == "0":
        assert "nothing could be resumed" in err and (not out.exists() or not any(out.iterdir()))
    else:
        assert f"--resume {partial}" in err and (partial / "collect_checkpoint.safetensors").is_file()


FIXED_STAMP_RUN = textwrap.dedent("""
    import sys
    import mft_engine.report.folder as folder
    folder.timestamp = lambda: "20260101_000000"
    from mft_engine.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_two_runs_started_in_the_same_second_write_two_complete_folders(data, tmp_path):
    out = tmp_path / "out"
    args = ["run", "--model", "bert-tiny-random", "--samples", "64", "--batch-size", "8", "--quiet",
            "--data-dir", str(data), "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-c", FIXED_STAMP_RUN, *args, "--seed", str(s)],
                              stderr=subprocess.PIPE) for s in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mft_20260101_000000", "mft_20260101_000000_2"]
    seeds = sorted(json.loads((out / n / "results.json").read_text())["config"]["seed"] for n in names)
    assert seeds == [1, 2]
    for n in names:
        cfg = json.loads((out / n / "config.json").read_text())
        rec = json.loads((out / n / "results.json").read_text())
        assert cfg["seed"] == rec["config"]["seed"]
