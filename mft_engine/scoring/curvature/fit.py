"""Fit once, save by name, score by name: inverse-curvature solves s = (G + λI)⁻¹ b saved under fits_dir.

A fit is the expensive half of influence-style scorers (kronfluence's split): `fit_inverse` solves the
damped system over an Objective's parameters and writes

    fits_dir/<name>/solution.safetensors   s, one tensor per parameter name
    fits_dir/<name>/fit.json               how: solver, curvature, λ, mean diag(G), residuals, iterations, ...

atomically (a temporary folder renamed into place), and `load_fit` reads it back by name. Scorers load
fits; they never solve.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError
from ..objective import Objective
from .hvp import DEFAULT_DAMPING_FACTOR, flatten, gauss_newton_diagonal, gnvp, hvp, unflatten
from .hvp import mean_diagonal as _mean_diagonal
from .lowrank import LowRankGN, gauss_newton_lowrank
from .solvers import Block, SolveResult, block_diagonal_solve, conjugate_gradient, lissa, power_iteration

Params = dict[str, torch.Tensor]

SOLVERS = ("cg", "pcg", "woodbury", "lissa", "cg-block")
CURVATURES = ("gn", "hessian")
FORMAT_VERSION = 1


@dataclass
class InverseFit:
    """A saved solve s = (C + λI)⁻¹ b, C the Gauss-Newton matrix ("gn") or the Hessian ("hessian").

    - `solution`: s by parameter name (shapes and dtype of the parameters), in `names` order.
    - `damping`: λ, absolute; `mean_diagonal`: mean of diag(G) over every entry (λ's default is
      1e-3 × it); `damping_factor`: λ / mean_diagonal.
    - `residuals`, `iterations`, `converged`, `seconds`: the solver's record (see solvers.SolveResult);
      `true_residual`: ‖b − (C + λI) s‖/‖b‖ against the full system, measured after the solve (for
      "cg-block" it includes the couplings the block-diagonal solve ignores).
    - `n_train`: examples in the Objective; `options`: solver settings (tol, max_iter, LiSSA's scale ...).
    - `path`: the folder it was saved in (None when not saved).
    """

    name: str
    solution: Params
    solver: str
    curvature: str
    damping: float
    mean_diagonal: float
    residuals: list[float]
    iterations: int
    converged: bool
    seconds: float
    names: list[str]
    n_train: int
    true_residual: float | None = None
    damping_factor: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fit.json record: everything but the solution tensors and the path."""
        out = asdict(self)
        out.pop("solution")
        out.pop("path")
        out["format_version"] = FORMAT_VERSION
        return out


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\\0") \
            or name != name.strip():
        raise ConfigError(f"fit name {name!r} must be a plain folder name (no slashes, not starting with a dot)")
    return name


def fit_path(fits_dir: str | Path, name: str) -> Path:
    """The folder of the fit called `name` under `fits_dir`."""
    return Path(fits_dir) / _check_name(name)


def fit_inverse(name: str, objective: Objective, rhs: Params, *, damping: float | None = None, solver: str = "cg",
                curvature: str = "gn", tol: float = 1e-3, max_iter: int = 100, lissa_depth: int = 100,
                lissa_scale: float | None = None, lissa_repetitions: int = 1, fits_dir: str | Path | None = None,
                progress: Callable[[int, float], None] | None = None,
                mean_diagonal: float | None = None, diagonal: Params | None = None,
                lowrank: LowRankGN | None = None, memory_bytes: float = 4e9) -> InverseFit:
    """Solve s = (C + λI)⁻¹ rhs over `objective.names` at the model's parameters and save it as `name`.

    C: curvature "gn" (the Gauss-Newton matrix, PSD; products by gnvp) or "hessian" (exact, possibly
    indefinite: CG then raises SolverError unless λ exceeds its most negative eigenvalue). λ: `damping`
    (absolute, > 0) or, when None, DEFAULT_DAMPING_FACTOR (1e-3) × the mean of diag(G) over all entries of
    the chosen parameters (from gauss_newton_diagonal, always computed and recorded). Solvers:
    - "cg": conjugate gradient to relative residual `tol` or `max_iter` products;
    - "pcg": the same with the Jacobi preconditioner diag(G) + λ (exact diagonal; curvature "gn" only):
      the curvature of embeddings, LayerNorms and attention weights differs by orders of magnitude,
      which plain CG pays for in iterations;
    - "woodbury": exact, through G's low rank (lowrank.py: G = FᵀF/n from the per-example factors,
      (G + λI)⁻¹b = (b − Fᵀ(nλI + FFᵀ)⁻¹Fb)/λ); `lowrank` reuses a built LowRankGN of the same
      objective and rhs (a damping sweep), `memory_bytes` bounds its factor chunks; curvature "gn" only;
    - "lissa": `lissa_repetitions` × `lissa_depth` steps; with several batches each step's product uses
      one batch (each repetition cycles through them in its own seeded order), the repetitions are
      averaged (depth × repetitions × batch size should cover the training set); `lissa_scale`
      defaults to 2 × (a 20-step power-iteration estimate of C's largest eigenvalue + λ);
    - "cg-block": CG per parameter tensor on its diagonal block C_BB (the couplings dropped).
    `rhs` is keyed by objective.names, shaped like the parameters; it is cast to their dtype.
    `mean_diagonal` / `diagonal`: the mean of diag(G) or diag(G) itself (gauss_newton_diagonal) when the
    caller has it already (a damping sweep fits the same G several times), else computed here. `progress(step, relative residual)` runs after each solver step.
    With `fits_dir`, writes fits_dir/name/{solution.safetensors, fit.json} atomically (replacing an older
    fit of that name); a sharded objective (several processes) solves together and rank 0 writes.

    Cost: one gauss_newton_diagonal (none when `mean_diagonal` is given), the solver's products (one curvature product ≈ 5 forward passes over
    the Objective's batches each), one more product for `true_residual`. Memory: about six vectors of
    the chosen parameters plus one batch's activations.
    """
    _check_name(name)
    if solver not in SOLVERS:
        raise ConfigError(f"solver {solver!r} must be one of {', '.join(SOLVERS)}")
    if curvature not in CURVATURES:
        raise ConfigError(f"curvature {curvature!r} must be one of {', '.join(CURVATURES)}")
    if damping is not None and not damping > 0:
        raise ConfigError(f"damping {damping} must be > 0: (C + λI) is only safely invertible with λ > 0; "
                          f"leave it unset for {DEFAULT_DAMPING_FACTOR:g} × the mean Gauss-Newton diagonal")
    if not tol > 0 or max_iter < 1 or lissa_depth < 1 or lissa_repetitions < 1:
        raise ConfigError(f"fit {name!r} needs tol > 0, max_iter ≥ 1, lissa_depth ≥ 1 and lissa_repetitions ≥ 1")
    if lissa_scale is not None and not lissa_scale > 0:
        raise ConfigError(f"lissa_scale {lissa_scale} must be > 0 (above the largest eigenvalue of C + λI)")
    params = objective.params()
    b = flatten(_check_rhs(objective, rhs, params), objective.names)
    start = time.perf_counter()

    if solver == "lissa" and objective.sharded:
        raise ConfigError("LiSSA's steps each use one batch in turn, which several processes cannot share: "
                          "run the lissa solver as one process, or use cg / pcg / woodbury")
    if solver in ("pcg", "woodbury") and curvature != "gn":
        raise ConfigError(f"solver {solver!r} works on the Gauss-Newton matrix's structure; use curvature 'gn'")
    if diagonal is None and (mean_diagonal is None or solver == "pcg"):
        diagonal = gauss_newton_diagonal(objective)
    mean = float(mean_diagonal) if mean_diagonal is not None else _mean_diagonal(objective, diagonal=diagonal)
    if damping is None:
        if not mean > 0:
            raise ConfigError(f"the mean Gauss-Newton diagonal of {objective.names[:3]} is {mean:g}; pass an "
                              "absolute damping > 0")
        damping = DEFAULT_DAMPING_FACTOR * mean
    damping = float(damping)

    def product(obj: Objective) -> Callable[[torch.Tensor], torch.Tensor]:
        like = obj.params()

        def matvec(v: torch.Tensor) -> torch.Tensor:
            vp = unflatten(v, like)
            out = gnvp(obj, vp) if curvature == "gn" else hvp(obj, vp)
            return flatten(out, obj.names)

        return matvec

    full = product(objective)
    options: dict[str, Any] = {"tol": tol, "max_iter": max_iter}
    step_cb = None if progress is None else (lambda it, rel, x: progress(it, rel))
    if solver in ("cg", "pcg"):
        precond = None if solver == "cg" else flatten(diagonal, objective.names).to(b.dtype) + damping
        result = conjugate_gradient(lambda v: full(v) + damping * v, b, tol=tol, max_iter=max_iter, callback=step_cb,
                                    preconditioner=precond)
    elif solver == "lissa":
        result, scale = _lissa(objective, full, product, b, damping, tol, lissa_depth, lissa_scale,
                               lissa_repetitions, step_cb)
        options.update(lissa_depth=lissa_depth, lissa_scale=scale, lissa_repetitions=lissa_repetitions,
                       lissa_batches=len(objective.batches))
    elif solver == "woodbury":
        t = time.perf_counter()
        if lowrank is None:
            lowrank = gauss_newton_lowrank(objective, rhs, memory_bytes=memory_bytes)
        x = lowrank.solve([damping])[damping].to(b.dtype)
        result = SolveResult(x, [1.0], 0, True, "woodbury", time.perf_counter() - t)
        options.update(factors=lowrank.m, chunk_examples=lowrank.chunk_examples, factor_passes=lowrank.factor_passes,
                       build_s=lowrank.seconds, **lowrank.timings)
    else:
        blocks, offset = [], 0
        for n in objective.names:
            size = params[n].numel()
            sub = objective.restricted([n])
            blocks.append(Block(n, product(sub), b[offset:offset + size]))
            offset += size
        count = [0]

        def block_cb(block: str, it: int, rel: float) -> None:
            count[0] += 1
            if progress is not None:
                progress(count[0], rel)

        result = block_diagonal_solve(blocks, damping=damping, tol=tol, max_iter=max_iter, callback=block_cb)
        options["blocks"] = {k: r.summary() for k, r in result.blocks.items()}

    r = b - full(result.x) - damping * result.x  # the full system, couplings included
    bnorm = float(b.double().norm())
    true_residual = float(r.double().norm()) / bnorm if bnorm > 0 else 0.0
    if solver == "woodbury":  # a direct solve: its one residual is the measured one
        result.residuals, result.converged = [1.0, true_residual], true_residual <= tol
    fit = InverseFit(
        name=name, solution={n: t.clone() for n, t in unflatten(result.x, params).items()}, solver=solver,
        curvature=curvature, damping=damping, mean_diagonal=mean, residuals=[float(x) for x in result.residuals],
        iterations=result.iterations, converged=bool(result.converged), seconds=time.perf_counter() - start,
        names=list(objective.names), n_train=objective.n, true_residual=true_residual,
        damping_factor=damping / mean if mean > 0 else None, options=options)
    if fits_dir is not None:
        # every rank of a sharded objective holds the same solution: rank 0 alone writes it
        main = not objective.sharded or objective.world.is_main
        fit.path = _save(fit, Path(fits_dir)) if main else fit_path(fits_dir, name)
    return fit


def _check_rhs(objective: Objective, rhs: Params, params: Params) -> Params:
    missing = [n for n in objective.names if n not in rhs]
    extra = [n for n in rhs if n not in params]
    if missing or extra:
        raise ConfigError(f"the right-hand side must be keyed by the objective's parameters; missing {missing[:3]}, "
                          f"extra {extra[:3]}")
    for n in objective.names:
        if rhs[n].shape != params[n].shape:
            raise ConfigError(f"the right-hand side's {n} has shape {tuple(rhs[n].shape)}, expected "
                              f"{tuple(params[n].shape)}")
    return {n: rhs[n].detach().to(params[n].dtype) for n in objective.names}


def _lissa(objective: Objective, full: Callable, product: Callable, b: torch.Tensor, damping: float, tol: float,
           depth: int, scale: float | None, repetitions: int, callback) -> tuple[SolveResult, float]:
    if scale is None:
        # Power iteration under-estimates λ_max; twice the estimate keeps LiSSA convergent.
        scale = 2.0 * (power_iteration(full, b.numel(), dtype=b.dtype, iterations=20) + damping)
    if len(objective.batches) > 1:
        per_batch = [product(Objective(objective.model, [bt], list(objective.names))) for bt in objective.batches]

        nb = len(per_batch)
        orders: dict[int, list[int]] = {}

        def matvec(v: torch.Tensor, step: int) -> torch.Tensor:
            # Each batch's own mean-loss curvature: an unbiased estimate of C (up to batch-size weights).
            # Repetition r cycles through the batches in its own seeded order, so every repetition sees
            # every batch (depth ≥ n_batches) and the repetitions differ.
            rep, j = divmod(step, depth)
            if rep not in orders:
                orders[rep] = torch.randperm(nb, generator=torch.Generator().manual_seed(rep)).tolist()
            return per_batch[orders[rep][j % nb]](v)

        result = lissa(matvec, b, damping=damping, scale=scale, depth=depth, repetitions=repetitions, tol=tol,
                       callback=callback, residual_matvec=full)
    else:
        result = lissa(full, b, damping=damping, scale=scale, depth=depth, repetitions=repetitions, tol=tol,
                       callback=callback)
    return result, float(scale)


def _save(fit: InverseFit, fits_dir: Path) -> Path:
    """Write the fit into a temporary folder beside its final place, then rename it in: a reader sees the
    old fit or the new one, never half of one."""
    from safetensors.torch import save_file

    fits_dir.mkdir(parents=True, exist_ok=True)
    final = fits_dir / fit.name
    tmp = fits_dir / f".{fit.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({n: fit.solution[n].contiguous() for n in fit.names}, str(tmp / "solution.safetensors"),
                  metadata={"name": fit.name, "format_version": str(FORMAT_VERSION)})
        (tmp / "fit.json").write_text(json.dumps(fit.to_dict(), indent=1, default=_json_default))
        old = None
        if final.exists():
            old = fits_dir / f".{fit.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def load_fit(fits_dir: str | Path, name: str) -> InverseFit:
    """The fit saved as `name` under `fits_dir` (solution tensors on CPU, in the saved dtype).

    Raises ConfigError naming the fit and the folder when it is missing or unreadable. Cost: reading the
    solution once (|θ| × dtype bytes).
    """
    from safetensors.torch import load_file

    folder = fit_path(fits_dir, name)
    record, weights = folder / "fit.json", folder / "solution.safetensors"
    if not record.is_file() or not weights.is_file():
        raise ConfigError(f"no fit named {name!r} in {Path(fits_dir)} ({folder} lacks fit.json or "
                          "solution.safetensors); run fit_inverse with that name first")
    try:
        data = json.loads(record.read_text())
        tensors = load_file(str(weights))
    except (OSError, ValueError) as e:
        raise ConfigError(f"fit {name!r} in {Path(fits_dir)} is unreadable ({type(e).__name__}: {e})") from None
    names = list(data.get("names", []))
    if sorted(names) != sorted(tensors):
        raise ConfigError(f"fit {name!r} in {Path(fits_dir)} is inconsistent: fit.json names {len(names)} "
                          f"parameters, solution.safetensors holds {len(tensors)}")
    data.pop("format_version", None)
    known = {f for f in InverseFit.__dataclass_fields__ if f not in ("solution", "path")}
    fields = {k: v for k, v in data.items() if k in known}
    return InverseFit(solution={n: tensors[n] for n in names}, path=folder, **fields)
