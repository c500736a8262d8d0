"""`mft validate-scorer` and `mft influence`: scorers judged against ground truth, and removal sweeps."""
from __future__ import annotations

import json
from typing import Any

import typer

from ..experiments.fit_influence import FitInfluenceConfig
from ..experiments.influence_sweep import InfluenceConfig
from ..experiments.validate_scorer import ValidateConfig
from .apps import QUIET_HELP, app
from .flags import build_config, with_config_flags
from .output import command_progress, print_result


@app.command("validate-scorer")
@with_config_flags(ValidateConfig)
def validate_scorer(
    json_out: bool = typer.Option(False, "--json", help="print the ground-truth table as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Judge every scorer against ground truth: n sampled eligible parameters each zeroed alone (ΔL on the
    scoring half), sign figures, Spearman, top-100 precision, a damping sweep and additivity.
    Writes results/validate_<timestamp>/."""
    from ..experiments.validate_scorer import validate_scorers

    cfg = build_config(ValidateConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = validate_scorers(cfg, progress)
    print_result(result.out_dir, result.summary, json_out, quiet)


@app.command("influence")
@with_config_flags(InfluenceConfig)
def influence(
    json_out: bool = typer.Option(False, "--json", help="print the sweeps and the false-positive table as one "
                                  "JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Removal sweeps: per checkpoint and scorer, zero the N lowest-scored eligible parameters and measure
    evaluation-half accuracy (bootstrap 95% CI) against a random control; the study's false-positive table.
    Writes results/influence_<timestamp>/."""
    from ..experiments.influence_sweep import removal_sweep

    cfg = build_config(InfluenceConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = removal_sweep(cfg, progress)
    rec = result.record
    print_result(result.out_dir, {"out_dir": str(result.out_dir), "baselines": rec["baselines"],
                                  "sweeps": rec["sweeps"], "false_positive": rec["false_positive"]},
                 json_out, quiet)


@app.command("fit-influence")
@with_config_flags(FitInfluenceConfig)
def fit_influence_command(
    json_out: bool = typer.Option(False, "--json", help="print the fit's name, folder, solver, λ and convergence "
                                  "as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Fit the influence scorer's solve s = (H + λI)⁻¹ ∇L_score for a checkpoint and save it under its name in
    --fits-dir; the influence scorer loads it from there (fit, then score). A fit of the same name is kept."""
    from ..experiments.fit_influence import fit_influence

    cfg = build_config(FitInfluenceConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = fit_influence(cfg, progress)
    if json_out:
        print(json.dumps(result.summary(), default=str))
        return
    print(f"fit {result.name}: {result.path}")
