"""Multi-seed runs (`mft finetune --seeds`): one finetune per seed, then the mean, std and a
percentile-bootstrap 95% CI of every metric across seeds (evaluate/bootstrap.py)."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...evaluate.bootstrap import DEFAULT_RESAMPLES, bootstrap_ci
from ...fields import SEED_MAX, check_int_range
from ...report import ResultsFolder, machine_info, versions
from ...report.progress import Progress
from ..config import FinetuneConfig
from .grid import Cell
from .runs import CellProgress, load_record, run_cell


def parse_seeds(value: str | Sequence[int]) -> list[int]:
    """'1,2,3' (or a list) → seeds in the order given; ConfigError for a non-integer, a repeat or none."""
    try:
        seeds = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else [int(v) for v in value]
    except ValueError:
        raise ConfigError(f"--seeds {value!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise ConfigError("--seeds is empty; expected integers such as 1,2,3")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {value!r} repeats a seed")
    for s_ in seeds:
        check_int_range("--seeds", s_, 0, SEED_MAX)
    return seeds


@dataclass
class SeedsResult:
    """A finished multi-seed run: its folder, results.json as a dict, and each seed's run folder."""

    out_dir: Path
    record: dict[str, Any]
    run_dirs: list[Path] = field(default_factory=list)


def _spread(values: list[float], resamples: int, seed: int) -> dict[str, Any]:
    ci = bootstrap_ci(values, resamples=resamples, seed=seed)
    n = len(values)
    std = math.sqrt(sum((v - ci.estimate) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": ci.estimate, "std": std, "ci_low": ci.low, "ci_high": ci.high, "values": values}


def finetune_seeds(config: FinetuneConfig, seeds: Sequence[int] | str, progress: Progress | None = None,
                   resamples: int = DEFAULT_RESAMPLES, bootstrap_seed: int = 0) -> SeedsResult:
    """One `finetune` per seed (the seed replaced), then the mean, std and percentile-bootstrap CI
    (`resamples` resamples, seeded with `bootstrap_seed`) of every metric across seeds.

    Writes `config.out/finetune_seeds_<method>_<timestamp>/` with runs/seed-<s>/ (finetune results
    folders), seeds.csv (one row per seed), summary.txt and results.json (config, seeds, versions,
    machine, per-seed figures and the summaries under `metrics` (evaluation half), `metrics_whole` and
    `train_s`). Each seed also draws its own validation halves, so the evaluation half differs by seed.
    Errors of any seed propagate (MftError: the folder is removed). Cost: len(seeds) finetune runs.
    """
    seeds = parse_seeds(seeds)
    progress = progress or Progress()
    cells = [Cell(f"seed-{s}", {"seed": s}, config.replace(seed=s)) for s in seeds]
    t0 = time.perf_counter()
    with ResultsFolder(config.out, f"finetune_seeds_{config.method}") as folder:
        runs_dir = folder.path / "runs"
        runs_dir.mkdir()
        progress.phase("seeds", len(cells))
        run_dirs, recs = [], []
        for cell in cells:
            run_dirs.append(run_cell(cell, runs_dir, CellProgress(progress, cell.id)))
            recs.append(load_record(run_dirs[-1]))
            progress.advance(1, seed=cell.values["seed"], **{k: float(v) for k, v in recs[-1]["metrics"].items()})
        progress.done()
        per_seed = [{"seed": s, "path": f"runs/seed-{s}", "metrics": r["metrics"], "metrics_whole": r["metrics_whole"],
                     "metrics_scoring_half": r["metrics_scoring_half"], "train_s": r["train_s"],
                     "steps": r["training"]["steps"], "peak_mem_bytes": r["peak_mem_bytes"]}
                    for s, r in zip(seeds, recs)]

        def summarize(key: str) -> dict[str, Any]:
            names = [m for m in recs[0][key] if all(m in r[key] for r in recs)]
            return {m: _spread([float(r[key][m]) for r in recs], resamples, bootstrap_seed) for m in names}

        first = recs[0]
        record = {
            "kind": "finetune_seeds",
            "config": {**config.to_dict(), "seed": None},
            "seeds": seeds,
            "versions": versions(),
            "machine": machine_info(),
            "method": config.method,
            "task": first["task"],
            "primary_metric": first["primary_metric"],
            "trainable_params": first["trainable_params"],
            "total_params": first["total_params"],
            "trainable_share": first["trainable_share"],
            "metrics": summarize("metrics"),
            "metrics_whole": summarize("metrics_whole"),
            "train_s": _spread([float(r["train_s"]) for r in recs], resamples, bootstrap_seed),
            "bootstrap": {"method": "percentile", "statistic": "mean", "resamples": resamples, "confidence": 0.95,
                          "seed": bootstrap_seed},
            "runs": per_seed,
            "peak_mem_note": "seeds run in one process: peak_mem_bytes is the process's high-water mark",
            "timings": {"total_s": time.perf_counter() - t0},
        }
        folder.write_csv("seeds.csv", [{"seed": p["seed"], **{f"evaluation_{k}": v for k, v in p["metrics"].items()},
                                        **{f"whole_{k}": v for k, v in p["metrics_whole"].items()},
                                        "train_s": p["train_s"], "steps": p["steps"]} for p in per_seed])
        folder.write_json("results.json", record)
        folder.write_text("summary.txt", seeds_summary(record))
        out = folder.commit()
    return SeedsResult(out, record, [out / "runs" / d.name for d in run_dirs])


def seeds_summary(record: dict[str, Any]) -> str:
    """summary.txt of a multi-seed run: mean and bootstrap 95% CI of each metric across seeds."""
    b = record["bootstrap"]
    n = len(record["seeds"])
    lines = [
        f"Fine-tuning ({record['method']}) on {record['task']} over {n} seeds: {', '.join(map(str, record['seeds']))}",
        (f"trainable parameters {record['trainable_params']:,} of {record['total_params']:,} "
         f"({100 * record['trainable_share']:.4f}%)"),
        (f"mean and {100 * b['confidence']:.0f}% CI of the mean across seeds ({b['method']} bootstrap, "
         f"{b['resamples']:,} resamples, seed {b['seed']})"),
        "",
    ]
    for label, key in (("evaluation half", "metrics"), ("whole split", "metrics_whole")):
        for m, s in record[key].items():
            lines.append(f"{label:<16} {m:<10} mean {s['mean']:.4f}  CI [{s['ci_low']:.4f}, {s['ci_high']:.4f}]  "
                         f"std {s['std']:.4f}  per seed " + " ".join(f"{v:.4f}" for v in s["values"]))
    t = record["train_s"]
    lines.append(f"{'train time':<16} {'s':<10} mean {t['mean']:.2f}  CI [{t['ci_low']:.2f}, {t['ci_high']:.2f}]")
    if n < 5:
        lines += ["", f"note: with {n} seeds the bootstrap resamples only {n} values; the interval understates the spread."]
    return "\n".join(lines) + "\n"
