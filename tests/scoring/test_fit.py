"""Inverse fits: solve, save by name, load by name; damping and missing-fit errors (tiny model, float64)."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine.errors import ConfigError
from mft_engine.models import load_model
from mft_engine.scoring.curvature.fit import InverseFit, fit_inverse, load_fit
from mft_engine.scoring.curvature.hvp import explicit_gauss_newton, explicit_hessian, flatten, gnvp, hvp, random_like
from mft_engine.scoring.objective import eval_objective

from ..conftest import synthetic_batch

NAMES = ["classifier.weight", "classifier.bias", "bert.encoder.layer.1.output.LayerNorm.weight"]


@pytest.fixture(scope="module")
def objective():
    model = load_model("bert-tiny-random", 2, seed=0).model
    batches = [synthetic_batch(6, 8, 1, vocab=1000), synthetic_batch(5, 6, 2, vocab=1000)]
    return eval_objective(model, batches, NAMES, dtype=torch.float64)


@pytest.fixture(scope="module")
def rhs(objective):
    return random_like(objective.params(), torch.Generator().manual_seed(0))


def relative_residual(objective, s, rhs, damping, product=gnvp):
    lhs = flatten(product(objective, s), NAMES) + damping * flatten(s, NAMES)
    b = flatten(rhs, NAMES)
    return float(torch.linalg.norm(lhs - b) / torch.linalg.norm(b))


def test_fit_solves_saves_and_reloads(objective, rhs, tmp_path):
    steps = []
    fit = fit_inverse("influence-train", objective, rhs, tol=1e-6, max_iter=300, fits_dir=tmp_path,
                      progress=lambda it, rel: steps.append((it, rel)))
    assert fit.converged and fit.solver == "cg" and fit.curvature == "gn"
    assert fit.residuals[-1] <= 1e-6 and steps[-1] == (fit.iterations, fit.residuals[-1])
    # The default damping is 1e-3 × the mean GN diagonal, both recorded.
    G = explicit_gauss_newton(objective)
    assert fit.mean_diagonal == pytest.approx(float(torch.diagonal(G).mean()), rel=1e-9)
    assert fit.damping == pytest.approx(1e-3 * fit.mean_diagonal) and fit.damping_factor == pytest.approx(1e-3)
    # s solves (G + λI) s = rhs: with gnvp, and against the explicit matrix.
    assert relative_residual(objective, fit.solution, rhs, fit.damping) <= 1e-6
    assert fit.true_residual <= 1e-6
    exact = torch.linalg.solve(G + fit.damping * torch.eye(G.shape[0], dtype=G.dtype), flatten(rhs, NAMES))
    assert torch.allclose(flatten(fit.solution, NAMES), exact, rtol=1e-4, atol=1e-6 * exact.abs().max())

    folder = tmp_path / "influence-train"
    assert fit.path == folder and sorted(p.name for p in tmp_path.iterdir()) == ["influence-train"]
    record = json.loads((folder / "fit.json").read_text())
    for key in ("solver", "curvature", "damping", "mean_diagonal", "residuals", "iterations", "converged",
                "seconds", "names", "n_train"):
        assert key in record, key
    assert record["n_train"] == 11 and record["names"] == NAMES

    back = load_fit(tmp_path, "influence-train")
    assert isinstance(back, InverseFit) and back.path == folder
    assert list(back.solution) == NAMES
    assert all(torch.equal(back.solution[n], fit.solution[n]) for n in NAMES)
    assert back.to_dict() == fit.to_dict()


def test_pcg_fit_matches_the_explicit_solve_and_cg_exploits_the_low_rank(objective, rhs):
    G = explicit_gauss_newton(objective)
    damping = 1e-1 * float(torch.diagonal(G).mean())
    exact = torch.linalg.solve(G + damping * torch.eye(G.shape[0], dtype=G.dtype), flatten(rhs, NAMES))
    fits = {s: fit_inverse(s, objective, rhs, damping=damping, solver=s, tol=1e-7, max_iter=1000) for s in ("cg", "pcg")}
    for fit in fits.values():
        assert fit.converged and fit.true_residual <= 1e-6
        assert torch.allclose(flatten(fit.solution, NAMES), exact, rtol=1e-4, atol=1e-6 * exact.abs().max())
    # G + λI over 11 examples has 12 distinct eigenvalues at most: CG ends within 12 steps (plus rounding).
    # Jacobi scaling spreads the λ cluster over diag(G)'s range, so PCG needs many more: the reason
    # pcg is not the default.
    assert fits["cg"].iterations <= 13 < fits["pcg"].iterations, (fits["cg"].iterations, fits["pcg"].iterations)


def test_pcg_needs_the_gauss_newton_curvature(objective, rhs):
    with pytest.raises(ConfigError, match="pcg"):
        fit_inverse("x", objective, rhs, damping=1.0, solver="pcg", curvature="hessian")


def test_refit_replaces_the_old_fit_atomically(objective, rhs, tmp_path):
    fit_inverse("f", objective, rhs, damping=1.0, max_iter=5, fits_dir=tmp_path)
    second = fit_inverse("f", objective, rhs, damping=2.0, max_iter=5, fits_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temporary or old folders left
    back = load_fit(tmp_path, "f")
    assert back.damping == 2.0 and torch.equal(flatten(back.solution), flatten(second.solution))


def test_a_given_mean_diagonal_sets_the_default_damping(objective, rhs):
    fit = fit_inverse("given", objective, rhs, mean_diagonal=2.5, max_iter=3)
    assert fit.mean_diagonal == 2.5 and fit.damping == pytest.approx(2.5e-3)


@pytest.mark.parametrize("damping", [0.0, -1e-3])
def test_non_positive_damping_is_a_config_error(objective, rhs, damping):
    with pytest.raises(ConfigError, match=r"damping .* must be > 0"):
        fit_inverse("x", objective, rhs, damping=damping)


def test_missing_fit_names_the_fit_and_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"no fit named 'absent' in .*" + tmp_path.name):
        load_fit(tmp_path, "absent")
    with pytest.raises(ConfigError, match="plain folder name"):
        load_fit(tmp_path, "../escape")


def test_bad_options_and_rhs(objective, rhs):
    with pytest.raises(ConfigError, match="solver"):
        fit_inverse("x", objective, rhs, solver="newton")
    with pytest.raises(ConfigError, match="curvature"):
        fit_inverse("x", objective, rhs, curvature="fisher")
    with pytest.raises(ConfigError, match="missing"):
        fit_inverse("x", objective, {n: rhs[n] for n in NAMES[:2]})
    with pytest.raises(ConfigError, match="shape"):
        fit_inverse("x", objective, {**rhs, "classifier.bias": torch.zeros(5)})


def test_lissa_fit_matches_cg_on_one_batch(objective, rhs):
    one = eval_objective(objective.model, objective.batches[:1], NAMES)
    damping = 1.0  # G has rank ≤ 6 here: λ sets the rate of the null space, (1 − λ/scale) per step
    cg = fit_inverse("cg", one, rhs, damping=damping, tol=1e-9, max_iter=300)
    fit = fit_inverse("lissa", one, rhs, damping=damping, solver="lissa", lissa_scale=4.0, lissa_depth=300,
                      tol=1e-7)
    assert fit.solver == "lissa" and fit.converged and fit.options["lissa_batches"] == 1
    assert fit.iterations < 300 and fit.residuals[-1] <= 1e-7
    assert fit.true_residual == pytest.approx(relative_residual(one, fit.solution, rhs, damping), rel=1e-6)
    assert torch.allclose(flatten(fit.solution), flatten(cg.solution), rtol=1e-5, atol=1e-6)


def test_lissa_fit_over_batches_is_stochastic_and_averaged(objective, rhs):
    damping = 1.0
    cg = fit_inverse("cg", objective, rhs, damping=damping, tol=1e-9, max_iter=300)
    # One batch per step (two batches), two repetitions averaged; scale from power iteration.
    fit = fit_inverse("lissa", objective, rhs, damping=damping, solver="lissa", lissa_depth=30,
                      lissa_repetitions=2)
    assert fit.options["lissa_batches"] == 2 and fit.options["lissa_scale"] > 2.0  # λ_max(G) ≈ 2.4, + λ
    assert fit.iterations == 60 and len(fit.residuals) == 61  # the last: the average's true residual
    assert fit.true_residual == pytest.approx(fit.residuals[-1], rel=1e-9)
    assert fit.true_residual == pytest.approx(relative_residual(objective, fit.solution, rhs, damping), rel=1e-6)
    err = torch.linalg.norm(flatten(fit.solution) - flatten(cg.solution)) / torch.linalg.norm(flatten(cg.solution))
    assert float(err) < 0.05, float(err)


def test_block_fit_solves_each_diagonal_block(objective, rhs):
    damping = 1e-2
    fit = fit_inverse("block", objective, rhs, damping=damping, solver="cg-block", tol=1e-8, max_iter=300)
    assert fit.converged and list(fit.options["blocks"]) == NAMES
    G = explicit_gauss_newton(objective)
    start = 0
    for n in NAMES:
        size = rhs[n].numel()
        sl = slice(start, start + size)
        exact = torch.linalg.solve(G[sl, sl] + damping * torch.eye(size, dtype=G.dtype), rhs[n].reshape(-1))
        assert torch.allclose(fit.solution[n].reshape(-1), exact, rtol=1e-5, atol=1e-7 * exact.abs().max())
        start += size
    assert fit.residuals[-1] <= 1e-8 < fit.true_residual  # the couplings are what the blocks leave out


def test_hessian_fit_with_enough_damping(objective, rhs):
    H = explicit_hessian(objective)
    damping = abs(float(torch.linalg.eigvalsh(H).min())) + 0.05
    fit = fit_inverse("h", objective, rhs, damping=damping, curvature="hessian", tol=1e-7, max_iter=300)
    assert fit.converged and fit.curvature == "hessian"
    assert relative_residual(objective, fit.solution, rhs, damping, product=hvp) <= 1e-7
