"""The `mft` command: a thin shell over experiments/ and the public API.

Bad input (any MftError) prints one line `mft: error: ...` and exits 2, with no traceback.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from .config import RunConfig, field_help
from .fields import flat_fields
from .errors import ConfigError, MftError
from .report.progress import Progress

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mft_engine: find, remove and judge the parameters of a fine-tuned classifier.")


def _h(name: str) -> str:
    return field_help(RunConfig, name)


class RichProgress(Progress):
    """Progress on a rich bar with rate and ETA (stderr), one task per phase."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichBar

        self.quiet = quiet
        self.bar = RichBar(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                           TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                           console=Console(stderr=True), disable=quiet, transient=False)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def phase(self, name: str, total: int | None = None) -> None:
        self.task = self.bar.add_task(name, total=total, rate="", info="")

    def advance(self, n: int = 1, **info: Any) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, n)
        t = self.bar.tasks[-1]
        rate = f"{t.speed:.1f}/s" if t.speed else ""
        extra = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        self.bar.update(self.task, rate=rate, info=extra)

    def done(self) -> None:
        if self.task is not None:
            t = self.bar.tasks[-1]
            if t.total is not None and t.completed < t.total:
                self.bar.update(self.task, completed=t.total)
        self.task = None


@app.command()
def run(
    model: Optional[str] = typer.Option(None, help=_h("model")),
    task: Optional[str] = typer.Option(None, help=_h("task")),
    data_dir: Optional[str] = typer.Option(None, help=_h("data_dir")),
    samples: Optional[int] = typer.Option(None, help=_h("samples")),
    batch_size: Optional[int] = typer.Option(None, help=_h("batch_size")),
    lr: Optional[float] = typer.Option(None, help=_h("lr")),
    fraction: Optional[str] = typer.Option(None, help=_h("fraction") + " (comma-separated)"),
    rank_by: Optional[str] = typer.Option(None, help=_h("rank_by")),
    exclude: Optional[str] = typer.Option(None, help=_h("exclude")),
    reduction: Optional[str] = typer.Option(None, help=_h("reduction")),
    sample_order: Optional[str] = typer.Option(None, help=_h("sample_order")),
    keep_last: Optional[bool] = typer.Option(None, "--keep-last/--drop-last", help=_h("keep_last")),
    precision: Optional[str] = typer.Option(None, help=_h("precision")),
    literal: Optional[bool] = typer.Option(None, "--literal/--algebraic", help=_h("literal")),
    eval_mode: Optional[bool] = typer.Option(None, "--eval-mode/--train-mode", help=_h("eval_mode")),
    seed: Optional[int] = typer.Option(None, help=_h("seed")),
    max_length: Optional[int] = typer.Option(None, help=_h("max_length")),
    checkpoint_every: Optional[int] = typer.Option(None, help=_h("checkpoint_every")),
    out: Optional[str] = typer.Option(None, help=_h("out")),
    state: Optional[str] = typer.Option(None, help=_h("state")),
    control: Optional[bool] = typer.Option(None, "--control/--no-control", help=_h("control")),
    text_column: Optional[str] = typer.Option(None, help=_h("text_column")),
    text_pair_column: Optional[str] = typer.Option(None, help=_h("text_pair_column")),
    label_column: Optional[str] = typer.Option(None, help=_h("label_column")),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of config fields; flags override it"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue an interrupted run from its .partial folder"),
    json_out: bool = typer.Option(False, "--json", help="print results.json's headline figures as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """The BERT-MFT study: evaluate, collect gradients on N samples, zero the top detrimental fraction,
    evaluate again, and a random control. Writes results/mft_<timestamp>/."""
    from .experiments import run_study
    from .experiments.mft_study import resume_config

    given = {k: v for k, v in locals().items()
             if k not in ("config", "resume", "json_out", "quiet", "run_study", "resume_config") and v is not None}
    if resume is not None:
        cfg = resume_config(resume, given)
    elif config is not None:
        cfg = RunConfig.from_yaml(config, given)
    else:
        cfg = RunConfig.of(**given)
    with RichProgress(quiet or json_out) as progress:
        result = run_study(cfg, progress, resume=resume)
    rec = result.record
    if json_out:
        print(json.dumps({"out_dir": str(result.out_dir), "before": _brief(rec["before"]), "counts": rec["counts"],
                          "fractions": [{**{k: f[k] for k in ("fraction", "k", "threshold_score", "n_tied_at_threshold")},
                                         "after": _brief(f["after"]),
                                         **({"control": _brief(f["control"])} if "control" in f else {})}
                                        for f in rec["fractions"]],
                          "timings": rec["timings"]}))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text())
        print(f"results: {result.out_dir}")


def _brief(m: dict) -> dict:
    return {k: m[k] for k in ("accuracy", "precision", "recall", "f1", "mcc", "pearson", "spearman") if k in m}


def _fh(name: str) -> str:
    from .train import FinetuneConfig

    return field_help(FinetuneConfig, name)


@app.command()
def finetune(
    method: Optional[str] = typer.Option(None, help=_fh("method")),
    model: Optional[str] = typer.Option(None, help=_fh("model")),
    task: Optional[str] = typer.Option(None, help=_fh("task")),
    data_dir: Optional[str] = typer.Option(None, help=_fh("data_dir")),
    samples: Optional[int] = typer.Option(None, help=_fh("samples")),
    sample_order: Optional[str] = typer.Option(None, help=_fh("sample_order")),
    epochs: Optional[int] = typer.Option(None, help=_fh("epochs")),
    max_steps: Optional[int] = typer.Option(None, help=_fh("max_steps")),
    batch_size: Optional[int] = typer.Option(None, help=_fh("batch_size")),
    lr: Optional[float] = typer.Option(None, help=_fh("lr")),
    weight_decay: Optional[float] = typer.Option(None, help=_fh("weight_decay")),
    warmup_ratio: Optional[float] = typer.Option(None, help=_fh("warmup_ratio")),
    max_grad_norm: Optional[float] = typer.Option(None, help=_fh("max_grad_norm")),
    seed: Optional[int] = typer.Option(None, help=_fh("seed")),
    precision: Optional[str] = typer.Option(None, help=_fh("precision")),
    max_length: Optional[int] = typer.Option(None, help=_fh("max_length")),
    eval_every: Optional[int] = typer.Option(None, help=_fh("eval_every")),
    eval_batch_tokens: Optional[int] = typer.Option(None, help=_fh("eval_batch_tokens")),
    save_at: Optional[str] = typer.Option(None, help=_fh("save_at")),
    save_tolerance: Optional[float] = typer.Option(None, help=_fh("save_tolerance")),
    dense_eval_until: Optional[float] = typer.Option(None, help=_fh("dense_eval_until")),
    early_stopping_patience: Optional[int] = typer.Option(None, help=_fh("early_stopping_patience")),
    save_model: Optional[bool] = typer.Option(None, "--save-model/--no-save-model", help=_fh("save_model")),
    out: Optional[str] = typer.Option(None, help=_fh("out")),
    lora_rank: Optional[int] = typer.Option(None, help=_fh("lora_rank")),
    lora_alpha: Optional[float] = typer.Option(None, help=_fh("lora_alpha")),
    lora_dropout: Optional[float] = typer.Option(None, help=_fh("lora_dropout")),
    lora_placement: Optional[str] = typer.Option(None, help=_fh("lora_placement")),
    bitfit_groups: Optional[str] = typer.Option(None, help=_fh("bitfit_groups")),
    bitfit_lr: Optional[str] = typer.Option(None, help=_fh("bitfit_lr")),
    bitfit_clip: Optional[float] = typer.Option(None, help=_fh("bitfit_clip")),
    bitfit_head: Optional[bool] = typer.Option(None, "--bitfit-head/--no-bitfit-head", help=_fh("bitfit_head")),
    freeze_layers: Optional[int] = typer.Option(None, help=_fh("freeze_layers")),
    keep_ratio: Optional[float] = typer.Option(None, help=_fh("keep_ratio")),
    mask_layers: Optional[str] = typer.Option(None, help=_fh("mask_layers")),
    mask_modules: Optional[str] = typer.Option(None, help=_fh("mask_modules")),
    mask_init: Optional[str] = typer.Option(None, help=_fh("mask_init")),
    text_column: Optional[str] = typer.Option(None, help=_fh("text_column")),
    text_pair_column: Optional[str] = typer.Option(None, help=_fh("text_pair_column")),
    label_column: Optional[str] = typer.Option(None, help=_fh("label_column")),
    seeds: Optional[str] = typer.Option(None, help="run once per seed (comma-separated, e.g. 1,2,3) into "
                                        "results/finetune_seeds_<method>_<timestamp>/ and report the mean and a "
                                        "percentile-bootstrap 95% CI of each metric; replaces --seed"),
    json_out: bool = typer.Option(False, "--json", help="print the run's headline figures as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Fine-tune a model with one method (full, bitfit, lora, lora8, qlora, freeze, learned-mask); report trainable parameters,
    time, memory, stored size and metrics on the validation halves (learned-mask: also its random and row-wise
    L1 controls). Writes results/finetune_<method>_<timestamp>/."""
    from .train import FinetuneConfig
    from .train import finetune as run_finetune

    given = {k: v for k, v in locals().items()
             if k not in ("json_out", "quiet", "seeds", "FinetuneConfig", "run_finetune") and v is not None}
    if seeds is not None:
        _finetune_seeds(given, seeds, json_out, quiet)
        return
    cfg = FinetuneConfig.of(**given)
    with RichProgress(quiet or json_out) as progress:
        result = run_finetune(cfg, progress)
    rec = result.record
    if json_out:
        keys = ("method", "task", "trainable_params", "total_params", "trainable_share", "train_s", "peak_mem_bytes",
                "peak_cuda_bytes", "stored_bytes", "gradient_checkpointing", "primary_metric", "metrics",
                "metrics_scoring_half", "metrics_whole")
        brief = {k: rec[k] for k in keys}
        brief.update(steps=rec["training"]["steps"], stopped_early=rec["training"]["stopped_early"],
                     out_dir=str(result.out_dir))
        if "checkpoints" in rec:
            brief["checkpoints"] = {"reached": rec["checkpoints"]["reached"],
                                    "not_reached": rec["checkpoints"]["not_reached"]}
        print(json.dumps(brief))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text())
        print(f"results: {result.out_dir}")


def _finetune_seeds(given: dict[str, Any], seeds: str, json_out: bool, quiet: bool) -> None:
    """`mft finetune ... --seeds 1,2,3`: one run per seed and the summary across them."""
    from .train import FinetuneConfig
    from .train.sweep import finetune_seeds, parse_seeds

    if "seed" in given:
        raise ConfigError("--seed and --seeds both given; pass the seeds in --seeds only")
    seed_list = parse_seeds(seeds)
    cfg = FinetuneConfig.of(**given, seed=seed_list[0])
    with RichProgress(quiet or json_out) as progress:
        result = finetune_seeds(cfg, seed_list, progress)
    rec = result.record
    if json_out:
        keys = ("method", "task", "seeds", "trainable_params", "total_params", "trainable_share", "primary_metric",
                "metrics", "metrics_whole", "train_s", "bootstrap")
        print(json.dumps({**{k: rec[k] for k in keys}, "out_dir": str(result.out_dir),
                          "runs": [str(p) for p in result.run_dirs]}))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text())
        print(f"results: {result.out_dir}")


def _finetune_flag_parameters() -> list:
    """One optional CLI parameter per FinetuneConfig field (bools as --x/--no-x, lists as a string), so
    `mft sweep` takes every finetune flag as a fixed setting, new fields included, without a second list."""
    import inspect
    import types
    import typing

    from .train import FinetuneConfig

    params = []
    for f in flat_fields(FinetuneConfig):
        tp = f.type
        if isinstance(tp, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if typing.get_origin(tp) is list:
            tp = str
        flag = "--" + f.name.replace("_", "-")
        help_text = "parent folder of the sweep folder" if f.name == "out" else f.help
        decls = (f"{flag}/--no-{flag[2:]}",) if tp is bool else (flag,)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[tp],
                                        default=typer.Option(None, *decls, help=help_text)))
    return params


def _with_finetune_flags(func):
    """Give a command taking **fixed every FinetuneConfig flag as an option (see _finetune_flag_parameters)."""
    import inspect

    sig = inspect.signature(func)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=own + _finetune_flag_parameters())
    return func


@app.command("sweep")
@_with_finetune_flags
def sweep_command(
    grid: Optional[list[str]] = typer.Option(None, "--grid", help="an axis field=v1,v2,... over any finetune "
                                             "setting (repeatable; values split on ';' when one holds a comma)"),
    name: Optional[str] = typer.Option(None, help="sweep folder name sweep_<name> under --out; re-running with "
                                       "the same --out and --name resumes it"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue a sweep folder (finished cells are "
                                          "not re-run; --grid and flags may be left out)"),
    json_out: bool = typer.Option(False, "--json", help="print the best cell and every cell's status as one "
                                  "JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **fixed: Any,
) -> None:
    """Grid search: one finetune per cell of --grid (other finetune flags are fixed settings); the best
    cell is chosen on the scoring half and reported on the evaluation half. Writes results/sweep_<name>/."""
    from .train.sweep import SweepConfig, sweep

    fixed = {k: v for k, v in fixed.items() if v is not None}
    out = fixed.pop("out", None)
    if not grid and resume is None and name is None:
        raise ConfigError("--grid is required: give at least one axis, e.g. --grid lr=1e-4,5e-5")
    cfg = SweepConfig(grid=grid or [], fixed=fixed, out=out or "results", name=name)
    with RichProgress(quiet or json_out) as progress:
        result = sweep(cfg, resume=resume, progress=progress)
    rec = result.record
    if json_out:
        print(json.dumps({"out_dir": str(result.out_dir), "grid": rec["grid"], "n_cells": rec["n_cells"],
                          "n_finished": rec["n_finished"], "n_failed": rec["n_failed"],
                          "n_finished_earlier": rec["n_finished_earlier"], "selection": rec["selection"],
                          "best": rec["best"],
                          "cells": [{k: c[k] for k in ("id", "values", "status", "attempts", "error")}
                                    for c in rec["cells"]]}))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text())
        print(f"results: {result.out_dir}")


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="finetune results folders (results/finetune_*)"),
    out: str = typer.Option("results", help="parent folder of the compare_<timestamp> folder"),
    json_out: bool = typer.Option(False, "--json", help="print the table rows and the folder as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="print nothing but errors"),
) -> None:
    """The methods table over finetune runs: methods.csv, methods.md and methods_tradeoff.png (metric on the
    evaluation half vs trainable share vs time). Writes results/compare_<timestamp>/."""
    from .report.compare import compare_runs

    result = compare_runs(run_dirs, out)
    if json_out:
        print(json.dumps({"out_dir": str(result.out_dir), "rows": result.rows}))
    elif not quiet:
        print((result.out_dir / "methods.md").read_text())
        print(f"results: {result.out_dir}")


@app.command()
def export(
    results_dir: Path = typer.Argument(..., help="an mft run results folder"),
    out_dir: Path = typer.Argument(..., help="where to write the masked Hugging Face checkpoint"),
    fraction: Optional[float] = typer.Option(None, help="which fraction's mask (needed when the run had several)"),
) -> None:
    """Write the masked model of a run as a Hugging Face checkpoint folder (loads with --model OUT_DIR)."""
    from .export import export_masked

    path = export_masked(results_dir, out_dir, fraction)
    print(f"wrote {path}")


bench_app = typer.Typer(help="Benchmarks: ratios measured side by side in one run, the CPU named.")
app.add_typer(bench_app, name="bench")


def _print_bench(data: dict, json_out: bool) -> None:
    if json_out:
        print(json.dumps(data))
        return
    for k, v in data.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.4g}"
        print(f"{k:<30} {v}")


@bench_app.command("zeroing")
def bench_zeroing(
    model: str = typer.Option("bert-base-random", help="bert-base-random | bert-tiny-random"),
    fraction: float = typer.Option(0.1, help="fraction of detrimental eligible parameters to zero"),
    repeats: int = typer.Option(3, help="runs per formulation (median reported)"),
    compiled: bool = typer.Option(True, "--compiled/--no-compiled", help="include the torch.compile formulation"),
    heap: bool = typer.Option(True, "--heap/--no-heap", help="include the original's heap (1/100 subset, scaled)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """Test + select + zero on a model's shapes: fused ops vs torch.topk, torch.compile, the original's heap,
    and the read bound."""
    from .bench.zeroing import run as run_zeroing

    if model not in ("bert-base-random", "bert-tiny-random"):
        raise ConfigError(f"--model {model} must be bert-base-random or bert-tiny-random for bench zeroing")
    _print_bench(run_zeroing(model, fraction, repeats=repeats, compiled=compiled, heap=heap), json_out)


@bench_app.command("collect")
def bench_collect(
    model: str = typer.Option("minilm", help=_h("model")),
    task: str = typer.Option("sst2", help=_h("task")),
    data_dir: Optional[str] = typer.Option(None, help=_h("data_dir")),
    samples: int = typer.Option(512, help="sentences (first N rows)"),
    reduction: str = typer.Option("batch-sum", help=_h("reduction")),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (adds the bf16 engine and its mask Jaccard)"),
    repeats: int = typer.Option(3, help="runs per loop (median reported)"),
    profile: bool = typer.Option(False, "--profile", help="print a torch.profiler table of one engine run"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """Collection samples/s: engine vs the original's loop vs a plain eager loop, and the matmul peak."""
    from .bench import collect as bc

    RunConfig.of(model=model, task=task, samples=samples, reduction=reduction, precision=precision)
    if profile:
        print(bc.profile(model, min(samples, 128), reduction))
        return
    _print_bench(bc.run(model, task, samples, reduction, precision, repeats, data_dir), json_out)


@bench_app.command("hvp")
def bench_hvp(
    model: str = typer.Option("minilm", help=_h("model")),
    samples: int = typer.Option(32, help="training sentences (first N rows of the SST-2 train split)"),
    vectors: int = typer.Option(8, help="vectors multiplied by the Gauss-Newton matrix"),
    repeats: int = typer.Option(3, help="timed runs per formulation (median reported)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Gauss-Newton-vector products over all parameters: many vectors per pass (batched_gnvp) vs a loop of
    gnvp, per vector, with one gradient over the same sentences for scale."""
    from .bench import hvp as bh

    if min(samples, vectors, repeats) < 1:
        raise ConfigError(f"--samples {samples}, --vectors {vectors} and --repeats {repeats} must be at least 1")
    with RichProgress(quiet or json_out) as progress:
        data = bh.run(model, samples, vectors, repeats, progress=progress)
    _print_bench(data, json_out)


@bench_app.command("cg")
def bench_cg(
    model: str = typer.Option("minilm", help=_h("model")),
    task: str = typer.Option("sst2", help=_h("task")),
    data_dir: Optional[str] = typer.Option(None, help=_h("data_dir")),
    samples: int = typer.Option(1000, help="training sentences N of the Gauss-Newton matrix (first N rows)"),
    solvers: str = typer.Option("cg,pcg", help="comma-separated: cg | pcg (Jacobi-preconditioned by diag G + λ)"),
    damping_factors: str = typer.Option("1e-3", help="λ = each factor × mean diag G (comma-separated)"),
    tol: float = typer.Option(0.05, help="stop at this relative residual"),
    budget_s: float = typer.Option(600.0, help="wall-clock budget of each solve, seconds"),
    dtype: str = typer.Option("float32", help="float32 | float64: the arithmetic of the products and the solve"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """CG on the influence system (G + λI) s = ∇L_score over all eligible parameters: the residual reached
    in a time budget, per solver and damping."""
    from .bench import cg as bcg
    from .experiments.trials import parse_float_list, parse_names

    names = parse_names("--solvers", solvers, list(bcg.CG_SOLVERS))
    factors = parse_float_list("--damping-factors", damping_factors)
    if not factors or not all(f > 0 and math.isfinite(f) for f in factors):
        raise ConfigError(f"--damping-factors {damping_factors!r} must list factors > 0")
    if dtype not in bcg.DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(bcg.DTYPES)}")
    if samples < 1 or not 0 < tol < 1 or not budget_s > 0:
        raise ConfigError(f"--samples {samples} must be >= 1, --tol {tol} in (0, 1), --budget-s {budget_s} > 0")
    with RichProgress(quiet or json_out) as progress:
        data = bcg.run(model, task, data_dir, samples, tuple(names), tuple(factors), tol, budget_s, dtype=dtype,
                       progress=progress)
    _print_bench(data, json_out)


study_app = typer.Typer(no_args_is_help=True, help="Fine-tuning studies: data-centric sampling, noise robustness, "
                        "few-shot scaling, LoRA transfer with SVD. Each writes results/<study>_<timestamp>/.")
app.add_typer(study_app, name="study")


def _config_flag_parameters(cls: type) -> list:
    """One optional CLI parameter per field of a study config dataclass (bools as --x/--no-x), help from
    the field's metadata, so a study's flags never drift from its config."""
    import dataclasses
    import inspect
    import types
    import typing

    hidden = set(getattr(cls, "HIDDEN_FLAGS", ()))
    params = []
    for f in flat_fields(cls):
        if f.name in hidden:
            continue
        tp = f.type
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        decls = (f"{flag}/--no-{flag[2:]}",) if tp is bool else (flag,)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is None:
            shown: bool | str = False
        elif tp is bool:
            shown = flag[2:] if default else f"no-{flag[2:]}"
        else:
            shown = str(default)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[tp],
                                        default=typer.Option(None, *decls, help=f.help,
                                                             show_default=shown)))
    return params


def _with_config_flags(cls: type):
    """Give a study command taking **given one option per field of `cls` (see _config_flag_parameters)."""
    import inspect

    def wrap(func):
        sig = inspect.signature(func)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        func.__signature__ = sig.replace(parameters=own + _config_flag_parameters(cls))
        return func

    return wrap


def _run_study(config_cls: type, runner, given: dict[str, Any], json_out: bool, quiet: bool,
               table_key: str = "table") -> None:
    """Build the study config from the flags given, run the study, print its summary or one JSON object."""
    cfg = config_cls.of(**{k: v for k, v in given.items() if v is not None})
    with RichProgress(quiet or json_out) as progress:
        result = runner(cfg, progress)
    rec = result.record
    if json_out:
        print(json.dumps({"study": rec["study"], "out_dir": str(result.out_dir), "data": rec["data"],
                          "primary_metric": rec["primary_metric"], table_key: rec[table_key],
                          "timings": rec["timings"]}, default=str))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text(encoding="utf-8"))
        print(f"results: {result.out_dir}")


def _study_config(name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"mft_engine.experiments.{name}"), {
        "data_centric": "DataCentricConfig", "noise": "NoiseConfig", "few_shot": "FewShotConfig",
        "transfer": "TransferConfig"}[name])


_JSON_HELP = "print the study's table and folder as one JSON object"


@study_app.command("data-centric")
@_with_config_flags(_study_config("data_centric"))
def study_data_centric(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """A teacher's per-sample loss ranks the pool; equal-size subsets (uniform, easy, hard, middle, mixed) are
    each fine-tuned the same way. Writes results/data_centric_<timestamp>/."""
    from .experiments.data_centric import DataCentricConfig, run_data_centric

    _run_study(DataCentricConfig, run_data_centric, given, json_out, quiet)


@study_app.command("noise")
@_with_config_flags(_study_config("noise"))
def study_noise(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """Train clean, test on corrupted text (emoji, character and word noise) at several levels; and noise-augmented
    training tested the same way. Writes results/noise_<timestamp>/."""
    from .experiments.noise import NoiseConfig, run_noise

    _run_study(NoiseConfig, run_noise, given, json_out, quiet)


@study_app.command("few-shot")
@_with_config_flags(_study_config("few_shot"))
def study_few_shot(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """Scaling curve: fine-tune on k = 16, 32, 64, ... rows (class-balanced, nested) up to the pool, over seeds.
    Writes results/few_shot_<timestamp>/."""
    from .experiments.few_shot import FewShotConfig, run_few_shot

    _run_study(FewShotConfig, run_few_shot, given, json_out, quiet, table_key="curve")


@study_app.command("transfer")
@_with_config_flags(_study_config("transfer"))
def study_transfer(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """LoRA on --task (SST-2), then frozen adapter + new head on --target-task (MRPC) vs LoRA from scratch, per
    placement; SVD and stable rank of every LoRA update. Writes results/transfer_<timestamp>/."""
    from .experiments.transfer import TransferConfig, run_transfer

    _run_study(TransferConfig, run_transfer, given, json_out, quiet)


@app.command("app")
def app_command(
    folders: Optional[list[str]] = typer.Argument(None, help="more folders to preload (so --models A B C works)",
                                                  show_default=False),
    models: Optional[list[str]] = typer.Option(None, "--models", help="results or model folders to preload "
                                               "(mft run, finetune, checkpoint, export); the bundled MiniLM is "
                                               "always offered", show_default=False),
    host: str = typer.Option("127.0.0.1", help="address to serve on (0.0.0.0 exposes the app to the network)"),
    port: Optional[int] = typer.Option(None, help="port to serve on (default: gradio's first free from 7860)"),
    share: bool = typer.Option(False, "--share/--no-share", help="also open a public gradio.live link"),
) -> None:
    """A browser page to see, try and compare models: predict a text, a CSV, inspect a results folder's
    masks and curves, compare two models. Needs the [app] extra (gradio)."""
    import importlib.util
    import os

    # Before gradio is imported: it reads this once, at import.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if importlib.util.find_spec("gradio") is None:
        raise MftError('mft app needs gradio: pip install -e ".[app]"')
    from .app.ui import serve

    serve([*(models or []), *(folders or [])], host=host, port=port, share=share)


@app.command()
def info(json_out: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """Versions, threads, CPU features, the active kernel path, and every backend (cpu, cuda, xla) with
    its status and, where one is absent, what is missing and what brings it."""
    from .report import backends, machine_info, versions

    data = {**versions(), **machine_info(), "backends": backends()}
    if json_out:
        print(json.dumps(data))
        return
    for k, v in data.items():
        if k == "backends":
            continue
        print(f"{k:<16} {', '.join(v) if isinstance(v, list) else v}")
    for b in data["backends"]:
        rest = "; ".join(f"{k}: {v}" for k, v in b.items() if k not in ("backend", "status") and v is not None)
        print(f"{'backend ' + b['backend']:<16} {b['status']}" + (f" ({rest})" if rest else ""))


def _scoring_config(name: str) -> type:
    import importlib

    module, cls = {"validate": ("validate_scorer", "ValidateConfig"), "influence": ("influence_sweep", "InfluenceConfig")}[name]
    return getattr(importlib.import_module(f"mft_engine.experiments.{module}"), cls)


@app.command("validate-scorer")
@_with_config_flags(_scoring_config("validate"))
def validate_scorer(
    json_out: bool = typer.Option(False, "--json", help="print the ground-truth table as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """Judge every scorer against ground truth: n sampled eligible parameters each zeroed alone (ΔL on the
    scoring half), sign figures, Spearman, top-100 precision, a damping sweep and additivity.
    Writes results/validate_<timestamp>/."""
    from .experiments.validate_scorer import ValidateConfig, validate_scorers

    cfg = ValidateConfig.of(**{k: v for k, v in given.items() if v is not None})
    with RichProgress(quiet or json_out) as progress:
        result = validate_scorers(cfg, progress)
    if json_out:
        print(json.dumps(result.summary, default=str))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text(encoding="utf-8"))
        print(f"results: {result.out_dir}")


@app.command("influence")
@_with_config_flags(_scoring_config("influence"))
def influence(
    json_out: bool = typer.Option(False, "--json", help="print the sweeps and the false-positive table as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    **given: Any,
) -> None:
    """Removal sweeps: per checkpoint and scorer, zero the N lowest-scored eligible parameters and measure
    evaluation-half accuracy (bootstrap 95% CI) against a random control; the study's false-positive table.
    Writes results/influence_<timestamp>/."""
    from .experiments.influence_sweep import InfluenceConfig, removal_sweep

    cfg = InfluenceConfig.of(**{k: v for k, v in given.items() if v is not None})
    with RichProgress(quiet or json_out) as progress:
        result = removal_sweep(cfg, progress)
    rec = result.record
    if json_out:
        print(json.dumps({"out_dir": str(result.out_dir), "baselines": rec["baselines"], "sweeps": rec["sweeps"],
                          "false_positive": rec["false_positive"]}, default=str))
    elif not quiet:
        print((result.out_dir / "summary.txt").read_text(encoding="utf-8"))
        print(f"results: {result.out_dir}")


def _interrupted_line() -> str:
    from .report.folder import interrupt_note

    note = interrupt_note()
    return f"mft: interrupted; {note}" if note else "mft: interrupted"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"mft: warning: {message}\n"


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the Typer app, turning MftError (and file-system errors such as a full disk) into
    one line on stderr and exit code 2; Ctrl-C and SIGTERM end with a line saying what was kept (130)."""
    import signal

    from .report.folder import filesystem_error

    # SIGTERM (schedulers, `kill`) cleans up like Ctrl-C instead of dying with a half-written folder.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    format_before = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        rv = app(args=argv, standalone_mode=False)
    except MftError as e:
        print(f"mft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_line(), file=sys.stderr)
        return 130
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except Exception as e:  # file-system errors outside a results folder; click's usage errors
        err = filesystem_error(e)
        if err is not None:
            print(f"mft: error: {err}", file=sys.stderr)
            return 2
        usage, abort = _click_exception_types()
        if isinstance(e, usage):
            e.show()
            return 2
        if isinstance(e, abort):
            print(_interrupted_line(), file=sys.stderr)
            return 130
        raise
    finally:
        warnings.formatwarning = format_before
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # Without standalone mode, typer turns Ctrl-C into a returned 130 (and typer.Exit into its code).
    if rv == 130:
        print(_interrupted_line(), file=sys.stderr)
    return rv if isinstance(rv, int) else 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error, abort) exception types of click and of the click copy that typer >= 0.26 vendors."""
    import click

    usage, abort = [click.exceptions.ClickException], [click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        usage.append(vendored.ClickException)
    if isinstance(getattr(typer, "Abort", None), type):
        abort.append(typer.Abort)
    return tuple(usage), tuple(abort)


if __name__ == "__main__":
    sys.exit(main())
