"""`mft validate-scorer` and `mft influence`: scorers judged against ground truth, and removal sweeps."""
from __future__ import annotations

from typing import Any

import typer

from ..experiments.influence_sweep import InfluenceConfig
from ..experiments.validate_scorer import ValidateConfig
from .apps import QUIET_HELP, app
from .flags import build_config, with_config_flags
from .output import RichProgress, print_result


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
    with RichProgress(quiet or json_out) as progress:
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
    with RichProgress(quiet or json_out) as progress:
        result = removal_sweep(cfg, progress)
    rec = result.record
    print_result(result.out_dir, {"out_dir": str(result.out_dir), "baselines": rec["baselines"],
                                  "sweeps": rec["sweeps"], "false_positive": rec["false_positive"]},
                 json_out, quiet)
