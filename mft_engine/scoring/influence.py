"""The `influence` scorer: the follow-up study's −∇L_scoreᵀ (H + λI)⁻¹ e_i θ_i = −s_i·θ_i.

One solve s = (H + λI)⁻¹ ∇L_score over all eligible parameters (H the Gauss-Newton matrix of the mean
training loss over the GradientState's N samples, eval mode) is fitted once, saved by name under
`inputs.fits_dir`, and scores every parameter in one pass. λ defaults to `damping_factor` (1e-3) × the
mean of diag(H); every figure names the λ it used.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Scorer, as_scores, register_scorer
from .fit import InverseFit, fit_inverse, load_fit
from .hvp import DEFAULT_DAMPING_FACTOR, gauss_newton_diagonal, mean_diagonal
from .inputs import ScoringInputs
from .lowrank import LowRankGN, gauss_newton_lowrank
from .stats import score_gradient


def train_mean_diagonal(inputs: ScoringInputs) -> float:
    """Mean of diag(H) over every eligible entry, H the training Gauss-Newton matrix (computed once).

    Cost: one backward per training example (two classes) or per example and class.
    """
    return inputs.cached("train_gn_mean_diagonal",
                         lambda: mean_diagonal(inputs.train, diagonal=train_diagonal(inputs)))


def train_diagonal(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """diag(H) by parameter name, H the training Gauss-Newton matrix (computed once: λ's scale and PCG's
    preconditioner). Cost: one backward per training example (two classes) or per example and class."""
    return inputs.cached("train_gn_diagonal", lambda: gauss_newton_diagonal(inputs.train))


def train_lowrank(inputs: ScoringInputs) -> LowRankGN:
    """The training Gauss-Newton matrix in Woodbury form for ∇L_score (built once; every λ then costs one
    pass over the per-example factors). Cost: see lowrank.gauss_newton_lowrank."""
    return inputs.cached("train_gn_lowrank", lambda: gauss_newton_lowrank(inputs.train, score_gradient(inputs)))


def influence_fit(inputs: ScoringInputs, damping_factor: float | None = None) -> InverseFit:
    """The solve s = (H + λI)⁻¹ ∇L_score, fitted once per (solver, λ) and saved by name.

    λ: `inputs.damping` (absolute) when set and no `damping_factor` is asked for; else `damping_factor`
    (default: inputs.options["damping_factor"], 1e-3) × the mean of diag(H). A fit of the same name in
    `inputs.fits_dir` is loaded instead of solved. Raises MissingStatisticError without the training or
    scoring objective; SolverError (exit 2) when CG meets NaN or negative curvature, or LiSSA diverges.
    """
    inputs.require("influence", training_objective=inputs.train, scoring_objective=inputs.score)
    opts = inputs.options
    solver = str(opts.get("influence_solver", "cg"))
    if damping_factor is None and inputs.damping is not None:
        damping, factor = float(inputs.damping), None
    else:
        factor = float(damping_factor if damping_factor is not None
                       else opts.get("damping_factor", DEFAULT_DAMPING_FACTOR))
        damping = factor * train_mean_diagonal(inputs)
    name = f"influence_{solver}_lambda_{damping:.6e}"

    def solve() -> InverseFit:
        if inputs.fits_dir is not None and (inputs.fits_dir / name / "fit.json").is_file():
            return load_fit(inputs.fits_dir, name)
        progress = opts.get("progress")
        cb = None
        if progress is not None:
            progress.phase(f"influence solve ({solver}, λ={damping:.3g})", None)
            cb = lambda it, rel: progress.advance(1, residual=float(rel))  # noqa: E731
        fit = fit_inverse(name, inputs.train, score_gradient(inputs), damping=damping, solver=solver,
                          tol=float(opts.get("cg_tol", 1e-3)), max_iter=int(opts.get("cg_max_iter", 100)),
                          lissa_depth=int(opts.get("lissa_depth", 100)), lissa_scale=opts.get("lissa_scale"),
                          lissa_repetitions=int(opts.get("lissa_repetitions", 1)), fits_dir=inputs.fits_dir,
                          progress=cb, mean_diagonal=inputs.peek("train_gn_mean_diagonal"),
                          diagonal=train_diagonal(inputs) if solver == "pcg" else None,
                          lowrank=train_lowrank(inputs) if solver == "woodbury" else None)
        if progress is not None:
            progress.done()
        return fit

    fit = inputs.cached(name, solve)
    info = fit.to_dict()
    info["requested_damping_factor"] = factor
    # The first fit (the scorer's own λ) is the one reported: a damping sweep's later fits do not replace it.
    inputs.cached("influence_fit_info", lambda: info)
    return fit


def influence_scores(inputs: ScoringInputs, damping_factor: float | None = None) -> tuple[dict[str, torch.Tensor], InverseFit]:
    """(−s ⊙ θ per eligible parameter in float64, the fit it came from). Cost: the fit, then one pass."""
    fit = influence_fit(inputs, damping_factor)
    theta = inputs.theta()
    scores = {n: as_scores(-(fit.solution[n].to(torch.float64) * theta[n].to(torch.float64))) for n in inputs.names}
    return scores, fit


@register_scorer
class InfluenceScorer(Scorer):
    """score_i = −s_i·θ_i, s = (H + λI)⁻¹ ∇L_score (the study's formula with its θ_i factor).

    Signed: negative predicts that zeroing helps. In a quadratic model it is the cross term of the
    compensated removal change without OBS's normalisation, not itself a loss change; it is judged against
    the true ΔL all the same. Needs the training and scoring objectives; options: influence_solver
    (cg | pcg | woodbury | lissa | cg-block), damping_factor, cg_tol, cg_max_iter, lissa_depth, lissa_scale, lissa_repetitions.
    Cost: one inverse solve (each CG step one Gauss-Newton product over the N training samples ≈ 5
    forward passes), then one pass over the eligible parameters.
    """

    name = "influence"
    signed = True
    description = "−s_i·θ_i with s = (H + λI)⁻¹ ∇L_score (H: training Gauss-Newton); CG or LiSSA"

    def score(self, inputs: ScoringInputs) -> dict[str, Any]:
        return influence_scores(inputs)[0]
