"""Transfer of LoRA adapters from a source task (SST-2) to a target task (MRPC), per adapter placement, and
the SVD of every LoRA update.

For each placement (attn-qkv, attn-full, ffn-only, full):
  1. source: LoRA (adapter + head) trained on the source task from the base model;
  2. transfer: the source adapter merged into the base weights and frozen with the whole backbone, a new
     head (initialised from the seed, as the scratch run's) trained on the target task;
  3. scratch: LoRA (adapter + head) trained on the target task from the same base model.
Transfer and scratch train on the same target rows with the same steps; their metrics (evaluation half
and whole split of the target's validation split) and their learning curves (the evaluation half at
--curve-points steps, reported, not used to choose anything) are compared.

SVD: for every LoRA module of the source and the scratch adapters, ΔW = (α/r)·B·A (svd.py): singular
values, ‖ΔW‖_F, ‖ΔW‖₂, stable rank ‖ΔW‖²_F / ‖ΔW‖²₂ and effective rank. Across placements, the mean ranks
of the source adapter are set beside the transfer gain (transfer − scratch); with few placements the
correlation is descriptive only.

Writes results/transfer_<timestamp>/: results.json, transfer.csv (one row per placement), svd_modules.csv
(one row per LoRA module), curves.csv, summary.txt, transfer.png, curves.png, rank_vs_transfer.png,
svd_<placement>.png, logs/run.log.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import help_field
from ..errors import ConfigError
from ..report import ResultsFolder
from ..report.plots import pyplot
from ..report.progress import Progress
from .svd import svd_rows
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


@dataclass
class TransferConfig(StudyConfig):
    """`mft study transfer`: LoRA on --task (source), then frozen adapter + new head on --target-task vs LoRA
    from scratch on it, per placement; SVD of every LoRA update."""

    #: fields without a CLI flag: the study trains LoRA at each of --placements
    HIDDEN_FLAGS: ClassVar[tuple[str, ...]] = ("method", "lora_placement")

    method: str = help_field("fine-tuning method (the transfer study is LoRA's: only lora)", "lora")
    target_task: str = help_field("target task id (or a local file/folder)", "mrpc")
    target_data_dir: str | None = help_field("GLUE root or task folder of the target (default: --data-dir)", None)
    target_samples: int | None = help_field("training rows of the target task (default: all)", None)
    placements: str = help_field("LoRA placements compared: comma-separated attn-qkv, attn-full, ffn-only, full "
                                 "(or all)", "all")
    head_lr: float | None = help_field("learning rate of the transfer run's new head (default: --lr)", None)
    curve_points: int = help_field("evaluation-half validations during each target run, for the learning curves "
                                   "(0: none)", 5)

    def __post_init__(self) -> None:
        from ..train.lora import PLACEMENTS

        if str(self.method).strip().lower() != "lora":
            raise ConfigError(f"--method {self.method!r}: the transfer study trains LoRA adapters; use lora")
        super().__post_init__()
        self.placements = ",".join(parse_names("--placements", self.placements, tuple(PLACEMENTS)))
        if self.target_samples is not None and self.target_samples < 1:
            raise ConfigError(f"--target-samples {self.target_samples} must be >= 1")
        if self.head_lr is not None and not (np.isfinite(self.head_lr) and self.head_lr > 0):
            raise ConfigError(f"--head-lr {self.head_lr} must be a finite number > 0")
        if self.curve_points < 0:
            raise ConfigError(f"--curve-points {self.curve_points} must be >= 0")

    @property
    def placement_list(self) -> list[str]:
        return self.placements.split(",")


class _CurveProgress(Progress):
    """Passes progress through, and validates on the evaluation half every `every` steps (and at step 0)
    to record a learning curve; the time spent validating is kept apart from the training time."""

    def __init__(self, inner: Progress, every: int, evaluate):
        self.inner, self.every, self.evaluate = inner, every, evaluate
        self.step, self.points, self.seconds = 0, [], 0.0

    def _point(self) -> None:
        t = time.perf_counter()
        self.points.append({"step": self.step, **self.evaluate()})
        self.seconds += time.perf_counter() - t

    def phase(self, name: str, total: int | None = None) -> None:
        self.inner.phase(name, total)
        if self.every:
            self._point()

    def advance(self, n: int = 1, **info: Any) -> None:
        self.inner.advance(n, **info)
        self.step += n
        if self.every and self.step % self.every == 0:
            self._point()

    def done(self) -> None:
        self.inner.done()


def _head_only(model: torch.nn.Module):
    """Prepared model training only the classifier head (everything else, the merged adapter included, frozen)."""
    from ..train import Method, Prepared
    from ..train.method import freeze_all

    head = getattr(model, "classifier", None)
    if head is None:
        raise ConfigError("the transfer study needs a model with a `classifier` head (BERT-style)")
    freeze_all(model)
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    return Prepared(model, [{"name": "head", "params": params}],
                    notes={"trained": "classifier head only; backbone and merged source adapter frozen"}), Method()


def _with_new_head(merged: torch.nn.Module, fresh: torch.nn.Module) -> torch.nn.Module:
    """`merged` (source adapter merged, source head) with the head, label count and loss type of `fresh`."""
    import copy

    merged.classifier = copy.deepcopy(fresh.classifier)
    merged.num_labels = fresh.num_labels
    merged.config.num_labels = fresh.config.num_labels
    merged.config.problem_type = fresh.config.problem_type
    return merged


def run_transfer(cfg: TransferConfig, progress: Progress | None = None) -> StudyOutput:
    """Source LoRA, transfer (frozen adapter + new head) and scratch LoRA per placement; SVD of the adapters.

    Cost per placement: three training runs (source, transfer, scratch), 2 + 2 validation passes, and
    --curve-points + 1 evaluation-half passes per target run; SVD: two thin QRs per LoRA module.
    """
    from ..train import get_method
    from ..train.loop import plan_steps

    progress = progress or Progress()
    timer = Timer()
    with ResultsFolder(cfg.out, "transfer") as folder:
        log.info("config: %s", cfg.to_dict())
        with timer("load"):
            source = Bench.of(cfg)
            target = Bench(cfg, cfg.data.elsewhere(cfg.target_task, cfg.target_data_dir or cfg.data.data_dir,
                                                     cfg.target_samples))
        if source.spec.name == target.spec.name and cfg.target_data_dir is None:
            log.warning("source and target are the same task (%s)", source.spec.name)
        n_src, n_tgt = len(source.train), len(target.train)
        lora = get_method("lora")
        table: list[dict[str, Any]] = []
        svd_table: list[dict[str, Any]] = []
        curves: list[dict[str, Any]] = []
        trials: dict[str, Any] = {}

        for placement in cfg.placement_list:
            ft = cfg.finetune_config(lora_placement=placement)
            with timer("train_source"):
                src = run_trial(source, ft, range(n_src), progress=progress)
            src_metrics = halves_metrics(source, src.model)
            with timer("svd"):
                src_svd = [{"adapter": "source", "placement": placement, **r} for r in svd_rows(src.model)]

            total = plan_steps(n_tgt, ft.batch_size, ft.epochs, ft.max_steps)
            every = max(1, total // cfg.curve_points) if cfg.curve_points else 0
            runs: dict[str, dict[str, Any]] = {}
            for kind in ("transfer", "scratch"):
                holder: dict[str, torch.nn.Module] = {}
                if kind == "transfer":
                    model = _with_new_head(lora.merged_model(src.model), target.base(cfg.data.seed))
                    ft_run = cfg.finetune_config(lora_placement=placement, lr=cfg.head_lr or ft.lr)

                    def prepare(m, holder=holder):
                        prepared, method = _head_only(m)
                        holder["model"] = prepared.model
                        return prepared, method
                else:
                    model, ft_run = target.base(cfg.data.seed), ft

                    def prepare(m, holder=holder, ft_run=ft_run):
                        prepared = lora.prepare(m, ft_run)
                        holder["model"] = prepared.model
                        return prepared, lora
                curve = _CurveProgress(progress, every,
                                       lambda holder=holder: target.vsets.metrics(holder["model"], "evaluation"))
                with timer(f"train_{kind}"):
                    trial = run_trial(target, ft_run, range(n_tgt), model=model, progress=curve, prepare=prepare)
                trial.log.train_s -= curve.seconds  # the curve's validations are not training time
                metrics = halves_metrics(target, trial.model)
                rec = trial_record(trial)
                rec.update(metrics=metrics, curve_s=curve.seconds)
                runs[kind] = {"trial": trial, "record": rec, "metrics": metrics}
                for p in curve.points:
                    curves.append({"placement": placement, "run": kind, "step": p["step"],
                                   **{m: float(p[m]) for m in target.spec.metrics if m in p}})
            with timer("svd"):
                scratch_svd = [{"adapter": "target-scratch", "placement": placement, **r}
                               for r in svd_rows(runs["scratch"]["trial"].model)]
            svd_table += src_svd + scratch_svd
            trials[placement] = {"source": {**trial_record(src), "metrics": src_metrics},
                                 "transfer": runs["transfer"]["record"], "scratch": runs["scratch"]["record"],
                                 "lora_modules": src.notes.get("lora_modules", [])}
            table.append(_placement_row(placement, source, target, src, src_metrics, runs, src_svd, scratch_svd,
                                        [c for c in curves if c["placement"] == placement]))
            log.info("%s: transfer %s, scratch %s", placement, runs["transfer"]["metrics"]["evaluation"],
                     runs["scratch"]["metrics"]["evaluation"])
            del src, runs

        metric = target.spec.primary_metric
        record = base_record(cfg, "transfer", source, timer.total())
        record.update(target_data=target.data_record(), source_metric=source.spec.primary_metric,
                      target_metric=metric, table=table, trials=trials, curves=curves,
                      svd=svd_table, rank_vs_gain=_rank_vs_gain(table))
        write_table(folder, "transfer.csv", table)
        write_table(folder, "svd_modules.csv", [{k: v for k, v in r.items() if k != "singular_values"}
                                                for r in svd_table])
        write_table(folder, "curves.csv", curves)
        _plot_transfer(table, metric, folder.path / "transfer.png")
        _plot_curves(curves, metric, folder.path / "curves.png")
        _plot_rank_vs_gain(table, folder.path / "rank_vs_transfer.png")
        for placement in cfg.placement_list:
            _plot_svd([r for r in svd_table if r["placement"] == placement], placement,
                      folder.path / f"svd_{placement}.png")
        folder.write_text("summary.txt", _summary(record))
        folder.write_json("results.json", record)
        out = folder.commit()
    return StudyOutput(out, record, table)


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else 0.0


def _placement_row(placement, source, target, src, src_metrics, runs, src_svd, scratch_svd, curves) -> dict:
    sm, tm = source.spec.primary_metric, target.spec.primary_metric
    row: dict[str, Any] = {"placement": placement, "lora_modules": len(src_svd),
                           f"source_{sm}": src_metrics["evaluation"][sm]}
    for kind in ("transfer", "scratch"):
        row.update({f"{kind}_{k}": v for k, v in flat_metrics(runs[kind]["metrics"]).items()})
        row[f"{kind}_trainable_params"] = runs[kind]["trial"].trainable_params
        early = [c for c in curves if c["run"] == kind and c["step"] > 0]
        row[f"{kind}_early_{tm}"] = early[0][tm] if early else None
        row[f"{kind}_train_s"] = runs[kind]["trial"].log.train_s
    row[f"gain_{tm}"] = row[f"transfer_{tm}"] - row[f"scratch_{tm}"]
    row["source_stable_rank"] = _mean(src_svd, "stable_rank")
    row["source_effective_rank"] = _mean(src_svd, "effective_rank")
    row["scratch_stable_rank"] = _mean(scratch_svd, "stable_rank")
    row["scratch_effective_rank"] = _mean(scratch_svd, "effective_rank")
    return row


def _rank_vs_gain(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Pearson correlation across placements of the source adapter's mean ranks with the transfer gain."""
    gain_key = next(k for k in table[0] if k.startswith("gain_"))
    gains = np.array([r[gain_key] for r in table], dtype=np.float64)
    out: dict[str, Any] = {"n_placements": len(table), "gain": gain_key,
                           "note": "descriptive only: one value per placement"}
    for key in ("source_stable_rank", "source_effective_rank"):
        x = np.array([r[key] for r in table], dtype=np.float64)
        ok = len(table) >= 3 and np.std(x) > 0 and np.std(gains) > 0
        out[f"pearson_{key}"] = float(np.corrcoef(x, gains)[0, 1]) if ok else None
    return out


def _summary(record: dict[str, Any]) -> str:
    c, d, t = record["config"], record["data"], record["target_data"]
    tm = record["target_metric"]
    cols = ["placement", "lora_modules", f"source_{record['source_metric']}", f"transfer_{tm}", f"scratch_{tm}",
            f"gain_{tm}", f"transfer_early_{tm}", f"scratch_early_{tm}", "source_stable_rank",
            "source_effective_rank", "scratch_stable_rank"]
    whole = ["placement", f"transfer_{tm}_whole", f"scratch_{tm}_whole", "transfer_trainable_params",
             "scratch_trainable_params"]
    steps = ("--max-steps " + str(c["max_steps"])) if c["max_steps"] else f"{c['epochs']} epoch(s)"
    rg = record["rank_vs_gain"]
    lines = [
        f"LoRA transfer {d['task']} -> {t['task']} (model {d['model']}, rank {c['lora_rank']}, alpha {c['lora_alpha']:g})",
        f"source pool {d['pool']} rows, target pool {t['pool']} rows, {steps} per run, seed {c['seed']}",
        (f"metrics: target evaluation half (n={t['n_evaluation_half']}); *_whole: whole split "
        f"(n={t['n_validation']}); early = first curve point after step 0"),
        "",
        table_text(record["table"], cols),
        "",
        table_text(record["table"], whole),
        "",
        ("source adapter rank vs transfer gain across placements (Pearson; None below 3 placements): "
        f"stable {rg['pearson_source_stable_rank']}, effective {rg['pearson_source_effective_rank']}"),
        "",
        "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record["timings"].items()),
    ]
    return "\n".join(lines) + "\n"


def _plot_transfer(table: list[dict[str, Any]], metric: str, path) -> None:
    plt = pyplot()
    names = [r["placement"] for r in table]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.bar(x - 0.2, [r[f"transfer_{metric}"] for r in table], width=0.4, label="transfer (frozen adapter + head)")
    ax.bar(x + 0.2, [r[f"scratch_{metric}"] for r in table], width=0.4, label="LoRA from scratch")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel(f"{metric} on the target (evaluation half)")
    ax.set_title("Transfer vs scratch per LoRA placement")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_curves(curves: list[dict[str, Any]], metric: str, path) -> None:
    plt = pyplot()
    placements = list(dict.fromkeys(c["placement"] for c in curves)) or ["(none)"]
    fig, axes = plt.subplots(1, len(placements), figsize=(4 * len(placements), 3.8), squeeze=False)
    for ax, placement in zip(axes[0], placements):
        for run, style in (("transfer", "-"), ("scratch", "--")):
            pts = [c for c in curves if c["placement"] == placement and c["run"] == run and metric in c]
            if pts:
                ax.plot([c["step"] for c in pts], [c[metric] for c in pts], style, marker="o", ms=3, label=run)
        ax.set_title(placement)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (evaluation half)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_rank_vs_gain(table: list[dict[str, Any]], path) -> None:
    plt = pyplot()
    gain_key = next(k for k in table[0] if k.startswith("gain_"))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, marker in (("source_stable_rank", "o"), ("source_effective_rank", "s")):
        ax.scatter([r[key] for r in table], [r[gain_key] for r in table], marker=marker, label=key.replace("_", " "))
        for r in table:
            ax.annotate(r["placement"], (r[key], r[gain_key]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("mean rank of the source adapter's ΔW")
    ax.set_ylabel(f"transfer − scratch ({gain_key[5:]})")
    ax.set_title("Adapter rank vs transfer gain")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_svd(rows: list[dict[str, Any]], placement: str, path) -> None:
    plt = pyplot()
    n_src = sum(r["adapter"] == "source" for r in rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(12.0, 6 + 0.3 * n_src), 4.5))
    for r in rows:
        if r["adapter"] != "source":
            continue
        s = np.asarray(r["singular_values"], dtype=np.float64)
        if s.size and s[0] > 0:
            ax1.plot(range(1, s.size + 1), s / s[0], marker=".", lw=0.8, label=f"L{r['layer']} {r['kind']}")
    ax1.xaxis.get_major_locator().set_params(integer=True)
    ax1.set_xlabel("index i")
    ax1.set_ylabel("σᵢ / σ₁")
    ax1.set_title(f"{placement}: singular values of the source ΔW")
    ax1.grid(alpha=0.3)
    if len(rows) <= 24:
        ax1.legend(fontsize=6, ncol=2)
    for adapter, offset in (("source", -0.2), ("target-scratch", 0.2)):
        sel = [r for r in rows if r["adapter"] == adapter]
        x = np.arange(len(sel))
        ax2.bar(x + offset, [r["stable_rank"] for r in sel], width=0.4, label=f"{adapter}: stable rank")
        ax2.scatter(x + offset, [r["effective_rank"] for r in sel], marker="_", s=120, color="black")
    src = [r for r in rows if r["adapter"] == "source"]
    ax2.set_xticks(range(len(src)))
    ax2.set_xticklabels([f"L{r['layer']} {r['kind']}" for r in src], rotation=70, fontsize=7)
    ax2.set_ylabel("rank (bars: stable; black ticks: effective)")
    ax2.set_title(f"{placement}: stable and effective rank per module")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
