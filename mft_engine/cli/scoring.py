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
    """Judge every scorer on its own claim against ground truth: n sampled eligible parameters each zeroed
    alone (ΔL on the scoring half and on held-out rows, side by side; each item classed helpful / harmful /
    undetermined by a bootstrap over examples): signed scorers on the sign of ΔL, unsigned ones on |ΔL|,
    every scorer's picks against a random k, false-positive rates, the oracle row, a damping sweep and
    additivity. Writes results/validate_<timestamp>/."""
    from ..experiments.validate_scorer import validate_scorers

    cfg = build_config(ValidateConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = validate_scorers(cfg, progress)
    if result.out_dir is None:  # a torchrun rank other than 0: rank 0 reports
        return
    print_result(result.out_dir, result.summary, json_out, quiet)


@app.command("influence")
@with_config_flags(InfluenceConfig)
def influence(
    json_out: bool = typer.Option(False, "--json", help="print the sweeps, the verdict and the gradient–influence "
                                  "disagreement table as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Removal sweeps: per checkpoint, scorer and N, zero the N lowest-scored eligible parameters (beside a
    gradient step of the same norm on them and N random ones) and compare held-out and evaluation-half
    accuracy and loss with the unmasked model (paired tests, Holm-corrected); the study's gradient–influence
    disagreement table. Writes results/influence_<timestamp>/ (or influence_<name>/, resumable)."""
    from ..experiments.influence_sweep import removal_sweep

    cfg = build_config(InfluenceConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = removal_sweep(cfg, progress)
    if result.out_dir is None:  # a torchrun rank other than 0: rank 0 reports
        return
    rec = result.record
    print_result(result.out_dir, {"out_dir": str(result.out_dir), "baselines": rec["baselines"],
                                  "sweeps": rec["sweeps"], "comparisons": rec["comparisons"],
                                  "chosen_n": rec["chosen_n"], "verdict": rec["verdict"],
                                  "gradient_influence_disagreement": rec["gradient_influence_disagreement"],
                                  "cells": rec["cells"]},
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
    if not result.is_main:  # a torchrun rank other than 0: rank 0 reports
        return
    if json_out:
        print(json.dumps(result.summary(), default=str))
        return
    print(f"fit {result.name}: {result.path}")
