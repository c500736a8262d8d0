"""`mft run` under torchrun (2 gloo processes, one thread each) selects the same mask as one process, and
only rank 0 writes a results folder."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mft_engine.cli import main
from mft_engine.collect import GradientState

ARGS = ["run", "--model", "bert-tiny-random", "--samples", "64", "--batch-size", "8", "--quiet"]


def _folder(parent):
    found = glob.glob(str(parent / "mft_*"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("mode", ["--train-mode", "--eval-mode"])
def test_two_processes_select_the_mask_one_process_selects(tmp_path, mode):
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", "-m", "mft_engine.cli", *ARGS, mode,
                        "--dist-backend", "gloo", "--out", str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, mode, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = _folder(tmp_path / "one"), _folder(tmp_path / "two")  # rank 1 wrote no folder of its own
    ma, mb = (load_file(glob.glob(f"{d}/mask*.safetensors")[0]) for d in (one, two))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    ra, rb = (json.load(open(f"{d}/results.json")) for d in (one, two))
    assert ra["counts"] == rb["counts"]
    assert [f["after"] for f in ra["fractions"]] == [f["after"] for f in rb["fractions"]]
    assert ra["collection"]["n_batches"] == rb["collection"]["n_batches"] == 8


def _launch(args, out, extra=(), popen=False):
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc-per-node", "2", "-m", "mft_engine.cli", *args, "--dist-backend", "gloo",
           "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)


def test_killed_torchrun_run_resumes_from_every_ranks_checkpoint(tmp_path):
    """Each rank checkpoints its own block; killing the launcher mid-collection keeps the partial folder, and
    `--resume` under the same number of processes ends with the mask of an uninterrupted run."""
    import signal
    import time

    args = [*ARGS[:4], "1200", *ARGS[5:], "--eval-mode", "--checkpoint-every", "2"]
    whole = _launch(args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    proc = _launch(args, tmp_path / "cut", popen=True)
    deadline = time.time() + 240
    found = []
    while time.time() < deadline and proc.poll() is None:
        found = glob.glob(str(tmp_path / "cut" / ".mft_*.partial" / "collect_checkpoint.rank1-of-2.safetensors"))
        if found:
            break
        time.sleep(0.05)
    assert found, "rank 1 wrote no checkpoint"
    proc.send_signal(signal.SIGTERM)  # the launcher passes it on to both ranks, which keep their checkpoints
    proc.wait(timeout=120)
    assert proc.returncode != 0
    (partial,) = glob.glob(str(tmp_path / "cut" / ".mft_*.partial"))
    # killed inside rank 1's block (rank 0 evaluates first, so it may have no checkpoint yet): on resume each
    # rank continues its own block from its own checkpoint, or starts it
    assert GradientState.load(f"{partial}/collect_checkpoint.rank1-of-2.safetensors").n_batches < 75
    assert not glob.glob(str(tmp_path / "cut" / "mft_*"))  # no finished folder from the killed run
    # another number of processes is refused in one line, the folder untouched
    one = subprocess.run([sys.executable, "-m", "mft_engine.cli", "run", "--resume", partial, "--quiet"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert one.returncode == 2 and "collected by 2 process(es)" in one.stderr, one.stderr
    # a checkpoint of another block of batches (another version's cut) is refused, not continued
    ckpt = f"{partial}/collect_checkpoint.rank1-of-2.safetensors"
    kept = open(ckpt, "rb").read()
    other = GradientState.load(ckpt)
    other.meta["block"] = [0, 1]
    other.save(ckpt)
    refused = _launch(["run", "--resume", partial, "--quiet"], tmp_path / "cut")
    assert refused.returncode != 0 and "holds a block of batches [0, 1]" in refused.stderr, refused.stderr[-3000:]
    open(ckpt, "wb").write(kept)
    resumed = _launch(["run", "--resume", partial, "--quiet"], tmp_path / "cut")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _folder(tmp_path / "whole"), _folder(tmp_path / "cut")
    ma, mb = (load_file(glob.glob(f"{d}/mask*.safetensors")[0]) for d in (a, b))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    ra, rb = (json.load(open(f"{d}/results.json")) for d in (a, b))
    assert ra["counts"] == rb["counts"] and rb["collection"]["resumed"] is True
    assert not glob.glob(f"{b}/collect_checkpoint*")  # checkpoints are deleted at commit


def test_accelerate_launch_selects_the_mask_one_process_selects(tmp_path):
    """`accelerate launch` (2 CPU processes) sets up the same process group as torchrun."""
    pytest.importorskip("accelerate")  # peft's dependency, present with the [quant] extra CI installs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "-m", "mft_engine.cli", *ARGS, "--dist-backend", "gloo", "--out", str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    ma, mb = (load_file(glob.glob(f"{_folder(tmp_path / d)}/mask*.safetensors")[0]) for d in ("one", "two"))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
