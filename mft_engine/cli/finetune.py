"""`mft finetune` (one method, or one per seed) and `mft sweep` (a grid of finetune runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError
from ..fields import check_known_fields, read_yaml_fields
from ..train import FinetuneConfig
from .apps import QUIET_HELP, app
from .flags import build_config, given_flags, with_config_flags
from .output import command_progress, print_result

_FINETUNE_JSON = ("method", "task", "trainable_params", "total_params", "trainable_share", "train_s",
                  "peak_mem_bytes", "peak_cuda_bytes", "stored_bytes", "gradient_checkpointing", "primary_metric",
                  "metrics", "metrics_scoring_half", "metrics_whole")


@app.command()
@with_config_flags(FinetuneConfig)
def finetune(
    seeds: Optional[str] = typer.Option(None, help="run once per seed (comma-separated, e.g. 1,2,3) into "
                                        "results/finetune_seeds_<method>_<timestamp>/ and report the mean and a "
                                        "percentile-bootstrap 95% CI of each metric; replaces --seed"),
    json_out: bool = typer.Option(False, "--json", help="print the run's headline figures as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Fine-tune a model with one method (full, bitfit, lora, lora8, qlora, freeze, learned-mask); report
    trainable parameters, time, memory, stored size and metrics on the validation halves (learned-mask: also
    its random and row-wise L1 controls). Writes results/finetune_<method>_<timestamp>/."""
    from ..train import finetune as run_finetune

    if seeds is not None:
        _finetune_seeds(given, seeds, json_out, quiet)
        return
    cfg = build_config(FinetuneConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = run_finetune(cfg, progress)
    rec = result.record
    brief = {k: rec[k] for k in _FINETUNE_JSON}
    brief.update(steps=rec["training"]["steps"], stopped_early=rec["training"]["stopped_early"],
                 out_dir=str(result.out_dir))
    if "checkpoints" in rec:
        brief["checkpoints"] = {"reached": rec["checkpoints"]["reached"],
                                "not_reached": rec["checkpoints"]["not_reached"]}
    print_result(result.out_dir, brief, json_out, quiet)


def _finetune_seeds(given: dict[str, Any], seeds: str, json_out: bool, quiet: bool) -> None:
    """`mft finetune ... --seeds 1,2,3`: one run per seed and the summary across them."""
    from ..train.sweep import finetune_seeds, parse_seeds

    flags, config = given_flags(FinetuneConfig, given)
    if "seed" in flags:
        raise ConfigError("--seed and --seeds both given; pass the seeds in --seeds only")
    seed_list = parse_seeds(seeds)
    flags["seed"] = seed_list[0]
    cfg = FinetuneConfig.from_yaml(config, flags) if config is not None else FinetuneConfig.of(**flags)
    with command_progress(quiet or json_out) as progress:
        result = finetune_seeds(cfg, seed_list, progress)
    rec = result.record
    keys = ("method", "task", "seeds", "trainable_params", "total_params", "trainable_share", "primary_metric",
            "metrics", "metrics_whole", "train_s", "bootstrap")
    print_result(result.out_dir, {**{k: rec[k] for k in keys}, "out_dir": str(result.out_dir),
                                  "runs": [str(p) for p in result.run_dirs]}, json_out, quiet)


@app.command("sweep")
@with_config_flags(FinetuneConfig, help={"out": "parent folder of the sweep folder"},
                   config_help="YAML file of finetune fields held fixed in every cell; flags given override it")
def sweep_command(
    grid: Optional[list[str]] = typer.Option(None, "--grid", help="an axis field=v1,v2,... over any finetune "
                                             "setting (repeatable; values split on ';' when one holds a comma)",
                                             show_default=False),
    name: Optional[str] = typer.Option(None, help="sweep folder name sweep_<name> under --out; re-running with "
                                       "the same --out and --name resumes it"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue a sweep folder (finished cells are "
                                          "not re-run; --grid and flags may be left out)"),
    json_out: bool = typer.Option(False, "--json", help="print the best cell and every cell's status as one "
                                  "JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Grid search: one finetune per cell of --grid (other finetune flags are fixed settings); the best
    cell is chosen on the scoring half and reported on the evaluation half. Writes results/sweep_<name>/."""
    from ..train.sweep import SweepConfig, sweep

    flags, config = given_flags(FinetuneConfig, given)
    fixed: dict[str, Any] = {}
    if config is not None:  # the file's fields held fixed, flags given on top
        fixed = read_yaml_fields(FinetuneConfig, config)
        check_known_fields(FinetuneConfig, fixed)
    fixed.update(flags)
    out = fixed.pop("out", None)
    if not grid and resume is None and name is None:
        raise ConfigError("--grid is required: give at least one axis, e.g. --grid lr=1e-4,5e-5")
    cfg = SweepConfig(grid=grid or [], fixed=fixed, out=out or "results", name=name)
    with command_progress(quiet or json_out) as progress:
        result = sweep(cfg, resume=resume, progress=progress)
    rec = result.record
    print_result(result.out_dir, {
        "out_dir": str(result.out_dir), "grid": rec["grid"], "n_cells": rec["n_cells"],
        "n_finished": rec["n_finished"], "n_failed": rec["n_failed"],
        "n_finished_earlier": rec["n_finished_earlier"], "selection": rec["selection"], "best": rec["best"],
        "cells": [{k: c[k] for k in ("id", "values", "status", "attempts", "error")} for c in rec["cells"]]},
        json_out, quiet)
