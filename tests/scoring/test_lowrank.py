"""Woodbury solves through the Gauss-Newton matrix's per-example factors against explicit solves (float64)."""
from __future__ import annotations

import pytest
import torch

from mft_engine.errors import ConfigError
from mft_engine.models import load_model
from mft_engine.scoring.curvature.fit import fit_inverse
from mft_engine.scoring.curvature.hvp import explicit_gauss_newton, flatten, random_like
from mft_engine.scoring.curvature.lowrank import chunk_examples_for, gauss_newton_lowrank, lowrank_solve
from mft_engine.scoring.objective import eval_objective

from ..conftest import synthetic_batch

NAMES = ["classifier.weight", "classifier.bias", "bert.encoder.layer.1.output.LayerNorm.weight",
         "bert.encoder.layer.0.attention.self.query.bias"]


def objective_for(classes: int):
    model = load_model("bert-tiny-random", classes, seed=0).model
    batches = [synthetic_batch(6, 8, 1, vocab=1000, num_labels=classes),
               synthetic_batch(5, 6, 2, vocab=1000, num_labels=classes)]
    return eval_objective(model, batches, NAMES, dtype=torch.float64)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-classes", "3-classes"])
def setup(request):
    obj = objective_for(request.param)
    rhs = random_like(obj.params(), torch.Generator().manual_seed(1))
    return request.param, obj, rhs, explicit_gauss_newton(obj)


@pytest.mark.parametrize("memory", [1e12, 1.0], ids=["one-chunk", "one-example-chunks"])
def test_woodbury_equals_the_explicit_solve_at_every_damping(setup, memory):
    classes, obj, rhs, G = setup
    dampings = [1e-6, 1e-3 * float(torch.diagonal(G).mean()), 1.0]
    sols, low = lowrank_solve(obj, rhs, dampings, memory_bytes=memory)
    assert low.m == obj.n * (1 if classes == 2 else classes)
    assert low.chunk_examples == (1 if memory == 1.0 else obj.n)
    # Chunks of one example: K needs n(n+1)/2 chunk computations; one chunk holds everything.
    assert low.factor_passes == (obj.n * (obj.n + 1) // 2 if memory == 1.0 else 1)
    b = flatten(rhs, NAMES)
    for d in dampings:
        exact = torch.linalg.solve(G + d * torch.eye(G.shape[0], dtype=G.dtype), b)
        # Relative error in norm: at λ = 1e-6 the system's condition number is ~1e5, so the explicit
        # solve itself is only good to ~1e-11.
        assert float((sols[d] - exact).norm() / exact.norm()) <= 1e-9, d
    # K's eigenvalues are n × G's non-zero eigenvalues.
    g_eig = torch.linalg.eigvalsh(G).flip(0)[: low.m]
    assert torch.allclose(low.eigenvalues.flip(0), obj.n * g_eig, rtol=1e-6, atol=1e-10 * float(g_eig.max()))


def test_woodbury_fit_reports_its_true_residual(setup, tmp_path):
    _, obj, rhs, G = setup
    fit = fit_inverse("w", obj, rhs, solver="woodbury", tol=1e-8, fits_dir=tmp_path)
    assert fit.solver == "woodbury" and fit.converged and fit.iterations == 0
    assert fit.residuals == [1.0, fit.true_residual] and fit.true_residual <= 1e-8
    exact = torch.linalg.solve(G + fit.damping * torch.eye(G.shape[0], dtype=G.dtype), flatten(rhs, NAMES))
    assert torch.allclose(flatten(fit.solution, NAMES), exact, rtol=1e-7, atol=1e-9 * float(exact.abs().max()))
    assert fit.options["factors"] > 0 and fit.options["factor_passes"] >= 1
    # A prebuilt LowRankGN (a damping sweep) gives the same solution for another λ without new Gram work.
    low = gauss_newton_lowrank(obj, rhs)
    other = fit_inverse("w2", obj, rhs, solver="woodbury", damping=0.5, lowrank=low)
    exact2 = torch.linalg.solve(G + 0.5 * torch.eye(G.shape[0], dtype=G.dtype), flatten(rhs, NAMES))
    assert torch.allclose(flatten(other.solution, NAMES), exact2, rtol=1e-8)


def test_woodbury_rejects_bad_dampings_and_the_hessian(setup):
    _, obj, rhs, _ = setup
    for bad in ([], [0.0], [-1.0], [float("nan")]):
        with pytest.raises(ConfigError, match="damping"):
            lowrank_solve(obj, rhs, bad)
    with pytest.raises(ConfigError, match="woodbury"):
        fit_inverse("x", obj, rhs, damping=1.0, solver="woodbury", curvature="hessian")
    with pytest.raises(ConfigError, match="lacks"):
        gauss_newton_lowrank(obj, {NAMES[0]: rhs[NAMES[0]]})


def test_chunk_size_follows_the_memory_budget():
    obj = objective_for(2)
    p = sum(t.numel() for t in obj.params().values())
    assert chunk_examples_for(obj, 2 * 8 * p * 7) == 7  # float64 factors, two chunks
    assert chunk_examples_for(obj, 0) == 1
    assert chunk_examples_for(obj, 1e15) == obj.n


def test_bench_cg_cli_runs_each_solver_and_woodbury_meets_tol(capsys):
    """The embedded SST-2, bert-tiny-random, 8 sentences: Woodbury in float64 solves the system;
    CG and PCG report their histories within the budget."""
    import json

    from mft_engine.cli import main

    code = main(["bench", "cg", "--model", "bert-tiny-random", "--samples", "8", "--solvers", "woodbury,cg,pcg",
                 "--damping-factors", "1e-3,1", "--budget-s", "5", "--tol", "1e-4", "--dtype", "float64", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["samples"] == 8 and data["dtype"] == "float64" and data["parameters"] > 0
    runs = {(r["solver"], r["damping_factor"]): r for r in data["runs"]}
    assert set(runs) == {(s, f) for s in ("woodbury", "cg", "pcg") for f in (1e-3, 1.0)}
    for f in (1e-3, 1.0):
        w = runs[("woodbury", f)]
        # (b − Fᵀα)/λ cancels: float64 keeps the residual near κ·1e-16 (κ ≈ 5e5 at the default λ here).
        assert w["converged"] and w["true_residual"] <= 1e-4 and w["factors"] == 8
        assert w["damping"] == pytest.approx(f * data["mean_diagonal"])
        for s in ("cg", "pcg"):
            r = runs[(s, f)]
            assert r["residuals"][0] == 1.0 and len(r["residuals"]) == r["iterations"] + 1
            assert r["true_residual"] == pytest.approx(r["final_residual"], rel=1e-3, abs=1e-9)


@pytest.mark.parametrize("args", [["--solvers", "newton"], ["--damping-factors", "0"], ["--dtype", "float16"],
                                  ["--budget-s", "0"], ["--samples", "0"], ["--tol", "1"]])
def test_bench_cg_bad_input_exits_2(args, capsys):
    from mft_engine.cli import main

    assert main(["bench", "cg", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mft: error")
