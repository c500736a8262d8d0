"""Data-centric sampling: does choosing training rows by difficulty beat a random subset of the same size?

A teacher (a given checkpoint, or one fine-tuned here on the whole pool) scores every pool row by its
per-sample loss in eval mode. Then one subset per strategy, all of the same size and the same class
proportions as the pool (difficulty is ranked within each class, so no strategy changes the label mix):

    uniform  a seeded random draw
    easy     the lowest-loss rows
    hard     the highest-loss rows
    middle   the rows around the median loss
    mixed    a seeded blend: --mix shares (easy, middle, hard) drawn from the lowest, middle and highest
             third of each class (default 0.15, 0.70, 0.15: mostly medium rows, a few of both ends)

Each subset fine-tunes a fresh copy of the same base model with the same settings; the table reports
the metrics on the evaluation half and the whole validation split (nothing is chosen on validation data).
Writes results/data_centric_<timestamp>/: results.json, strategies.csv, sample_losses.csv, summary.txt,
strategies.png, loss_distribution.png, logs/run.log.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import help_field
from ..data import eval_batches, tokenize_split
from ..errors import ConfigError
from ..models import load_model
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
    parse_names,
    run_trial,
    table_text,
    trial_record,
    write_table,
)

log = logging.getLogger("mft_engine")

STRATEGIES = ("uniform", "easy", "hard", "middle", "mixed")


@dataclass
class DataCentricConfig(StudyConfig):
    """`mft study data-centric`: a teacher's per-sample loss, then equal-size subsets by strategy."""

    teacher: str | None = help_field("checkpoint folder of a fine-tuned teacher (same labels as the task); default: "
                                     "fine-tune one on the whole pool with --method", None)
    strategies: str = help_field("subsets to train: comma-separated uniform, easy, hard, middle, mixed (or all)", "all")
    subset_size: int | None = help_field("rows in each subset (default: a quarter of the pool)", None)
    mix: str = help_field("mixed strategy: shares drawn from the easy, middle and hard third of each class", "0.15,0.7,0.15")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.strategies = ",".join(parse_names("--strategies", self.strategies, STRATEGIES))
        if self.subset_size is not None and self.subset_size < 1:
            raise ConfigError(f"--subset-size {self.subset_size} must be >= 1")
        parse_mix(self.mix)

    @property
    def strategy_list(self) -> list[str]:
        return self.strategies.split(",")


def parse_mix(value: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.15,0.7,0.15' → (easy, middle, hard) shares normalised to sum 1; ConfigError for a bad mix."""
    try:
        parts = ([float(v) for v in value.split(",") if v.strip()] if isinstance(value, str)
                 else [float(v) for v in value])
    except (TypeError, ValueError):
        raise ConfigError(f"--mix {value!r} is not three comma-separated numbers") from None
    if len(parts) != 3 or any(not np.isfinite(p) or p < 0 for p in parts) or sum(parts) <= 0:
        raise ConfigError(f"--mix {value!r} must be three shares >= 0 (easy, middle, hard) with a positive sum")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer `total` in proportion to `weights` (≥ 0, positive sum): floors, then the units
    left go to the largest fractional parts (ties: lower index). The parts sum to `total` exactly."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    left = total - int(parts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return [int(p) for p in parts]


def select_by_difficulty(losses: Sequence[float], labels: Sequence, size: int, strategy: str, seed: int = 0,
                         mix: Sequence[float] = (0.15, 0.7, 0.15), regression: bool = False) -> list[int]:
    """Positions (into `losses`) of a `size`-row subset chosen by `strategy`, ascending.

    Rows are grouped by label (one group for regression) and each group gets a share of `size`
    proportional to its size (largest remainder), so every strategy keeps the pool's label mix; within a
    group rows are ranked by (loss, position). uniform draws at random; easy/hard take the lowest/highest
    losses; middle the window centred on the median; mixed splits the ranked group into thirds (easy,
    middle, hard) and draws `mix` shares of the group's quota from each at random, topping up from the
    group's other rows when a third is too small. Random draws use numpy.random.default_rng([seed, k]),
    k the strategy's index, so the same inputs give the same subset. Cost: one sort per group.
    Raises ConfigError for an unknown strategy or size outside [1, len(losses)].
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    loss = np.asarray(losses, dtype=np.float64)
    n = loss.size
    if not 1 <= size <= n:
        raise ConfigError(f"subset size {size} must be in [1, {n}] (the pool's rows)")
    mix = parse_mix(list(mix))
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    keys = [0] * n if regression else list(labels)
    groups: dict[Any, list[int]] = {}
    for pos, k in enumerate(keys):
        groups.setdefault(k, []).append(pos)
    classes = sorted(groups)
    quotas = largest_remainder(size, [len(groups[c]) for c in classes])
    chosen: list[int] = []
    for c, q in zip(classes, quotas):
        if q == 0:
            continue
        ranked = sorted(groups[c], key=lambda p: (loss[p], p))
        m = len(ranked)
        if strategy == "uniform":
            pick = rng.choice(ranked, size=q, replace=False).tolist()
        elif strategy == "easy":
            pick = ranked[:q]
        elif strategy == "hard":
            pick = ranked[m - q:]
        elif strategy == "middle":
            start = (m - q) // 2
            pick = ranked[start:start + q]
        else:
            thirds = [list(t) for t in np.array_split(np.asarray(ranked, dtype=np.int64), 3)]
            pick = []
            for third, want in zip(thirds, largest_remainder(q, mix)):
                take = min(want, len(third))
                if take:
                    pick += rng.choice(third, size=take, replace=False).tolist()
            if len(pick) < q:
                rest = sorted(set(ranked) - set(pick))
                pick += rng.choice(rest, size=q - len(pick), replace=False).tolist()
        chosen += [int(p) for p in pick]
    return sorted(chosen)


@torch.inference_mode()
def per_sample_loss(model: torch.nn.Module, tokens, rows: Sequence[int], labels: Sequence, regression: bool,
                    max_tokens: int = 8192) -> np.ndarray:
    """The loss of each row in eval mode (no dropout): cross-entropy of the label, or the squared error for
    regression. Returns float64 [len(rows)] in `rows` order. Cost: one forward over the rows, token-budget
    batched; the previous train/eval mode is restored."""
    from ..evaluate import predict

    rows = [int(r) for r in rows]
    logits = torch.from_numpy(predict(model, eval_batches(tokens, rows, labels, regression, max_tokens), len(rows)))
    target = [labels[r] for r in rows]
    if regression:
        y = torch.tensor(target, dtype=torch.float32)
        return ((logits[:, 0].double() - y.double()) ** 2).numpy()
    y = torch.tensor(target, dtype=torch.long)
    return torch.nn.functional.cross_entropy(logits.double(), y, reduction="none").numpy()


def run_data_centric(cfg: DataCentricConfig, progress: Progress | None = None) -> StudyOutput:
    """Score the pool with a teacher, fine-tune one subset per strategy, write the results folder.

    Cost: (teacher training over the pool, unless --teacher) + one forward over the pool + one training
    run per strategy + two validation passes per trained model.
    """
    progress = progress or Progress()
    timer = Timer()
    with ResultsFolder(cfg.out, "data_centric") as folder:
        log.info("config: %s", cfg.to_dict())
        with timer("load"):
            bench = Bench.of(cfg)
        pool = len(bench.train)
        size = cfg.subset_size if cfg.subset_size is not None else max(1, pool // 4)
        if size > pool:
            raise ConfigError(f"--subset-size {size} exceeds the pool of {pool} rows (--samples)")
        ft = cfg.finetune_config()
        table: list[dict[str, Any]] = []
        trials: dict[str, Any] = {}

        with timer("teacher"):
            if cfg.teacher:
                lm = load_model(cfg.teacher, bench.spec.num_labels,
                                problem_type="regression" if bench.spec.is_regression else None,
                                max_length=cfg.data.max_length)
                teacher, teacher_source = lm.model.to(bench.device), lm.source
                # the teacher reads the pool through its own tokenizer (it may not be the student's)
                teacher_tokens = tokenize_split(lm.tokenizer, bench.train, None, max_length=cfg.data.max_length)
            else:
                trial = run_trial(bench, ft, range(pool), progress=progress)
                teacher_tokens = bench.train_tokens
                teacher, teacher_source = trial.model, f"fine-tuned here ({cfg.method}, all {pool} pool rows)"
                metrics = halves_metrics(bench, teacher)
                trials["all"] = {**trial_record(trial), "metrics": metrics}
                table.append({"strategy": "all (teacher)", "size": pool, "mean_teacher_loss": None,
                              **_label_counts(bench, list(range(pool))), **flat_metrics(metrics)})
        with timer("score"):
            progress.phase("teacher loss", 1)
            losses = per_sample_loss(teacher, teacher_tokens, range(pool), bench.train.labels,
                                     bench.spec.is_regression, cfg.data.eval_batch_tokens)
            progress.done()
        del teacher

        subsets: dict[str, list[int]] = {}
        for strategy in cfg.strategy_list:
            rows = select_by_difficulty(losses, bench.train.labels, size, strategy, cfg.data.seed, parse_mix(cfg.mix),
                                        bench.spec.is_regression)
            subsets[strategy] = rows
            with timer("train"):
                trial = run_trial(bench, ft, rows, progress=progress)
            with timer("evaluate"):
                metrics = halves_metrics(bench, trial.model)
            trials[strategy] = {**trial_record(trial), "metrics": metrics}
            table.append({"strategy": strategy, "size": len(rows), "mean_teacher_loss": float(losses[rows].mean()),
                          **_label_counts(bench, rows), **flat_metrics(metrics)})
            log.info("%s: %s", strategy, metrics["evaluation"])

        record = base_record(cfg, "data-centric", bench, timer.total())
        record.update(teacher=teacher_source, subset_size=size, mix=list(parse_mix(cfg.mix)), table=table,
                      trials=trials, subsets={k: [bench.train.row_ids[r] for r in v] for k, v in subsets.items()},
                      teacher_loss={"mean": float(losses.mean()), "median": float(np.median(losses)),
                                    "min": float(losses.min()), "max": float(losses.max())})
        write_table(folder, "strategies.csv", table)
        folder.write_csv("sample_losses.csv", _loss_rows(bench, losses, subsets))
        _plot_strategies(table, bench.spec.primary_metric, folder.path / "strategies.png")
        _plot_losses(losses, subsets, folder.path / "loss_distribution.png")
        folder.write_text("summary.txt", _summary(record, bench.spec.primary_metric))
        folder.write_json("results.json", record)
        out = folder.commit()
    return StudyOutput(out, record, table)


def _label_counts(bench: Bench, rows: list[int]) -> dict[str, int]:
    if bench.spec.is_regression:
        return {}
    counts = np.bincount([bench.train.labels[r] for r in rows], minlength=bench.spec.num_labels)
    return {f"n_label_{i}": int(c) for i, c in enumerate(counts)}


def _loss_rows(bench: Bench, losses: np.ndarray, subsets: dict[str, list[int]]) -> list[dict[str, Any]]:
    member = {k: set(v) for k, v in subsets.items()}
    return [{"row_id": bench.train.row_ids[p], "label": bench.train.labels[p], "teacher_loss": float(losses[p]),
             **{f"in_{k}": int(p in s) for k, s in member.items()}} for p in range(len(losses))]


def _summary(record: dict[str, Any], metric: str) -> str:
    c, d = record["config"], record["data"]
    cols = ["strategy", "size", "mean_teacher_loss"] + [k for k in record["table"][-1]
                                                       if k not in ("strategy", "size", "mean_teacher_loss")]
    lines = [
        f"Data-centric sampling on {d['task']} ({c['method']}, model {d['model']})",
        (f"pool {d['pool']} of {d['n_train_rows']} training rows, subsets of {record['subset_size']} rows "
        f"(label mix of the pool), seed {c['seed']}, mixed shares easy/middle/hard {record['mix']}"),
        (f"teacher: {record['teacher']}; per-sample loss mean {record['teacher_loss']['mean']:.4f}, "
        f"median {record['teacher_loss']['median']:.4f}"),
        f"metrics: evaluation half (n={d['n_evaluation_half']}); *_whole: whole split (n={d['n_validation']})",
        "",
        table_text(record["table"], cols),
    ]
    rows = {r["strategy"]: r for r in record["table"]}
    if "uniform" in rows:
        base = rows["uniform"][metric]
        lines += ["", f"{metric} minus uniform (evaluation half): " + ", ".join(
            f"{k} {r[metric] - base:+.4f}" for k, r in rows.items() if k not in ("uniform", "all (teacher)"))]
    lines += ["", "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record["timings"].items())]
    return "\n".join(lines) + "\n"


def _plot_strategies(table: list[dict[str, Any]], metric: str, path) -> None:
    plt = pyplot()
    names = [r["strategy"] for r in table]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r[metric] for r in table], width=0.4, label="evaluation half")
    ax.bar(x + 0.2, [r[f"{metric}_whole"] for r in table], width=0.4, label="whole split", alpha=0.7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel(metric)
    ax.set_title(f"Data-centric subsets ({table[-1]['size']} rows each): {metric}")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_losses(losses: np.ndarray, subsets: dict[str, list[int]], path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.hist(losses, bins=min(50, max(5, losses.size // 4)), color="grey")
    ax1.set_xlabel("teacher per-sample loss")
    ax1.set_ylabel("rows")
    ax1.set_title("Teacher loss over the pool")
    names = list(subsets)
    if names:
        ax2.boxplot([losses[subsets[k]] for k in names])
        ax2.set_xticks(range(1, len(names) + 1))
        ax2.set_xticklabels(names)
    ax2.set_ylabel("teacher loss of the chosen rows")
    ax2.set_title("Loss of each strategy's subset")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
