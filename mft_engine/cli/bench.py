"""`mft bench ...`: ratios measured side by side in one run, the CPU named."""
from __future__ import annotations

import json
import math
from typing import Optional

import typer

from ..config import RunConfig
from ..device import check_device_spec
from ..errors import ConfigError
from ..fields import field_help
from ..models.loading import RANDOM_SHAPES
from .apps import bench_app
from .output import command_progress


def _run_help(name: str) -> str:
    return field_help(RunConfig, name)


def _device_help() -> str:
    return field_help(RunConfig, "device")


def _dist_backend_help() -> str:
    return field_help(RunConfig, "dist_backend")


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
    model: str = typer.Option("bert-base-random", help="bert-base-random | minilm-random | bert-tiny-random"),
    fraction: float = typer.Option(0.1, help="fraction of detrimental eligible parameters to zero"),
    repeats: int = typer.Option(3, help="runs per formulation (median reported)"),
    compiled: bool = typer.Option(True, "--compiled/--no-compiled", help="include the torch.compile formulation"),
    heap: bool = typer.Option(True, "--heap/--no-heap", help="include the original's heap (1/100 subset, scaled)"),
    device: str = typer.Option("auto", help=_device_help()),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """Test + select + zero on a model's shapes: fused ops vs torch.topk, torch.compile, the original's heap,
    and the read bound."""
    from ..bench.zeroing import run as run_zeroing

    if model not in RANDOM_SHAPES:
        raise ConfigError(f"--model {model} must be one of {', '.join(RANDOM_SHAPES)} for bench zeroing")
    check_device_spec(device)
    _print_bench(run_zeroing(model, fraction, repeats=repeats, compiled=compiled, heap=heap, device=device),
                 json_out)


@bench_app.command("collect")
def bench_collect(
    model: str = typer.Option("minilm", help=_run_help("model")),
    task: str = typer.Option("sst2", help=_run_help("task")),
    data_dir: Optional[str] = typer.Option(None, help=_run_help("data_dir")),
    samples: int = typer.Option(512, help="sentences (first N rows)"),
    reduction: str = typer.Option("batch-sum", help=_run_help("reduction")),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (adds the bf16 engine and its mask Jaccard)"),
    repeats: int = typer.Option(3, help="runs per loop (median reported)"),
    profile: bool = typer.Option(False, "--profile", help="print a torch.profiler table of one engine run"),
    device: str = typer.Option("auto", help=_device_help()),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
) -> None:
    """Collection samples/s: engine vs the original's loop vs a plain eager loop, and the matmul peak."""
    from ..bench import collect as bc

    RunConfig.of(model=model, task=task, samples=samples, reduction=reduction, precision=precision, device=device)
    if profile:
        print(bc.profile(model, min(samples, 128), reduction))
        return
    _print_bench(bc.run(model, task, samples, reduction, precision, repeats, data_dir, device=device), json_out)


@bench_app.command("hvp")
def bench_hvp(
    model: str = typer.Option("minilm", help=_run_help("model")),
    samples: int = typer.Option(32, help="training sentences (first N rows of the SST-2 train split)"),
    vectors: int = typer.Option(8, help="vectors multiplied by the Gauss-Newton matrix"),
    repeats: int = typer.Option(3, help="timed runs per formulation (median reported)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    device: str = typer.Option("auto", help=_device_help()),
) -> None:
    """Gauss-Newton-vector products over all parameters: many vectors per pass (batched_gnvp) vs a loop of
    gnvp, per vector, with one gradient over the same sentences for scale."""
    from ..bench import hvp as bh

    if min(samples, vectors, repeats) < 1:
        raise ConfigError(f"--samples {samples}, --vectors {vectors} and --repeats {repeats} must be at least 1")
    check_device_spec(device)
    with command_progress(quiet or json_out) as progress:
        data = bh.run(model, samples, vectors, repeats, progress=progress, device=device)
    _print_bench(data, json_out)


@bench_app.command("cg")
def bench_cg(
    model: str = typer.Option("minilm", help=_run_help("model")),
    task: str = typer.Option("sst2", help=_run_help("task")),
    data_dir: Optional[str] = typer.Option(None, help=_run_help("data_dir")),
    samples: int = typer.Option(1000, help="training sentences N of the Gauss-Newton matrix (first N rows)"),
    solvers: str = typer.Option("cg,pcg", help="comma-separated: cg | pcg (Jacobi-preconditioned by diag G + λ)"),
    damping_factors: str = typer.Option("1e-3", help="λ = each factor × mean diag G (comma-separated)"),
    tol: float = typer.Option(0.05, help="stop at this relative residual"),
    budget_s: float = typer.Option(600.0, help="wall-clock budget of each solve, seconds"),
    dtype: str = typer.Option("float32", help="float32 | float64: the arithmetic of the products and the solve"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    device: str = typer.Option("auto", help=_device_help()),
    dist_backend: Optional[str] = typer.Option(None, help=_dist_backend_help()),
) -> None:
    """CG on the influence system (G + λI) s = ∇L_score over all eligible parameters: the residual reached
    in a time budget, per solver and damping."""
    from ..bench import cg as bcg
    from ..experiments.trials import parse_float_list, parse_names

    names = parse_names("--solvers", solvers, list(bcg.CG_SOLVERS))
    factors = parse_float_list("--damping-factors", damping_factors)
    if not factors or not all(f > 0 and math.isfinite(f) for f in factors):
        raise ConfigError(f"--damping-factors {damping_factors!r} must list factors > 0")
    if dtype not in bcg.DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(bcg.DTYPES)}")
    if samples < 1 or not 0 < tol < 1 or not budget_s > 0:
        raise ConfigError(f"--samples {samples} must be >= 1, --tol {tol} in (0, 1), --budget-s {budget_s} > 0")
    with command_progress(quiet or json_out) as progress:
        data = bcg.run(model, task, data_dir, samples, tuple(names), tuple(factors), tol, budget_s, dtype=dtype,
                       progress=progress, device=device, dist_backend=dist_backend)
    if data is None:  # a torchrun rank other than 0: rank 0 reports
        return
    _print_bench(data, json_out)
