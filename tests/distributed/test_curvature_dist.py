"""Sharded curvature under torchrun (2 processes, gloo, CPU) equals one process within the stated
tolerance: the Gauss-Newton and Hessian products, the exact diagonal, the batched products and the
inverse solves (CG, PCG, block CG, Woodbury with all factors at once and in chunks); LiSSA is refused."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mft_engine.collect.distributed import deal_by_cost

from . import dist_curvature
from .launch import main_one_thread, torchrun_cli

SCRIPT = Path(dist_curvature.__file__)


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun")
    cmd = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _flat(p: dict) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in p.values()])


def _rel(a: dict, b: dict) -> float:
    fa, fb = _flat(a), _flat(b)
    return float((fa - fb).norm() / fb.norm())


def test_block_rows_are_shared_by_cost():
    rows = deal_by_cost([12 - i for i in range(12)], 2)  # the 12 chunk rows of minilm's 256 examples
    assert sorted(rows[0] + rows[1]) == list(range(12))
    assert sum(12 - i for i in rows[0]) == sum(12 - i for i in rows[1]) == 39
    assert deal_by_cost([3, 2, 1], 1) == [[0, 1, 2]]
    assert deal_by_cost([1], 3) == [[0], [], []]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("curvature") / "two.pt"
    r = torchrun(str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(out, weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank
    try:
        one = dist_curvature.results(dist_curvature.objective())
    finally:
        torch.set_num_threads(threads)
    return two, one


def test_products_and_diagonal_equal_one_process(both):
    two, one = both
    assert two["n"] == one["n"] == dist_curvature.SAMPLES
    # per entry: the float64 sum of the ranks' fp32 partials, rounded once, against one running fp32 sum
    # over differently sliced batches (measured ≤ 1.7e-7)
    for key in ("gnvp", "hvp", "diagonal"):
        assert _rel(two[key], one[key]) <= 1e-6, key
    for key in ("batched_factors", "batched_vmap"):
        assert all(_rel(a, b) <= 1e-6 for a, b in zip(two[key], one[key])), key
    assert all((t >= 0).all() for t in two["diagonal"].values())


def test_solves_equal_one_process(both):
    two, one = both
    # CG and block CG: the products differ by rounding (the ranks' example shares are row slices of the
    # batches), so the iterates part by up to the solve's own error: ≤ 10 × tol (measured 5.8e-5, 1.1e-5)
    for key in ("cg", "cg-block"):
        assert _rel(two[key][0], one[key][0]) <= 10 * dist_curvature.TOL, key
    assert max(one["cg"][1], two["cg"][1]) <= 10 * dist_curvature.TOL  # both converged (true residual, fp32)
    # Woodbury: K and Fb exact (chunked) or symmetrised (all factors at once); Fᵀα summed in rank order
    for key in ("woodbury", "woodbury_chunked"):
        assert _rel(two[key][0], one[key][0]) <= 1e-6, key
        assert two[key][1] == pytest.approx(one[key][1], rel=0.05), key
    assert two["woodbury_chunked"][2] == one["woodbury_chunked"][2] == 8
    # PCG's preconditioner diag G + λ differs by the diagonal's rounding; after 100 unconverged iterations
    # the iterates drift apart by about 1e-3 (measured 1.8e-3)
    assert _rel(two["pcg"][0], one["pcg"][0]) <= 1e-2


def test_lissa_is_refused_by_several_processes():
    r = torchrun("unused", "lissa")
    assert r.returncode != 0
    assert "LiSSA's steps each use one batch in turn" in r.stderr + r.stdout


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    from ..cli.test_bad_input import sst2_folder
    from ..train.conftest import keyword_rows

    return sst2_folder(tmp_path_factory.mktemp("curv_glue"), train_rows=keyword_rows(40, 0),
                       dev_rows=keyword_rows(64, 1, flip=0.2))


FIT_ARGS = ["fit-influence", "--model", "bert-tiny-random", "--samples", "32", "--batch-size", "8", "--solver",
            "woodbury", "--max-length", "32", "--quiet", "--json"]


def test_fit_influence_under_torchrun_writes_one_fit_equal_to_one_process(glue, tmp_path, capsys):
    from safetensors.torch import load_file

    r = torchrun_cli([*FIT_ARGS, "--data-dir", str(glue), "--fits-dir", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 reports, rank 1 is silent
    assert main_one_thread([*FIT_ARGS, "--data-dir", str(glue), "--fits-dir", str(tmp_path / "one")]) == 0
    (name,) = [p.name for p in (tmp_path / "two").iterdir()]
    assert name == reports[0]["name"] and not list((tmp_path / "two").glob(".*"))
    a = load_file(str(tmp_path / "one" / name / "solution.safetensors"))
    b = load_file(str(tmp_path / "two" / name / "solution.safetensors"))
    # g and H summed over the ranks' blocks in rank order: λ and the solution move by rounding only
    assert _rel(b, a) <= 1e-5
    rec = json.loads((tmp_path / "two" / name / "fit.json").read_text())
    assert rec["n_train"] == 32 and rec["options"]["factors"] == 32


def test_bench_cg_under_torchrun_reports_once(glue):
    r = torchrun_cli(["bench", "cg", "--model", "bert-tiny-random", "--data-dir", str(glue), "--samples", "16",
                       "--solvers", "cg,woodbury", "--budget-s", "30", "--quiet", "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("{")]
    data = json.loads(line)
    assert data["processes"] == 2 and data["samples"] == 16
    woodbury = next(run for run in data["runs"] if run["solver"] == "woodbury")
    assert woodbury["factors"] == 16 and woodbury["communication_s"] >= 0


SWEEP_ARGS = ["influence", "--model", "bert-tiny-random", "--samples", "32", "--batch-size", "8", "--max-length", "32",
              "--scorers", "gradient,influence,magnitude", "--solver", "woodbury", "--n-removed", "10,3000",
              "--resamples", "200", "--heldout-rows", "last:8", "--quiet", "--json"]


def test_influence_sweep_under_torchrun_equals_one_process(glue, tmp_path, capsys):
    """Two ranks deal out the cells and write them into rank 0's folder; the rows equal one process's
    (gradient, magnitude, random: the same masks and forwards; influence: its sharded solve moves the
    scores by rounding, so its cells agree wherever its lowest-N picks do)."""
    import numpy as np

    r = torchrun_cli([*SWEEP_ARGS, "--data-dir", str(glue), "--out", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("{")]  # rank 0 alone reports
    two = json.loads(line)
    assert main_one_thread([*SWEEP_ARGS, "--data-dir", str(glue), "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert two["cells"] == {"computed": 14, "finished_earlier": 0, "processes": 2}
    assert len(list((tmp_path / "two").iterdir())) == 1  # rank 1 wrote no folder of its own
    (run_one,), (run_two,) = list((tmp_path / "one").iterdir()), list((tmp_path / "two").iterdir())
    orders = [np.load(run / "cells" / "bert-tiny-random" / "order_influence.npy") for run in (run_one, run_two)]
    key = ("scorer", "arm", "n_removed")
    rows_one = {tuple(r[k] for k in key): r for r in one["sweeps"]}
    rows_two = {tuple(r[k] for k in key): r for r in two["sweeps"]}
    assert rows_one.keys() == rows_two.keys()
    for k, a in rows_one.items():
        b = rows_two[k]
        same_picks = k[0] != "influence" or set(orders[0][:k[2]]) == set(orders[1][:k[2]])
        if not same_picks:
            continue
        for s in ("heldout", "evaluation", "scoring"):
            assert b[f"{s}_accuracy"] == a[f"{s}_accuracy"], (k, s)
            if k[1] != "matched" or k[0] != "influence":
                assert b[f"{s}_loss"] == pytest.approx(a[f"{s}_loss"], rel=1e-6, abs=1e-9), (k, s)
