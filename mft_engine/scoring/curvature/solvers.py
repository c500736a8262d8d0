"""Inverse solvers for damped curvature systems (A + λI) x = b on flat vectors: CG, LiSSA, block-diagonal.

Every solver takes the operator as a function `matvec(v) -> A v` on 1-D tensors (float32 or float64;
x, b and the products share that dtype) and returns a SolveResult with its residual history. Failures
(non-finite values, a curvature pᵀAp ≤ 0 that shows A + λI is not positive definite, LiSSA's divergence)
raise SolverError naming the iteration and the residual reached, never a silent wrong answer.

Where the damping lives: `conjugate_gradient` solves matvec(x) = b, so its matvec includes any damping;
`lissa` and `block_diagonal_solve` take the undamped curvature and add `damping` themselves.
"""
from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...errors import ConfigError, MftError

Matvec = Callable[..., torch.Tensor]
Callback = Callable[[int, float, torch.Tensor], None]


class SolverError(MftError, ArithmeticError):
    """An iterative solve broke down: non-finite values, non-positive curvature, or divergence."""


@dataclass
class SolveResult:
    """The outcome of an iterative solve.

    - `x`: the solution, 1-D, b's dtype.
    - `residuals`: relative residuals ‖b − A x‖ / ‖b‖; for CG entry 0 is the start and entry j the one after
      iteration j (the recursive residual); see each solver for its exact meaning.
    - `iterations`: matrix-vector products spent on iterations; `converged`: the last residual ≤ tol.
    - `method`: "cg", "pcg", "lissa" or "cg-block"; `seconds`: wall time.
    - `norms`: ‖x_j‖ per step (LiSSA); `blocks`: per-block results (block-diagonal solves).
    """

    x: torch.Tensor
    residuals: list[float]
    iterations: int
    converged: bool
    method: str
    seconds: float
    norms: list[float] = field(default_factory=list)
    blocks: dict[str, SolveResult] = field(default_factory=dict)

    def summary(self) -> dict:
        """The JSON-ready record of the solve (everything but the vectors)."""
        out = {"method": self.method, "iterations": self.iterations, "converged": self.converged,
               "seconds": self.seconds, "residuals": list(self.residuals)}
        if self.norms:
            out["norms"] = list(self.norms)
        if self.blocks:
            out["blocks"] = {k: r.summary() for k, r in self.blocks.items()}
        return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    # float64 accumulation: float32 dot products over millions of entries lose the digits CG's
    # α and β depend on.
    return float(torch.dot(a.double(), b.double())) if a.dtype != torch.float64 else float(torch.dot(a, b))


def _check_rhs(b: torch.Tensor, name: str) -> float:
    if b.dim() != 1 or not b.is_floating_point():
        raise ConfigError(f"{name} needs a 1-D floating-point right-hand side, got shape {tuple(b.shape)} {b.dtype}")
    bnorm = math.sqrt(_dot(b, b))
    if not math.isfinite(bnorm):
        raise SolverError(f"{name} was given a right-hand side with NaN or Inf entries")
    return bnorm


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *,
                       x0: torch.Tensor | None = None, tol: float = 1e-3, max_iter: int = 100,
                       callback: Callback | None = None, preconditioner: torch.Tensor | None = None,
                       max_seconds: float | None = None) -> SolveResult:
    """Solve A x = b for symmetric positive definite A given as `matvec(v) = A v` (damping included).

    Stops when the relative residual ‖b − A x‖/‖b‖ ≤ `tol`, after `max_iter` iterations, or at the first
    iteration that ends past `max_seconds` of wall time (the last two: converged False). `residuals[0]` is the starting residual, `residuals[j]` the recursive residual after
    iteration j (exact in exact arithmetic; in float32 it may drift a little below the true one). `x0`
    defaults to 0 (no matvec spent on the start). `callback(iteration, relative_residual, x)` runs after
    every iteration. Raises SolverError on NaN/Inf or on a curvature pᵀAp ≤ 0 (A not positive definite,
    e.g. an indefinite Hessian with too little damping), naming the iteration and the residual reached.

    `preconditioner`: the diagonal d of a Jacobi preconditioner M = diag(d) (all entries > 0, b's
    shape), e.g. diag(A) itself. Preconditioned CG minimises the same A-norm error over a Krylov space of
    M⁻¹A, whose eigenvalues are far less spread when A's diagonal spans orders of magnitude (a network's
    curvature differs by 10⁴ and more between parameter tensors). The residuals and the stopping test stay
    ‖b − A x‖/‖b‖, so CG and PCG figures compare directly; `method` is "pcg". It can also hurt: for a
    low-rank curvature plus λI (a Gauss-Newton matrix over few examples) plain CG ends within rank + 1
    steps, and Jacobi scaling breaks up the λ cluster that makes that possible (measured in the tests).
    Cost: one matvec per iteration plus six vector operations; memory: five vectors (x, r, z, p, Ap).
    """
    if tol <= 0 or max_iter < 1:
        raise ConfigError(f"conjugate_gradient needs tol > 0 and max_iter ≥ 1, got tol={tol}, max_iter={max_iter}")
    start = time.perf_counter()
    method = "cg" if preconditioner is None else "pcg"
    bnorm = _check_rhs(b, "conjugate_gradient")
    if preconditioner is not None:
        if preconditioner.shape != b.shape:
            raise ConfigError(f"the Jacobi preconditioner has shape {tuple(preconditioner.shape)}, "
                              f"the right-hand side {tuple(b.shape)}")
        inv_d = preconditioner.to(b.dtype)
        if not bool(torch.isfinite(inv_d).all()) or not bool((inv_d > 0).all()):
            raise ConfigError("the Jacobi preconditioner needs finite entries > 0 (add the damping to the diagonal)")
        inv_d = inv_d.reciprocal()
    if bnorm == 0.0:
        return SolveResult(torch.zeros_like(b), [0.0], 0, True, method, time.perf_counter() - start)
    if x0 is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        x = x0.to(b.dtype).clone()
        r = b - matvec(x)
    z = r if preconditioner is None else r * inv_d
    p = z.clone()
    rz = _dot(r, z)
    rel = math.sqrt(_dot(r, r)) / bnorm
    residuals = [rel]
    if not math.isfinite(rel):
        raise SolverError("conjugate_gradient's starting residual is not finite (matvec of x0 returned NaN or Inf)")
    it = 0
    while rel > tol and it < max_iter and (max_seconds is None or time.perf_counter() - start < max_seconds):
        it += 1
        ap = matvec(p)
        pap = _dot(p, ap)
        if not math.isfinite(pap):
            raise SolverError(f"conjugate_gradient met NaN or Inf in A p at iteration {it} "
                              f"(relative residual {rel:.3g} reached)")
        if pap <= 0.0:
            raise SolverError(f"conjugate_gradient met non-positive curvature pᵀAp = {pap:.3g} at iteration {it} "
                              f"(relative residual {rel:.3g} reached): the matrix is not positive definite; "
                              "increase the damping or use the Gauss-Newton curvature")
        alpha = rz / pap
        x.add_(p, alpha=alpha)
        r.add_(ap, alpha=-alpha)
        rel = math.sqrt(_dot(r, r)) / bnorm
        if not math.isfinite(rel):
            raise SolverError(f"conjugate_gradient's residual became NaN or Inf at iteration {it}")
        residuals.append(rel)
        if callback is not None:
            callback(it, rel, x)
        z = r if preconditioner is None else r * inv_d
        rz_new = _dot(r, z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    return SolveResult(x, residuals, it, rel <= tol, method, time.perf_counter() - start)


def _takes_step(matvec: Matvec) -> bool:
    """Whether `matvec` accepts a second positional argument (the step index of a stochastic product)."""
    try:
        params = list(inspect.signature(matvec).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def lissa(matvec: Matvec, b: torch.Tensor, *, damping: float, scale: float, depth: int, repetitions: int = 1,
          tol: float | None = None, callback: Callback | None = None,
          residual_matvec: Callable[[torch.Tensor], torch.Tensor] | None = None) -> SolveResult:
    """Solve (A + λI) x = b by LiSSA's truncated Neumann series, λ = `damping`, A = `matvec` WITHOUT damping.

    Recursion (per repetition): x_0 = b/s, x_{j+1} = b/s + (I − (A + λI)/s) x_j, s = `scale`, for `depth`
    products (x_0 … x_{depth−1}; the last product gives the returned iterate's residual). It converges to
    (A + λI)⁻¹ b when s exceeds the largest eigenvalue of A + λI (then I − (A+λI)/s has its spectrum in
    [0, 1)); it diverges once s < λ_max/2. `matvec` may take `(v, step)`: a stochastic product (e.g. the
    curvature of mini-batch `step % n_batches`), step = repetition × depth + j; then the repetitions differ
    and their average is returned; depth × repetitions × batch size should cover the training set so
    every example enters. A deterministic matvec makes repetitions > 1 pointless (identical runs).

    Records ‖x_j‖ (`norms`) and the relative residual ‖b − (A+λI) x_j‖/‖b‖ (`residuals`) every step, for
    free from the step's own product (a mini-batch estimate for a stochastic matvec); `residual_matvec`
    (the full A) adds the true residual of the returned average at the end (one more product). A
    repetition stops early once its residual ≤ `tol`; `converged` = the last residual ≤ tol (tol None:
    1e-3). Raises SolverError naming the repetition and step when x_j turns non-finite or grows beyond
    max(1e6, 10·s/λ) × ‖x_0‖ (a convergent run stays below s/λ, so that is divergence: scale too small).
    Cost: depth × repetitions products; memory: four vectors.
    """
    if scale <= 0 or depth < 1 or repetitions < 1 or damping < 0:
        raise ConfigError(f"lissa needs scale > 0, depth ≥ 1, repetitions ≥ 1 and damping ≥ 0; got scale={scale}, "
                          f"depth={depth}, repetitions={repetitions}, damping={damping}")
    start = time.perf_counter()
    bnorm = _check_rhs(b, "lissa")
    stochastic = _takes_step(matvec)
    limit = max(1e6, 10.0 * scale / damping) if damping > 0 else 1e6
    total = torch.zeros_like(b)
    residuals: list[float] = []
    norms: list[float] = []
    goal = 1e-3 if tol is None else tol
    steps = 0
    rel = float("inf")
    for rep in range(repetitions):
        x = b / scale
        first = math.sqrt(_dot(x, x))
        for j in range(depth):
            av = matvec(x, rep * depth + j) if stochastic else matvec(x)
            steps += 1
            mx = av + damping * x                               # (A + λI) x_j
            rel = math.sqrt(_dot(b - mx, b - mx)) / bnorm if bnorm > 0 else 0.0
            residuals.append(rel)
            if not math.isfinite(rel):
                raise SolverError(f"lissa's iterate became NaN or Inf at repetition {rep}, step {j}")
            if (tol is not None and rel <= goal) or j == depth - 1:
                break  # x_j is returned: its residual is the last one recorded
            x = x + (b - mx) / scale                             # = b/s + (I − (A+λI)/s) x_j
            xn = math.sqrt(_dot(x, x))
            norms.append(xn)
            if not math.isfinite(xn) or xn > limit * first:
                raise SolverError(f"lissa diverged at repetition {rep}, step {j + 1}: ‖x‖ grew to {xn:.3g} "
                                  f"({xn / first:.3g} × its start; relative residual {rel:.3g}); the scale {scale:g} "
                                  "must exceed the largest eigenvalue of the damped curvature")
            if callback is not None:
                callback(steps, rel, x)
        total += x
    x = total / repetitions
    if residual_matvec is not None:
        r = b - residual_matvec(x) - damping * x
        rel = math.sqrt(_dot(r, r)) / bnorm if bnorm > 0 else 0.0
        residuals.append(rel)
    return SolveResult(x, residuals, steps, rel <= goal, "lissa", time.perf_counter() - start, norms=norms)


@dataclass
class Block:
    """One diagonal block of a block-diagonal solve: its name, `matvec(v) = A_BB v` (undamped, on the
    block's flat 1-D vectors) and its right-hand side `b` (1-D)."""

    name: str
    matvec: Callable[[torch.Tensor], torch.Tensor]
    b: torch.Tensor


def block_diagonal_solve(blocks: Sequence[Block], *, damping: float, tol: float = 1e-3, max_iter: int = 100,
                         callback: Callable[[str, int, float], None] | None = None) -> SolveResult:
    """Solve (A_BB + λI) x_B = b_B for each block B separately by conjugate gradient, λ = `damping`.

    This is the block-diagonal approximation of (A + λI)⁻¹ b: the couplings between blocks are dropped
    (for per-tensor blocks, A_BB is the curvature of the loss restricted to one parameter tensor, e.g.
    gnvp of an Objective built with names=[that tensor]). Returns one SolveResult: `x` the blocks'
    solutions concatenated in order, `blocks` each block's own result, `iterations` their sum,
    `converged` all of them, and `residuals` = [the combined relative residual of the block-diagonal
    system, (Σ_B ‖r_B‖²)^½ / ‖b‖]. `callback(block name, iteration, residual)` runs per CG iteration.
    Cost: Σ_B iterations_B block products; memory: four vectors of the largest block plus x.
    """
    if damping < 0:
        raise ConfigError(f"block_diagonal_solve needs damping ≥ 0, got {damping}")
    if not blocks:
        raise ConfigError("block_diagonal_solve needs at least one block")
    start = time.perf_counter()
    results: dict[str, SolveResult] = {}
    squared, bsq = 0.0, 0.0
    for blk in blocks:
        if blk.name in results:
            raise ConfigError(f"block {blk.name!r} appears twice in block_diagonal_solve")

        def damped(v: torch.Tensor, mv=blk.matvec) -> torch.Tensor:
            return mv(v) + damping * v

        cb = None if callback is None else (lambda it, rel, x, name=blk.name: callback(name, it, rel))
        try:
            res = conjugate_gradient(damped, blk.b, tol=tol, max_iter=max_iter, callback=cb)
        except SolverError as e:
            raise SolverError(f"block {blk.name!r}: {e}") from None
        results[blk.name] = res
        nb = _dot(blk.b, blk.b)
        squared += (res.residuals[-1] ** 2) * nb
        bsq += nb
    x = torch.cat([r.x for r in results.values()])
    combined = math.sqrt(squared / bsq) if bsq > 0 else 0.0
    return SolveResult(x, [combined], sum(r.iterations for r in results.values()),
                       all(r.converged for r in results.values()), "cg-block", time.perf_counter() - start,
                       blocks=results)


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], size: int, *, dtype: torch.dtype = torch.float32,
                    iterations: int = 20, seed: int = 0) -> float:
    """An estimate of the largest eigenvalue of a symmetric PSD operator (Rayleigh quotient after
    `iterations` power steps from a seeded random start); a lower bound, so LiSSA's scale should exceed
    it with a margin. Cost: `iterations` matvecs; memory: two vectors of `size`.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(size, generator=gen, dtype=dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(iterations):
        w = matvec(v)
        lam = _dot(v, w)
        norm = float(w.norm())
        if not math.isfinite(norm) or norm == 0.0:
            break
        v = w / norm
    return lam
