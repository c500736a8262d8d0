"""Kill a run mid-collection, resume it, and get identical sums (train mode: the RNG state is restored)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from mft_engine.collect import GradientState
from mft_engine.cli import main

from ..cli.test_bad_input import sst2_folder

ARGS = ["--model", "bert-tiny-random", "--samples", "400", "--batch-size", "8", "--checkpoint-every", "3",
        "--quiet", "--no-control"]


def test_kill_and_resume_gives_identical_sums(tmp_path):
    rows = [f"{'good fun' if i % 2 else 'dull boring'} film number {i} " + "word " * (i % 23) + f"\t{i % 2}"
            for i in range(400)]
    g = sst2_folder(tmp_path / "g", train_rows=rows)
    ref_out = tmp_path / "ref"
    assert main(["run", *ARGS, "--data-dir", str(g), "--out", str(ref_out)]) == 0
    (ref_dir,) = list(ref_out.iterdir())
    ref = GradientState.load(ref_dir / "gradient_state.safetensors")

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mft_engine.cli", "run", *ARGS, "--data-dir", str(g),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob(".mft_*.partial/collect_checkpoint.safetensors")) if out.exists() else []
        if found:
            ckpt = found[0]
            break
        time.sleep(0.005)
    assert ckpt is not None, "the run finished or failed before its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = ckpt.parent
    done_before = GradientState.load(ckpt).n_batches
    assert 0 < done_before < 50

    assert main(["run", "--resume", str(partial), "--quiet"]) == 0
    assert not partial.exists()
    (final,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    got = GradientState.load(final / "gradient_state.safetensors")
    assert got.batch_sizes == ref.batch_sizes
    for n in ref.names:
        assert torch.equal(got.grad_sum[n], ref.grad_sum[n]), n
        assert torch.equal(got.sq_sum[n], ref.sq_sum[n]), n
        assert torch.equal(got.pos_count[n], ref.pos_count[n]), n
    assert got.batch_losses == ref.batch_losses
