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


def test_checkpoints_are_refused_under_torchrun(tmp_path):
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    r = subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", "-m", "mft_engine.cli", *ARGS,
                        "--checkpoint-every", "2", "--dist-backend", "gloo", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert "single-process only for now" in r.stderr
    assert not any(tmp_path.iterdir())


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
