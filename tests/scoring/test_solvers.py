"""CG, LiSSA and the block-diagonal solve against torch.linalg.solve on small SPD systems (float64)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from mft_engine.errors import ConfigError, MftError
from mft_engine.scoring.curvature.solvers import (
    Block,
    SolverError,
    block_diagonal_solve,
    conjugate_gradient,
    lissa,
    power_iteration,
)


def spd(n, seed, cond=50.0, dtype=torch.float64):
    """A random symmetric positive definite matrix with eigenvalues spread over [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
    eig = torch.logspace(0, math.log10(cond), n, dtype=dtype)
    return (q * eig) @ q.T


def rhs(n, seed, dtype=torch.float64):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_solver_error_is_an_mft_and_arithmetic_error():
    assert issubclass(SolverError, MftError) and issubclass(SolverError, ArithmeticError)


@pytest.mark.parametrize("seed", range(3))
def test_cg_matches_linalg_solve_and_its_residuals_decrease(seed):
    A, b = spd(40, seed), rhs(40, seed + 10)
    seen = []
    res = conjugate_gradient(lambda v: A @ v, b, tol=1e-10, max_iter=200,
                             callback=lambda it, rel, x: seen.append((it, rel, x.clone())))
    exact = torch.linalg.solve(A, b)
    assert res.converged and res.method == "cg" and res.seconds >= 0
    assert torch.allclose(res.x, exact, rtol=1e-8, atol=1e-10)
    assert res.residuals[0] == 1.0 and res.residuals[-1] <= 1e-10
    assert len(res.residuals) == res.iterations + 1 == len(seen) + 1
    assert [s[1] for s in seen] == res.residuals[1:]
    # CG minimises the A-norm of the error over growing Krylov spaces: strictly decreasing.
    errs = [float((x - exact) @ A @ (x - exact)) for _, _, x in seen]
    assert all(a > b for a, b in itertools.pairwise(errs))
    # The 2-norm residual of CG may rise now and then (cond 50), but falls over any 5 iterations here...
    assert all(a > b for a, b in zip(res.residuals, res.residuals[5:]))
    # ...and strictly at every iteration on a well-conditioned system (cond 4).
    A4 = spd(40, seed, cond=4.0)
    r4 = conjugate_gradient(lambda v: A4 @ v, b, tol=1e-10).residuals
    assert all(a > b for a, b in itertools.pairwise(r4))
    # The true residual agrees with the recorded one.
    assert torch.linalg.norm(b - A @ res.x) / torch.linalg.norm(b) <= 1e-9


def badly_scaled(n, seed, spread=1e4):
    """D^½ A D^½ with A well conditioned and D's entries spread over `spread`: the shape of a network's
    curvature, whose diagonal differs by orders of magnitude between parameter tensors."""
    d = torch.logspace(0, math.log10(spread), n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    A = spd(n, seed, cond=5.0)
    return d.sqrt()[:, None] * A * d.sqrt()[None, :]


@pytest.mark.parametrize("seed", range(3))
def test_pcg_matches_linalg_solve_and_beats_cg_on_a_badly_scaled_system(seed):
    A, b = badly_scaled(60, seed), rhs(60, seed + 20)
    exact = torch.linalg.solve(A, b)
    seen = []
    pcg = conjugate_gradient(lambda v: A @ v, b, tol=1e-10, max_iter=500, preconditioner=torch.diagonal(A).clone(),
                             callback=lambda it, rel, x: seen.append(x.clone()))
    assert pcg.converged and pcg.method == "pcg"
    assert torch.allclose(pcg.x, exact, rtol=1e-7, atol=1e-10 * exact.abs().max())
    # Residuals are the unpreconditioned ‖b − Ax‖/‖b‖, as CG's.
    assert pcg.residuals[0] == 1.0
    assert torch.linalg.norm(b - A @ pcg.x) / torch.linalg.norm(b) <= 1e-9
    # PCG minimises the same A-norm error over growing (preconditioned) Krylov spaces.
    errs = [float((x - exact) @ A @ (x - exact)) for x in seen]
    assert all(a >= b for a, b in itertools.pairwise(errs))
    cg = conjugate_gradient(lambda v: A @ v, b, tol=1e-10, max_iter=500)
    assert cg.method == "cg" and pcg.iterations * 3 < cg.iterations, (pcg.iterations, cg.iterations)


def test_pcg_with_a_unit_preconditioner_is_cg():
    A, b = spd(30, 5), rhs(30, 6)
    cg = conjugate_gradient(lambda v: A @ v, b, tol=1e-9, max_iter=100)
    pcg = conjugate_gradient(lambda v: A @ v, b, tol=1e-9, max_iter=100, preconditioner=torch.ones(30, dtype=A.dtype))
    assert pcg.iterations == cg.iterations and torch.allclose(pcg.x, cg.x, rtol=1e-12, atol=1e-14)
    assert pcg.residuals == pytest.approx(cg.residuals, rel=1e-9)


@pytest.mark.parametrize("bad", [torch.zeros(4), -torch.ones(4), torch.tensor([1.0, float("nan"), 1.0, 1.0]),
                                 torch.tensor([1.0, float("inf"), 1.0, 1.0]), torch.ones(3)])
def test_pcg_rejects_a_preconditioner_that_is_not_positive_or_misshapen(bad):
    A, b = spd(4, 0), rhs(4, 1)
    with pytest.raises(ConfigError, match="preconditioner"):
        conjugate_gradient(lambda v: A @ v, b, preconditioner=bad.double())


def test_cg_stops_at_tol_and_reports_non_convergence():
    A, b = spd(60, 3, cond=1e4), rhs(60, 4)
    res = conjugate_gradient(lambda v: A @ v, b, tol=1e-2)
    assert res.converged and res.residuals[-1] <= 1e-2 < res.residuals[-2]
    short = conjugate_gradient(lambda v: A @ v, b, tol=1e-12, max_iter=3)
    assert not short.converged and short.iterations == 3 and len(short.residuals) == 4


def test_cg_warm_start_and_zero_rhs():
    A, b = spd(20, 5), rhs(20, 6)
    exact = torch.linalg.solve(A, b)
    res = conjugate_gradient(lambda v: A @ v, b, x0=exact, tol=1e-8)
    assert res.iterations == 0 and res.converged
    zero = conjugate_gradient(lambda v: A @ v, torch.zeros(20, dtype=torch.float64))
    assert zero.converged and torch.count_nonzero(zero.x) == 0


def test_cg_float32():
    A, b = spd(30, 7, dtype=torch.float32), rhs(30, 8, dtype=torch.float32)
    res = conjugate_gradient(lambda v: A @ v, b, tol=1e-5, max_iter=100)
    assert res.x.dtype == torch.float32 and res.converged
    assert torch.allclose(res.x, torch.linalg.solve(A, b), rtol=1e-4, atol=1e-5)


def test_cg_raises_on_an_indefinite_matrix():
    A = spd(20, 9) - 5.0 * torch.eye(20, dtype=torch.float64)  # eigenvalues in [-4, 45]
    with pytest.raises(SolverError, match=r"non-positive curvature .* at iteration \d+ \(relative residual"):
        conjugate_gradient(lambda v: A @ v, rhs(20, 10), tol=1e-12, max_iter=100)


def test_cg_raises_on_nan():
    A, b = spd(10, 11), rhs(10, 12)
    calls = []

    def broken(v):
        calls.append(1)
        out = A @ v
        if len(calls) == 3:
            out[0] = float("nan")
        return out

    with pytest.raises(SolverError, match="NaN or Inf .* iteration 3"):
        conjugate_gradient(broken, b, tol=1e-12)
    b[1] = float("inf")
    with pytest.raises(SolverError, match="right-hand side"):
        conjugate_gradient(lambda v: A @ v, b)
    with pytest.raises(ConfigError):
        conjugate_gradient(lambda v: A @ v, rhs(10, 1), tol=0)


def test_lissa_matches_linalg_solve():
    A, b = spd(20, 13, cond=20.0), rhs(20, 14)
    lam = 0.5
    exact = torch.linalg.solve(A + lam * torch.eye(20, dtype=torch.float64), b)
    scale = 1.1 * (20.0 + lam)
    res = lissa(lambda v: A @ v, b, damping=lam, scale=scale, depth=2000, tol=1e-9)
    assert res.converged and res.method == "lissa"
    assert torch.allclose(res.x, exact, rtol=1e-7, atol=1e-9)
    assert res.residuals[-1] <= 1e-9 and res.iterations == len(res.residuals) < 2000
    assert all(math.isfinite(n) for n in res.norms)
    # Without tol it runs the full depth; the residual of the returned iterate is the last one.
    full = lissa(lambda v: A @ v, b, damping=lam, scale=scale, depth=50)
    assert full.iterations == 50
    true = torch.linalg.norm(b - (A @ full.x + lam * full.x)) / torch.linalg.norm(b)
    assert float(true) == pytest.approx(full.residuals[-1], rel=1e-9)


def test_lissa_stochastic_matvec_averages_repetitions():
    # Four "mini-batch" curvatures whose mean is A; the step index picks one, as a data loader would.
    A = spd(15, 15, cond=10.0)
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(15, 15, generator=g, dtype=torch.float64) * 0.3 for _ in range(2)]
    noise = [e + e.T for e in noise]
    parts = [A + noise[0], A - noise[0], A + noise[1], A - noise[1]]
    b, lam = rhs(15, 16), 1.0
    steps = []

    def minibatch(v, step):
        steps.append(step)
        pick = int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(step)))
        return parts[pick] @ v

    scale = 1.5 * float(max(torch.linalg.eigvalsh(p).max() for p in parts) + lam)
    res = lissa(minibatch, b, damping=lam, scale=scale, depth=200, repetitions=4,
                residual_matvec=lambda v: A @ v)
    assert steps == list(range(800)) and res.iterations == 800
    exact = torch.linalg.solve(A + lam * torch.eye(15, dtype=torch.float64), b)
    err = float(torch.linalg.norm(res.x - exact) / torch.linalg.norm(exact))
    assert len(res.residuals) == 801  # the last entry: the true residual of the average
    assert err < 0.1 and res.residuals[-1] < 0.1, (err, res.residuals[-1])
    one = lissa(minibatch, b, damping=lam, scale=scale, depth=200, repetitions=1)
    assert float(torch.linalg.norm(one.x - exact) / torch.linalg.norm(exact)) > err  # averaging helps


def test_lissa_detects_divergence_when_scale_is_too_small():
    A, b = spd(20, 17, cond=40.0), rhs(20, 18)
    lam_max = float(torch.linalg.eigvalsh(A).max())
    with pytest.raises(SolverError, match=r"lissa diverged at repetition 0, step \d+: .* scale"):
        lissa(lambda v: A @ v, b, damping=0.1, scale=lam_max / 4, depth=1000)
    with pytest.raises(SolverError, match="NaN or Inf"):
        lissa(lambda v: torch.full_like(v, float("nan")), b, damping=0.1, scale=100.0, depth=5)
    with pytest.raises(ConfigError):
        lissa(lambda v: A @ v, b, damping=0.1, scale=0.0, depth=5)


def test_block_diagonal_solve_matches_solving_each_block():
    sizes = [5, 12, 8]
    A = spd(sum(sizes), 19)
    b = rhs(sum(sizes), 20)
    lam = 0.25
    blocks, starts, start = [], [], 0
    for i, size in enumerate(sizes):
        sl = slice(start, start + size)
        blocks.append(Block(f"t{i}", lambda v, sl=sl: A[sl, sl] @ v, b[sl]))
        starts.append(sl)
        start += size
    seen = set()
    res = block_diagonal_solve(blocks, damping=lam, tol=1e-11, max_iter=100,
                               callback=lambda name, it, rel: seen.add(name))
    expected = torch.cat([torch.linalg.solve(A[sl, sl] + lam * torch.eye(sl.stop - sl.start, dtype=torch.float64),
                                             b[sl]) for sl in starts])
    assert res.method == "cg-block" and res.converged and seen == {"t0", "t1", "t2"}
    assert list(res.blocks) == ["t0", "t1", "t2"]
    assert res.iterations == sum(r.iterations for r in res.blocks.values())
    assert torch.allclose(res.x, expected, rtol=1e-9, atol=1e-11)
    assert res.residuals[-1] <= 1e-11
    # It is the block-diagonal approximation, not the full solve.
    full = torch.linalg.solve(A + lam * torch.eye(sum(sizes), dtype=torch.float64), b)
    assert not torch.allclose(res.x, full, rtol=1e-3)
    assert res.summary()["blocks"]["t1"]["method"] == "cg"


def test_block_diagonal_solve_names_the_failing_block():
    A = spd(6, 21) - 3.0 * torch.eye(6, dtype=torch.float64)
    blocks = [Block("good", lambda v: 2.0 * v, rhs(3, 1)), Block("bad", lambda v: A @ v, rhs(6, 2))]
    with pytest.raises(SolverError, match="block 'bad'"):
        block_diagonal_solve(blocks, damping=0.0, tol=1e-12)


def test_power_iteration_estimates_the_largest_eigenvalue():
    A = spd(30, 22, cond=100.0)
    est = power_iteration(lambda v: A @ v, 30, dtype=torch.float64, iterations=200)
    assert est == pytest.approx(float(torch.linalg.eigvalsh(A).max()), rel=1e-3)
