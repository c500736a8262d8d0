"""`mft run --device xla` (PJRT_DEVICE=CPU) against the same run on the CPU: the counts, the mask's
Jaccard index, and the identical mask when both devices select from the same saved gradient state. Each
run is its own `python -m mft_engine.cli` process, as users run it (and apart from the XLA runtime state
the op tests of this session leave behind)."""
from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("torch_xla")

ARGS = ["run", "--model", "bert-tiny-random", "--samples", "64", "--batch-size", "8", "--eval-mode", "--quiet",
        "--no-control", "--save-state"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-m", "mft_engine.cli", *ARGS, "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    (folder,) = glob.glob(str(out / "mft_*"))
    return folder, json.load(open(f"{folder}/results.json"))


def _indices(folder):
    return load_file(glob.glob(f"{folder}/mask*.safetensors")[0])["indices"]


def test_run_on_xla_matches_the_cpu_run(tmp_path):
    cpu, rc = _run(tmp_path, "cpu", "--device", "cpu")
    xla, rx = _run(tmp_path, "xla", "--device", "xla")
    assert rx["device"]["device"].startswith("xla")
    # the same test counts: g differs by the devices' summation order only, far from any boundary here
    assert rx["counts"]["eligible"] == rc["counts"]["eligible"]
    det_c, det_x = rc["counts"]["detrimental_total"], rx["counts"]["detrimental_total"]
    assert abs(det_c - det_x) <= 1e-4 * det_c, (det_c, det_x)
    a, b = set(_indices(cpu).tolist()), set(_indices(xla).tolist())
    jaccard = len(a & b) / len(a | b)
    print(f"xla vs cpu: detrimental {det_x} vs {det_c}, mask jaccard {jaccard:.6f}")
    assert jaccard > 0.99
    # the same saved state: both devices select exactly the same parameters
    again, _ = _run(tmp_path, "xla_state", "--device", "xla", "--state", f"{cpu}/gradient_state.safetensors")
    assert torch.equal(_indices(again), _indices(cpu))
