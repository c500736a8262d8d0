"""Running the `mft` command both ways the distributed tests compare: under torchrun with two gloo ranks
of one thread each, and in this process with one thread (as each rank has)."""
import os
import shutil
import subprocess
import sys

import torch


def torchrun_cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m mft_engine.cli ARGS --dist-backend gloo`, one thread per
    rank; stdout and stderr captured."""
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", "-m", "mft_engine.cli", *args,
                           "--dist-backend", "gloo"], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def main_one_thread(args: list[str]) -> int:
    """`mft ARGS` in this process with one thread; the suite's thread count is put back afterwards."""
    from mft_engine.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)
