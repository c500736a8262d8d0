"""`mft bench cg`: how far CG gets on (G + λI) s = ∇L_score over all eligible parameters in a time budget.

The system is the influence scorer's: G the Gauss-Newton matrix of the mean training loss over the first
`samples` training sentences (eval mode, fp32), the right-hand side the gradient of the scoring-half
loss, the parameters those the exclusion preset leaves eligible. For every damping factor (λ = factor ×
mean diag G, the issue's default factor 1e-3) and solver (`cg`; `pcg`, Jacobi-preconditioned by
diag G + λ) it runs to relative residual `tol` or until `budget_s` of wall time is spent, and records
the residual history, the smallest residual met, and the true residual ‖b − (G + λI)s‖/‖b‖ of the
final iterate. `woodbury` (exact, lowrank.py) is built once, its time counted in the first λ's run
(`build_s`), and solves every λ for one more pass over the factors. The exact diag G is computed once
(it sets λ and the preconditioner) and timed.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..collect.distributed import init_from_env
from ..device import resolve_device
from ..report.progress import Progress
from ..scoring.curvature.fit import SOLVERS
from ..scoring.curvature.hvp import flatten, gauss_newton_diagonal, gnvp, unflatten
from ..scoring.curvature.lowrank import gauss_newton_lowrank
from ..scoring.curvature.solvers import conjugate_gradient

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CG_SOLVERS = tuple(s for s in SOLVERS if s in ("cg", "pcg", "woodbury"))


def run(model: str, task: str = "sst2", data_dir: str | None = None, samples: int = 1000,
        solvers: tuple[str, ...] = ("cg", "pcg"), damping_factors: tuple[float, ...] = (1e-3,),
        tol: float = 0.05, budget_s: float = 600.0, exclude: str = "influence", seed: int = 42,
        dtype: str = "float32", progress: Progress | None = None, device: str = "auto",
        dist_backend: str | None = None) -> dict[str, Any] | None:
    """Run each (damping factor, solver) solve with the budget; return the JSON object of `mft bench cg`
    (None on a torchrun rank other than 0).

    Under torchrun / accelerate with N processes every product, the diagonal and the Woodbury factors are
    shared by the ranks (summed in rank order) and each rank has all of the solve; the record's
    `processes` says how many. The budget is wall time, so a sharded run goes further in it.

    `dtype`: the arithmetic of the model, the products and the solve. At λ = 1e-3 × mean diag G the
    condition number of G + λI on minilm exceeds 10⁷ (max diag G / λ alone), so float32 products carry
    rounding errors near ‖b‖ itself (≈ κ·6e-8): residuals below ~1 are only reachable, and measurable,
    in float64.

    Keys: model, samples, dtype, parameters, mean_diagonal, diagonal_s, gradient_s (the right-hand side),
    product_s (one G v, median over the solves), runs (one per solve: solver, damping_factor, damping,
    iterations, seconds, converged, final_residual, min_residual, true_residual, residuals), threads,
    machine. Cost: one diag G (a backward per training example), then ≈ budget_s per solve.
    """
    from ..experiments.scoring_setup import ScoringConfig, ScoringData, load_checkpoint
    from ..masking import check_exclude_patterns, eligible_parameters
    from ..report import machine_info

    w = init_from_env(dist_backend)
    progress = progress or Progress()
    cfg = ScoringConfig.of(model=model, task=task, data_dir=data_dir, samples=samples, exclude=exclude, seed=seed,
                           device=device)
    dev = resolve_device(cfg.device, w.local_rank if w.distributed else None)
    splits = cfg.data.load_splits()  # read once: the head size, then the tokenized rows
    lm = load_checkpoint(cfg, model, splits.num_labels)
    net = lm.model.to(dev, DTYPES[dtype]).eval()
    data = ScoringData(cfg, lm.tokenizer, splits)
    check_exclude_patterns(list(net.named_parameters()), cfg.exclude)
    names = [n for n, _ in eligible_parameters(list(net.named_parameters()), cfg.exclude_patterns())]
    train, score = data.objectives(net, names, world=w)
    like = train.params()

    with torch.enable_grad():
        t = time.perf_counter()
        b = flatten(score.gradient(), names)
        gradient_s = time.perf_counter() - t
        progress.phase(f"exact diag G over {train.n} examples", None)
        t = time.perf_counter()
        diag = flatten(gauss_newton_diagonal(train), names)
        diagonal_s = time.perf_counter() - t
        progress.done()
    mean = float(diag.double().mean())
    products: list[float] = []

    def matvec_for(damping: float):
        def matvec(v: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            with torch.enable_grad():
                out = flatten(gnvp(train, unflatten(v, like)), names) + damping * v
            products.append(time.perf_counter() - t0)
            return out
        return matvec

    runs = []
    lowrank = None
    for factor in damping_factors:
        damping = factor * mean
        for solver in solvers:
            if solver == "woodbury":
                t = time.perf_counter()
                if lowrank is None:
                    progress.phase(f"Woodbury factors of G over {train.n} examples", None)
                    lowrank = gauss_newton_lowrank(train, unflatten(b, like))
                    progress.done()
                x = lowrank.solve([damping])[damping].to(b.dtype)
                seconds = time.perf_counter() - t
                rel = float((b - matvec_for(damping)(x)).double().norm() / b.double().norm())
                runs.append({"solver": solver, "damping_factor": factor, "damping": damping, "iterations": 0,
                             "seconds": seconds, "converged": rel <= tol, "final_residual": rel, "min_residual": rel,
                             "true_residual": rel, "residuals": [1.0, rel], "factors": lowrank.m,
                             "chunk_examples": lowrank.chunk_examples, "factor_passes": lowrank.factor_passes,
                             "build_s": lowrank.seconds, **lowrank.timings})
                continue
            progress.phase(f"{solver} λ={factor:g}×mean diag", None)
            result = conjugate_gradient(
                matvec_for(damping), b, tol=tol, max_iter=10 ** 6, max_seconds=budget_s,
                preconditioner=(diag + damping) if solver == "pcg" else None,
                callback=lambda it, rel, x: progress.advance(1, residual=float(rel)))
            progress.done()
            r = b - matvec_for(damping)(result.x)
            runs.append({"solver": solver, "damping_factor": factor, "damping": damping,
                         "iterations": result.iterations, "seconds": result.seconds, "converged": result.converged,
                         "final_residual": result.residuals[-1], "min_residual": min(result.residuals),
                         "true_residual": float(r.double().norm() / b.double().norm()),
                         "residuals": result.residuals})
    products.sort()
    if not w.is_main:
        return None
    return {"model": model, "processes": w.size, "task": task, "samples": train.n, "dtype": dtype, "exclude": exclude, "parameters": int(b.numel()),
            "tensors": len(names), "tol": tol, "budget_s": budget_s, "mean_diagonal": mean,
            "diagonal_min": float(diag.min()), "diagonal_max": float(diag.max()),
            "diagonal_s": diagonal_s, "gradient_s": gradient_s,
            "product_s": products[len(products) // 2] if products else math.nan,
            "runs": runs, "threads": torch.get_num_threads(), "machine": machine_info()}
