"""Few-shot scaling curves: the metric after fine-tuning on k = 16, 32, 64, … rows (up to --max-k, and the
whole pool), over one or more seeds.

Per seed the pool is put in one seeded class-balanced order (`balanced_order`) and each run trains on its
first k rows, so the subsets are nested (the k = 32 rows contain the k = 16 rows) and hold equal numbers of
each class while every class has rows left. Each run starts from a fresh base model whose head comes from
the run's seed; k = 0 is the untrained model (zero-shot). With --epochs, small k take few steps; with
--max-steps every k takes the same number of steps. Nothing is chosen on validation data: the metrics are
those of the evaluation half, with the whole split beside them. Writes results/few_shot_<timestamp>/:
results.json, few_shot.csv (one row per run), curve.csv (one row per k: mean, min, max, bootstrap 95% CI
across seeds), summary.txt, scaling_curve.png, logs/run.log.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SEED_MAX, check_int_range, help_field
from ..errors import ConfigError
from ..evaluate.bootstrap import bootstrap_ci
from ..report import ResultsFolder
from ..report.plots import pyplot
from ..report.progress import Progress
from .trials import (
    Bench,
    StudyConfig,
    StudyOutput,
    Timer,
    base_record,
    flat_metrics,
    halves_metrics,
    mean_and_range,
    parse_int_list,
    run_trial,
    table_text,
    write_table,
)

log = logging.getLogger("mft_engine")

#: bootstrap resamples of the per-k CI (few values per k: the CI is a rough guide, see bootstrap.py)
RESAMPLES = 2000


@dataclass
class FewShotConfig(StudyConfig):
    """`mft study few-shot`: fine-tune on k rows for k = min-k, 2·min-k, … up to max-k (and the whole pool)."""

    ks: str | None = help_field("explicit k values, comma-separated (overrides --min-k / --max-k)", None)
    min_k: int = help_field("smallest k; k doubles from it", 16)
    max_k: int | None = help_field("largest k of the doubling (default: up to the pool)", None)
    include_full: bool = help_field("also train on the whole pool", True)
    seeds: str | None = help_field("seeds, one run per seed and k (comma-separated; default: --seed)", None)
    balanced: bool = help_field("class-balanced subsets (else a seeded random order)", True)
    zero_shot: bool = help_field("evaluate the untrained model as k = 0", True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ks is not None:
            ks = parse_int_list("--ks", self.ks)
            if not ks or min(ks) < 1:
                raise ConfigError(f"--ks {self.ks!r} must list integers >= 1")
            self.ks = ",".join(str(k) for k in sorted(ks))
        if self.min_k < 1:
            raise ConfigError(f"--min-k {self.min_k} must be >= 1")
        if self.max_k is not None and self.max_k < self.min_k:
            raise ConfigError(f"--max-k {self.max_k} must be >= --min-k {self.min_k}")
        if self.seeds is not None:
            seeds = parse_int_list("--seeds", self.seeds)
            if not seeds:
                raise ConfigError("--seeds is empty; expected integers such as 1,2,3")
            for s in seeds:
                check_int_range("--seeds", s, 0, SEED_MAX)
            self.seeds = ",".join(str(s) for s in seeds)

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",")] if self.seeds else [self.data.seed]

    def k_values(self, pool: int) -> list[int]:
        """The k of each run for a pool of `pool` rows, ascending. ConfigError when an explicit k exceeds it."""
        if self.ks is not None:
            ks = [int(k) for k in self.ks.split(",")]
            if ks[-1] > pool:
                raise ConfigError(f"--ks {ks[-1]} exceeds the pool of {pool} rows (--samples)")
        else:
            top = pool if self.max_k is None else min(self.max_k, pool)
            ks, k = [], self.min_k
            while k <= top:
                ks.append(k)
                k *= 2
            if not ks:
                raise ConfigError(f"--min-k {self.min_k} exceeds the pool of {pool} rows (--samples)")
        if self.include_full and pool not in ks:
            ks.append(pool)
        return sorted(set(ks))


def balanced_order(labels: Sequence, seed: int, regression: bool = False) -> list[int]:
    """A seeded order of positions 0..n-1 whose every prefix is class-balanced while classes last.

    Each class's positions are permuted with numpy.random.default_rng(seed); then rounds take one position
    from each class that has rows left, in a seeded order per round. In a prefix of length k, the counts of
    the classes not yet exhausted differ by at most one. Regression (or a single class): a seeded
    permutation. Cost: O(n).
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    if regression:
        return rng.permutation(n).tolist()
    groups: dict[Any, list[int]] = {}
    for pos, y in enumerate(labels):
        groups.setdefault(y, []).append(pos)
    queues = {c: [groups[c][i] for i in rng.permutation(len(groups[c]))] for c in sorted(groups)}
    heads = dict.fromkeys(queues, 0)
    order: list[int] = []
    while len(order) < n:
        active = [c for c in queues if heads[c] < len(queues[c])]
        for i in rng.permutation(len(active)):
            c = active[i]
            order.append(int(queues[c][heads[c]]))
            heads[c] += 1
    return order


def run_few_shot(cfg: FewShotConfig, progress: Progress | None = None) -> StudyOutput:
    """One fine-tune per (seed, k) on the first k rows of the seed's balanced order; write the results folder.

    Cost: Σ over seeds and k of the training steps (with --epochs, proportional to Σk), plus two validation
    passes per run.
    """
    progress = progress or Progress()
    timer = Timer()
    with ResultsFolder(cfg.out, "few_shot") as folder:
        log.info("config: %s", cfg.to_dict())
        with timer("load"):
            bench = Bench.of(cfg)
        pool = len(bench.train)
        ks = cfg.k_values(pool)
        runs: list[dict[str, Any]] = []
        for seed in cfg.seed_list:
            order = (balanced_order(bench.train.labels, seed, bench.spec.is_regression) if cfg.balanced
                     else np.random.default_rng(seed).permutation(pool).tolist())
            ft = cfg.finetune_config(seed=seed)
            if cfg.zero_shot:
                with timer("evaluate"):
                    metrics = halves_metrics(bench, bench.base(seed))
                runs.append({"k": 0, "seed": seed, "steps": 0, "train_s": 0.0, **_counts(bench, []),
                             **flat_metrics(metrics)})
            for k in ks:
                rows = order[:k]
                with timer("train"):
                    trial = run_trial(bench, ft, rows, progress=progress)
                with timer("evaluate"):
                    metrics = halves_metrics(bench, trial.model)
                runs.append({"k": k, "seed": seed, "steps": trial.log.steps, "train_s": trial.log.train_s,
                             **_counts(bench, rows), **flat_metrics(metrics)})
                log.info("seed %d k %d: %s", seed, k, metrics["evaluation"])

        metric = bench.spec.primary_metric
        curve = _curve(runs, bench.spec.metrics, cfg.data.seed)
        record = base_record(cfg, "few-shot", bench, timer.total())
        record.update(ks=ks, seeds=cfg.seed_list, runs=runs, curve=curve)
        write_table(folder, "few_shot.csv", runs)
        write_table(folder, "curve.csv", curve)
        _plot(runs, curve, metric, pool, folder.path / "scaling_curve.png")
        folder.write_text("summary.txt", _summary(record, metric))
        folder.write_json("results.json", record)
        out = folder.commit()
    return StudyOutput(out, record, runs)


def _counts(bench: Bench, rows: Sequence[int]) -> dict[str, int]:
    if bench.spec.is_regression:
        return {}
    counts = np.bincount([bench.train.labels[r] for r in rows], minlength=bench.spec.num_labels)
    return {f"n_label_{i}": int(c) for i, c in enumerate(counts)}


def _curve(runs: list[dict[str, Any]], metrics: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """One row per k: for each metric (evaluation half and whole split) the mean, min, max over seeds and,
    with two or more seeds, a percentile-bootstrap 95% CI of the mean."""
    out = []
    for k in sorted({r["k"] for r in runs}):
        rows = [r for r in runs if r["k"] == k]
        row: dict[str, Any] = {"k": k, "n_seeds": len(rows)}
        for name in [*metrics, *(f"{m}_whole" for m in metrics)]:
            values = [r[name] for r in rows if name in r]
            if not values:
                continue
            s = mean_and_range(values)
            row.update({f"{name}_mean": s["mean"], f"{name}_min": s["min"], f"{name}_max": s["max"]})
            if len(values) > 1:
                ci = bootstrap_ci(values, resamples=RESAMPLES, seed=seed)
                row.update({f"{name}_ci_low": ci.low, f"{name}_ci_high": ci.high})
        out.append(row)
    return out


def _summary(record: dict[str, Any], metric: str) -> str:
    c, d = record["config"], record["data"]
    cols = ["k", "n_seeds", f"{metric}_mean", f"{metric}_min", f"{metric}_max", f"{metric}_whole_mean"]
    if any(f"{metric}_ci_low" in r for r in record["curve"]):
        cols[5:5] = [f"{metric}_ci_low", f"{metric}_ci_high"]
    steps = ("--max-steps " + str(c["max_steps"])) if c["max_steps"] else f"{c['epochs']} epoch(s)"
    lines = [
        f"Few-shot scaling on {d['task']} ({c['method']}, model {d['model']})",
        (f"pool {d['pool']} of {d['n_train_rows']} training rows; k = {', '.join(map(str, record['ks']))}; "
        f"seeds {record['seeds']}; {steps} per run; "
        f"{'class-balanced nested' if c['balanced'] else 'random nested'} subsets"),
        f"metrics: evaluation half (n={d['n_evaluation_half']}); *_whole: whole split (n={d['n_validation']})",
        "",
        table_text(record["curve"], cols),
        "",
        "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record["timings"].items()),
    ]
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict[str, Any]], curve: list[dict[str, Any]], metric: str, pool: int, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pts = [r for r in curve if r["k"] > 0]
    if pts:
        ks = [r["k"] for r in pts]
        mean = np.array([r[f"{metric}_mean"] for r in pts])
        low = np.array([r.get(f"{metric}_ci_low", r[f"{metric}_min"]) for r in pts])
        high = np.array([r.get(f"{metric}_ci_high", r[f"{metric}_max"]) for r in pts])
        ax.plot(ks, mean, marker="o", label=f"{metric}, mean over seeds (evaluation half)")
        ax.fill_between(ks, low, high, alpha=0.2, label="95% CI (or min–max)")
        seeds = [r for r in runs if r["k"] > 0]
        ax.scatter([r["k"] for r in seeds], [r[metric] for r in seeds], s=10, color="black", alpha=0.5,
                   label="single runs")
        ax.plot(ks, [r[f"{metric}_whole_mean"] for r in pts], ls=":", marker=".", label="whole split, mean")
        ax.set_xscale("log", base=2)
        ax.axvline(pool, color="grey", lw=0.8, ls="--")
    zero = [r for r in curve if r["k"] == 0]
    if zero:
        ax.axhline(zero[0][f"{metric}_mean"], color="red", ls="--", lw=1, label="zero-shot (k = 0)")
    ax.set_xlabel("training rows k (log scale; dashed: the whole pool)")
    ax.set_ylabel(metric)
    ax.set_title(f"Few-shot scaling: {metric} vs k")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
