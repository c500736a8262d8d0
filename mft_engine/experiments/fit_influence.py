"""`mft fit-influence` / `fit_influence()`: the fit step of the influence scorer, on its own.

Fit, then score (as kronfluence keeps factor fitting and score computation apart): this computes the
solve s = (H + λI)⁻¹ ∇L_score for a checkpoint and saves it under its name in a fits folder; the
influence scorer (scoring/scorers/influence.py) only loads a saved fit, and names this command when
there is none. `mft validate-scorer` and `mft influence` run both steps themselves, into their own
results folders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..collect.distributed import check_same_on_every_rank, init_from_env
from ..fields import help_field
from ..report.progress import Progress
from ..scoring.curvature.fit import InverseFit
from ..scoring.scorers.influence import fit_influence_solve, influence_fit_name
from .scoring_setup import ScoringConfig, prepare_bench


@dataclass
class FitInfluenceConfig(ScoringConfig):
    """Configuration of `mft fit-influence`: a checkpoint, its data and the solver settings (ScoringConfig's),
    and the folder the fit is saved in."""

    fits_dir: str = help_field("folder the fit is saved in, under its name influence_<solver>_lambda_<λ> "
                               "(the influence scorer loads it from there)", "fits")


@dataclass
class FitInfluenceResult:
    """A saved fit: its name, its folder (fit.json + solution.safetensors) and the fit itself."""

    name: str
    path: Path
    fit: InverseFit
    is_main: bool = True

    def summary(self) -> dict[str, Any]:
        """What `--json` prints: the name, folder, solver, λ and convergence (no tensors)."""
        info = self.fit.to_dict()
        keep = ("solver", "damping", "damping_factor", "iterations", "converged", "seconds")
        return {"name": self.name, "path": str(self.path), **{k: info.get(k) for k in keep},
                "final_residual": self.fit.residuals[-1] if self.fit.residuals else None}


def fit_influence(cfg: FitInfluenceConfig, progress: Progress | None = None) -> FitInfluenceResult:
    """Fit the influence solve s = (H + λI)⁻¹ ∇L_score for `cfg.model` and save it in `cfg.fits_dir`.

    The same bench as the scorer pipelines (N training samples collected in eval mode, H their
    Gauss-Newton matrix, ∇L_score over the seeded scoring half), the solver and λ from cfg (--solver,
    --damping or --damping-factor, --cg-tol, ...). A fit of the same name already in the folder is kept
    and returned, not solved again. Raises ConfigError / DataError / ModelError on bad input; SolverError
    (exit 2) when the solve fails. Cost: one collection pass over N samples, diag(H) once for λ, then one
    inverse solve (each CG step one Gauss-Newton product over N samples ≈ 5 forward passes).

    Under torchrun / accelerate every rank collects its block of the batches and takes its share of each
    curvature product (or of the Woodbury factors); rank 0 writes the fit (`is_main` on its result).
    LiSSA runs as one process only.
    """
    w = init_from_env(cfg.dist_backend)
    if w.distributed:
        check_same_on_every_rank("configuration", json.dumps(cfg.to_dict(), sort_keys=True, default=str), w)
    progress = progress or Progress()
    fits_dir = Path(cfg.fits_dir)
    bench = prepare_bench(cfg, progress=progress, fits_dir=fits_dir, shard_curvature=True)
    fit = fit_influence_solve(bench.inputs)
    name, _, _ = influence_fit_name(bench.inputs)
    return FitInfluenceResult(name, fits_dir / name, fit, w.is_main)
