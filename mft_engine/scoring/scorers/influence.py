"""The `influence` scorer: the follow-up study's −∇L_scoreᵀ (H + λI)⁻¹ e_i θ_i = −s_i·θ_i.

One solve s = (H + λI)⁻¹ ∇L_score over all eligible parameters (H the Gauss-Newton matrix of the mean
training loss over the GradientState's N samples, eval mode) is fitted once (`fit_influence_solve`, or
`mft fit-influence`), saved by name under `inputs.fits_dir`; the scorer only loads it and scores every
parameter in one pass. λ defaults to `damping_factor` (1e-3) × the
mean of diag(H); every figure names the λ it used.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from ...collect.distributed import broadcast
from ...errors import ConfigError
from ...fields import help_field
from ..base import Scorer, as_scores, register_scorer
from ..curvature.fit import SOLVERS, InverseFit, fit_inverse, load_fit
from ..curvature.hvp import DEFAULT_DAMPING_FACTOR, gauss_newton_diagonal, mean_diagonal
from ..curvature.lowrank import LowRankGN, gauss_newton_lowrank
from ..inputs import ScoringInputs
from ..objective import Objective
from .stats import score_gradient

#: the arithmetic of the influence solve (InfluenceOptions.solver_precision)
SOLVER_PRECISIONS = ("float32", "float64")


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


@dataclass
class InfluenceOptions:
    """influence's settings: the inverse solver and its tolerances, and λ's factor (when no absolute
    inputs.damping is given). The scorer pipelines fill it from their flags (--solver, --cg-tol, ...)."""

    influence_solver: str = help_field("influence's inverse solver: " + " | ".join(SOLVERS), "cg")
    damping_factor: float = help_field("λ = this × the mean of diag(H) when no absolute damping is given",
                                       DEFAULT_DAMPING_FACTOR)
    cg_tol: float = help_field("stop CG at this relative residual", 1e-3)
    cg_max_iter: int = help_field("CG iterations at most", 100)
    lissa_depth: int = help_field("LiSSA recursion depth", 100)
    lissa_scale: float | None = help_field("LiSSA scale (default: estimated by power iteration)", None)
    lissa_repetitions: int = help_field("LiSSA repetitions averaged", 1)
    solver_precision: str = help_field("arithmetic of the solve: float32 (the model's) | float64 (on a float64 copy "
                                       "of the model: ∇L_score, the curvature products or Woodbury factors, and "
                                       "the solution all in float64)", "float32")

    def __post_init__(self) -> None:
        # Messages name the pipelines' flag (ScoringConfig composes this class) and, where it differs, the field
        if self.influence_solver not in SOLVERS:
            raise ConfigError(f"--solver (influence_solver) {self.influence_solver!r} is not one of {', '.join(SOLVERS)}")
        if self.solver_precision not in SOLVER_PRECISIONS:
            raise ConfigError(f"--solver-precision (solver_precision) {self.solver_precision!r} is not one of "
                              f"{', '.join(SOLVER_PRECISIONS)}")
        if not (self.damping_factor > 0 and math.isfinite(self.damping_factor)):
            raise ConfigError(f"--damping-factor {self.damping_factor} must be > 0")
        if not 0 < self.cg_tol < 1:
            raise ConfigError(f"--cg-tol {self.cg_tol} must be in (0, 1)")
        if self.cg_max_iter < 1 or self.lissa_depth < 1 or self.lissa_repetitions < 1:
            raise ConfigError("--cg-max-iter, --lissa-depth and --lissa-repetitions must be >= 1")
        if self.lissa_scale is not None and not (self.lissa_scale > 0 and math.isfinite(self.lissa_scale)):
            raise ConfigError(f"--lissa-scale {self.lissa_scale} must be > 0 (above the largest eigenvalue of H + λI)")


def float64_objectives(inputs: ScoringInputs) -> tuple[Objective, Objective, dict[str, torch.Tensor]]:
    """(training Objective, scoring-half Objective, ∇L_score) over a float64 copy of `inputs.model` (same
    batches, same names), for a float64 solve; the caller's model is untouched.

    Cost (once per inputs, cached as "float64_objectives"): a float64 copy of the model (8 bytes per
    parameter) and one forward + backward over the scoring half in float64.
    """
    inputs.require("influence", training_objective=inputs.train, scoring_objective=inputs.score)

    def build() -> tuple[Objective, Objective, dict[str, torch.Tensor]]:
        model = copy.deepcopy(inputs.model).to(torch.float64).eval()
        model.requires_grad_(False)
        train = Objective(model, inputs.train.batches, list(inputs.names), inputs.train.world)
        score = Objective(model, inputs.score.batches, list(inputs.names))
        return train, score, {n: g.detach() for n, g in score.gradient().items()}

    return inputs.cached("float64_objectives", build)


#: the command that fits what the influence scorer loads (named in the error when there is no fit)
FIT_COMMAND = "mft fit-influence"


def influence_fit_name(inputs: ScoringInputs, damping_factor: float | None = None) -> tuple[str, float, float | None]:
    """(fit name, λ, the factor asked for or None) of the solve s = (H + λI)⁻¹ ∇L_score.

    λ: `inputs.damping` (absolute) when set and no `damping_factor` is asked for; else `damping_factor`
    (default: InfluenceOptions.damping_factor, 1e-3) × the mean of diag(H), computed once per inputs (one
    backward per training example, or per example and class). The name is
    `influence_<solver>_lambda_<λ>` (with `_float64` appended for solver_precision float64), so a fit is
    found again by the settings that made it. λ's scale (the mean of diag H) is computed in the model's
    dtype for both precisions, so a float32 and a float64 solve of the same settings use the same λ.
    """
    inputs.require("influence", training_objective=inputs.train, scoring_objective=inputs.score)
    opts = inputs.settings(InfluenceOptions)
    if damping_factor is None and inputs.damping is not None:
        damping, factor = float(inputs.damping), None
    else:
        factor = float(damping_factor if damping_factor is not None else opts.damping_factor)
        damping = factor * train_mean_diagonal(inputs)
    suffix = "_float64" if opts.solver_precision == "float64" else ""
    return f"influence_{opts.influence_solver}_lambda_{damping:.6e}{suffix}", damping, factor


def fit_influence_solve(inputs: ScoringInputs, damping_factor: float | None = None) -> InverseFit:
    """Fit step: solve s = (H + λI)⁻¹ ∇L_score and keep it under its name (influence_fit_name): in the
    inputs' cache, and saved under `inputs.fits_dir` when set. A fit of that name already kept or saved
    is returned as is (a damping sweep does not solve twice). The influence scorer only loads what this
    keeps (`influence_fit`); fitting and scoring are separate steps, as kronfluence's factor fitting and
    score computation are.

    With solver_precision "float64" the solve runs on a float64 copy of the model (float64_objectives):
    the right-hand side, every curvature product (Woodbury: the factors, K and Fb) and the solution are
    float64, and the fit keeps the float64 solution; "float32" solves in the model's dtype (the Woodbury
    Gram matrix and its eigendecomposition are float64 either way).

    Raises MissingStatisticError without the training or scoring objective; SolverError (exit 2) when CG
    meets NaN or negative curvature, or LiSSA diverges. Cost: one inverse solve (each CG step one
    Gauss-Newton product over the N training samples ≈ 5 forward passes); Woodbury: the per-example factors.
    float64 roughly doubles the time and the memory of the products and adds a float64 model copy.
    """
    name, damping, _ = influence_fit_name(inputs, damping_factor)
    opts = inputs.settings(InfluenceOptions)
    solver = opts.influence_solver
    wide = opts.solver_precision == "float64"

    def solve() -> InverseFit:
        saved = inputs.fits_dir is not None and (inputs.fits_dir / name / "fit.json").is_file()
        if inputs.train.sharded:  # every rank must take the same branch: the solve is collective
            saved = broadcast(saved, inputs.train.world)
        if saved:
            return load_fit(inputs.fits_dir, name)
        progress = inputs.progress
        cb = None
        if progress is not None:
            progress.phase(f"influence solve ({solver}, λ={damping:.3g})", None)
            cb = lambda it, rel: progress.advance(1, residual=float(rel))  # noqa: E731
        train, rhs = inputs.train, score_gradient(inputs)
        lowrank = None
        if wide:
            train, _, rhs = float64_objectives(inputs)
            if solver == "woodbury":
                lowrank = inputs.cached("train_gn_lowrank_float64", lambda: gauss_newton_lowrank(train, rhs))
        elif solver == "woodbury":
            lowrank = train_lowrank(inputs)
        fit = fit_inverse(name, train, rhs, damping=damping, solver=solver,
                          tol=float(opts.cg_tol), max_iter=int(opts.cg_max_iter),
                          lissa_depth=int(opts.lissa_depth), lissa_scale=opts.lissa_scale,
                          lissa_repetitions=int(opts.lissa_repetitions), fits_dir=inputs.fits_dir,
                          progress=cb, mean_diagonal=inputs.peek("train_gn_mean_diagonal"),
                          diagonal=train_diagonal(inputs) if solver == "pcg" else None,
                          lowrank=lowrank)
        if progress is not None:
            progress.done()
        return fit

    return inputs.cached(name, solve)


def influence_fit(inputs: ScoringInputs, damping_factor: float | None = None) -> InverseFit:
    """Score step's input: the fit of s = (H + λI)⁻¹ ∇L_score that `fit_influence_solve` (or
    `mft fit-influence`) kept under its name, from the inputs' cache or `inputs.fits_dir`. Never solves.

    Raises ConfigError naming the fit and the command `mft fit-influence` when there is none. Cost:
    λ's diagonal once per inputs (see influence_fit_name), then reading the solution once.
    """
    name, _, factor = influence_fit_name(inputs, damping_factor)
    fit = inputs.peek(name)
    if fit is None:
        if inputs.fits_dir is None or not (inputs.fits_dir / name / "fit.json").is_file():
            where = "no fits folder was given" if inputs.fits_dir is None else f"none in {inputs.fits_dir}"
            raise ConfigError(f"the influence scorer needs the fit {name!r} ({where}); run `{FIT_COMMAND}` "
                              "with the same model, data and solver settings first (API: fit_influence)")
        fit = inputs.cached(name, lambda: load_fit(inputs.fits_dir, name))
    info = fit.to_dict()
    info["requested_damping_factor"] = factor
    # The first fit (the scorer's own λ) is the one reported: a damping sweep's later fits do not replace it.
    inputs.cached("influence_fit_info", lambda: info)
    return fit


def influence_scores(inputs: ScoringInputs, damping_factor: float | None = None) -> tuple[dict[str, torch.Tensor], InverseFit]:
    """(−s ⊙ θ per eligible parameter in float64, the fit it came from: loaded, see influence_fit; ConfigError
    naming `mft fit-influence` when there is none). Cost: loading the fit, then one pass."""
    fit = influence_fit(inputs, damping_factor)
    theta = inputs.theta()
    scores = {n: as_scores(-(fit.solution[n].to(torch.float64) * theta[n].to(torch.float64))) for n in inputs.names}
    return scores, fit


@register_scorer
class InfluenceScorer(Scorer):
    """score_i = −s_i·θ_i, s = (H + λI)⁻¹ ∇L_score (the study's formula with its θ_i factor).

    Signed: negative predicts that zeroing helps. In a quadratic model it is the cross term of the
    compensated removal change without OBS's normalisation, not itself a loss change; it is judged against
    the true ΔL all the same. Needs the training and scoring objectives and the fit (fit_influence_solve;
    ConfigError naming `mft fit-influence` without it); options: InfluenceOptions. Cost: loading the fit,
    then one pass over the eligible parameters.
    """

    name = "influence"
    signed = True
    description = "−s_i·θ_i with s = (H + λI)⁻¹ ∇L_score (H: training Gauss-Newton); CG or LiSSA"
    options = InfluenceOptions

    def score(self, inputs: ScoringInputs) -> dict[str, Any]:
        return influence_scores(inputs)[0]
