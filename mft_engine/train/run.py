"""`finetune(config)`: one fine-tuning run as a pipeline, writing results/finetune_<method>_<timestamp>/.

The folder holds results.json (config, versions, machine, method, parameter counts, time, memory, stored
size, metrics on the evaluation half, the scoring half and the whole validation split, per-step loss),
summary.txt, training_loss.png, logs/run.log, stored/ (what the method stores, unless --no-save-model),
for learned-mask the untrained controls under `baselines`, and, with --save-at / --save-steps,
checkpoints.json and checkpoints/acc_<target>/ and checkpoints/step_<n>/ folders.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..device import MemoryPeaks, device_summary, peak_rss_bytes, resolve_device
from ..errors import ConfigError
from ..evaluate.validation import ValidationSets
from ..models import load_model
from ..report import ResultsFolder, machine_info, plot_training_loss, versions
from ..report.progress import Progress
from .checkpoints import CheckpointTargets, StepRecord, TargetRecord, save_checkpoint
from .config import FinetuneConfig
from .loop import train_model
from .method import get_method

log = logging.getLogger("mft_engine")

_BRIEF = ("accuracy", "precision", "recall", "f1", "mcc", "pearson", "spearman", "mse", "n")


@dataclass
class FinetuneResult:
    """A finished run: its folder, results.json as a dict, and the trained model (eval mode).

    `metrics` are the task's metrics on the evaluation half; `checkpoints` the target records, then the
    --save-steps records (paths are absolute, inside `out_dir`).
    """

    out_dir: Path
    record: dict[str, Any]
    model: torch.nn.Module
    tokenizer: Any
    checkpoints: list[TargetRecord | StepRecord] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        return self.record["metrics"]

    @property
    def trainable_params(self) -> int:
        return self.record["trainable_params"]


def task_metrics(metrics: dict, names: tuple[str, ...]) -> dict[str, float]:
    """The task's own metrics (e.g. accuracy for SST-2, accuracy and F1 for MRPC) from a full metrics dict."""
    return {k: metrics[k] for k in names if k in metrics}


def finetune(config: FinetuneConfig, progress: Progress | None = None,
             on_folder: Callable[[Path], None] | None = None) -> FinetuneResult:
    """Fine-tune `config.model` on `config.data.task` with `config.method`; write and return the results folder.

    Steps: load train and validation data, load the model (a new head from the seed, or a checkpoint whose
    label count must match the task: ModelError otherwise), tokenize, prepare the method, train (see
    `train_model`), evaluate on both validation halves and the whole split, write the folder. Cost: the
    training steps plus three evaluation passes over the validation split and, with --save-at, the
    scoring-half validations and one checkpoint write per reached target.
    Raises ConfigError / DataError / ModelError on bad input; nothing is left in `config.out` then.
    """
    cfg = config
    progress = progress or Progress()
    method = get_method(cfg.method)
    device = resolve_device(cfg.device)  # before the folder: a device this machine lacks writes nothing
    peaks = MemoryPeaks(device)
    t0 = time.perf_counter()
    with ResultsFolder(cfg.out, f"finetune_{cfg.method}") as folder:
        if on_folder is not None:
            on_folder(folder.path)
        log.info("config: %s", cfg.to_dict())
        splits = cfg.data.load_splits()
        train, val = splits.train, splits.val
        spec = train.task
        if cfg.save_at and train.is_regression:
            raise ConfigError(f"--save-at needs a classification task; {spec.name} is a regression task")
        metric = spec.primary_metric
        lm = load_model(cfg.model, train.num_labels, seed=cfg.data.seed,
                        problem_type="regression" if train.is_regression else None, max_length=cfg.data.max_length)
        log.info("model: %s", lm.source)
        lm.model.to(device)
        base_total = sum(p.numel() for p in lm.model.parameters())

        prepared = cfg.data.prepare(splits, lm.tokenizer)
        rows, train_tokens, val_tokens = prepared.rows, prepared.train_tokens, prepared.val_tokens
        scoring_rows, evaluation_rows = prepared.scoring_rows, prepared.evaluation_rows
        vsets = ValidationSets(val_tokens, list(val.labels), val.num_labels, val.is_regression,
                               scoring_rows, evaluation_rows, cfg.data.eval_batch_tokens)

        # Methods with untrained controls (learned-mask: random and row-wise L1 masks at the same keep
        # ratio) evaluate them on the base model before prepare() changes it.
        baselines = None
        baselines_s = 0.0
        if hasattr(method, "baselines"):
            t = time.perf_counter()
            progress.phase("baselines")
            baselines = method.baselines(lm.model, cfg, lambda m: {
                "metrics": task_metrics(vsets.metrics(m, "evaluation"), spec.metrics),
                "metrics_whole": task_metrics(vsets.metrics(m, "whole"), spec.metrics)})
            progress.done()
            baselines_s = time.perf_counter() - t

        torch.manual_seed(cfg.data.seed)  # LoRA's initialisation
        prepared = method.prepare(lm.model, cfg)
        model = prepared.model
        trainable = method.trainable_params(model)

        targets = (CheckpointTargets(cfg.save_at, cfg.save_tolerance, cfg.dense_eval_until, cfg.save_steps)
                   if cfg.save_at or cfg.save_steps else None)

        def save_reached(records: list[TargetRecord | StepRecord], step: int) -> None:
            evaluation = vsets.metrics(model, "evaluation").get("accuracy")
            merged = method.merged_model(model)
            for r in records:
                r.evaluation_accuracy = None if evaluation is None else float(evaluation)
                r.path = f"checkpoints/{r.folder}"
                save_checkpoint(merged, lm.tokenizer, folder.path / r.path, {
                    **r.info(), "step": step, "scoring_accuracy": r.scoring_accuracy,
                    "evaluation_accuracy": r.evaluation_accuracy, "method": cfg.method, "base_model": lm.source,
                    "task": spec.name, "seed": cfg.data.seed})
                log.info("%s saved at step %d: scoring accuracy %s, evaluation accuracy %s -> %s", r.folder, step,
                         r.scoring_accuracy, r.evaluation_accuracy, r.path)

        with peaks.phase("train"):
            tlog = train_model(prepared, method, cfg, train_tokens, rows, vsets, metric, targets, save_reached,
                               progress)
        peak = peak_rss_bytes()
        peak_cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

        progress.phase("evaluate", 3)
        halves = {}
        with peaks.phase("evaluate"):
            for which in ("evaluation", "scoring", "whole"):
                halves[which] = vsets.metrics(model, which)
                progress.advance(1)
        progress.done()

        stored_bytes = method.stored_bytes(model)
        if cfg.save_model:
            method.save(model, folder.path / "stored")

        record: dict[str, Any] = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "machine": machine_info(),
            "device": device_summary(device, peaks),
            "method": cfg.method,
            # how the method describes this run in the methods table (`mft compare` reads it)
            "method_label": method.describe(cfg.method_options()),
            "method_notes": prepared.notes,
            "gradient_checkpointing": method.gradient_checkpointing,
            "model": {"source": lm.source, "kind": lm.kind},
            "task": spec.name,
            "data": {"train_source": train.source, "validation_source": val.source, "n_train_rows": len(train),
                     "samples_used": len(rows), "n_validation": len(val), "n_scoring_half": len(scoring_rows),
                     "n_evaluation_half": len(evaluation_rows)},
            # total_params counts the base model (the same for every method, so shares compare); LoRA's
            # added adapter and head copy are in method_notes.added_params.
            "trainable_params": trainable,
            "total_params": base_total,
            "trainable_share": trainable / base_total,
            "train_s": tlog.train_s,
            "peak_mem_bytes": peak,
            "peak_mem_kind": "ru_maxrss of this process (high-water mark)",
            "peak_cuda_bytes": peak_cuda,
            "stored_bytes": stored_bytes,
            "primary_metric": metric,
            "metrics": task_metrics(halves["evaluation"], spec.metrics),
            "metrics_scoring_half": task_metrics(halves["scoring"], spec.metrics),
            "metrics_whole": task_metrics(halves["whole"], spec.metrics),
            "evaluation": halves,
            "training": tlog.to_dict(),
            "training_loss": tlog.losses,
            "learning_rate": tlog.lrs,
            "validations": tlog.validations,
            "timings": {"train_s": tlog.train_s, "validation_s": tlog.validation_s,
                        "checkpoint_s": tlog.checkpoint_s},
        }
        if baselines is not None:
            record["baselines"] = baselines
            record["timings"]["baselines_s"] = baselines_s
        if targets is not None:
            record["checkpoints"] = targets.to_dict()
            folder.write_json("checkpoints.json", targets.to_dict())
        plot_training_loss(tlog.losses, folder.path / "training_loss.png",
                           title=f"Training loss per step ({cfg.method}, {spec.name})")
        record["timings"]["total_s"] = time.perf_counter() - t0
        folder.write_json("results.json", record)
        folder.write_text("summary.txt", summary_text(record))
        out = folder.commit()
    records = [*targets.records, *targets.step_records] if targets is not None else []
    for r in records:
        if r.path:
            r.path = str(out / r.path)
    return FinetuneResult(out, record, model, lm.tokenizer, records)


def _line(label: str, m: dict) -> str:
    return f"{label:<16} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items())


def precision_lines(record: dict[str, Any]) -> list[str]:
    """How the numbers were held: the trained tensors' dtype and the forward/backward precision, and for a
    quantized base (lora8, qlora) its scheme, bits and compute dtype, from `method_notes.quantization`."""
    prec = record["config"].get("precision", "fp32")
    compute = "bf16 autocast" if prec == "bf16" else "fp32"
    q = (record.get("method_notes") or {}).get("quantization")
    if not q:
        return [f"precision: fp32 weights, forward/backward {compute}"]
    layers = q.get("quantized_linear_layers")
    base = f"{q.get('bits', '?')}-bit {q.get('scheme', 'quantized')}"
    qcompute = f", compute dtype {q['compute_dtype']}" if q.get("compute_dtype") else ""
    threshold = f", outlier threshold {q['outlier_threshold']:g}" if isinstance(q.get("outlier_threshold"), (int, float)) else ""
    return [f"quantization: base {base}{qcompute}{threshold}"
            + (f", {layers} linear layers quantized" if layers is not None else "")
            + (f" (kept unquantized: {', '.join(q['skip_modules'])})" if q.get("skip_modules") else ""),
            f"precision: adapters and head fp32, forward/backward {compute} over the quantized base"]


def summary_text(record: dict[str, Any]) -> str:
    """summary.txt: the run's headline figures, each also in results.json."""
    c = record["config"]
    lines = [
        f"Fine-tuning ({record['method']}) on {record['task']}",
        f"model {record['model']['source']}  data {record['data']['train_source']}",
        f"machine {record['machine']['cpu']}  threads {record['machine']['torch_threads']}",
        f"samples {record['data']['samples_used']}  steps {record['training']['steps']}  batch {c['batch_size']}  "
        f"lr {c['lr']:g}  seed {c['seed']}"
        + ("  (stopped early)" if record["training"]["stopped_early"] else "")
        + ("  (stopped once every checkpoint was saved)" if record["training"].get("stopped_when_saved") else ""),
        *precision_lines(record),
        "",
        (f"trainable parameters {record['trainable_params']:,} of {record['total_params']:,} "
         f"({100 * record['trainable_share']:.4f}%)"),
        f"train time           {record['train_s']:.2f} s",
        f"peak memory (RSS)    {record['peak_mem_bytes'] / 2**20:.1f} MiB",
        f"stored               {record['stored_bytes']:,} bytes",
        f"gradient checkpoint. {'on' if record['gradient_checkpointing'] else 'off'}",
        "",
        _line("evaluation half", record["metrics"]) + f"  (n={record['data']['n_evaluation_half']})",
        _line("scoring half", record["metrics_scoring_half"]) + f"  (n={record['data']['n_scoring_half']})",
        _line("whole split", record["metrics_whole"]) + f"  (n={record['data']['n_validation']})",
    ]
    if "baselines" in record:
        lines += ["", f"untrained controls at keep ratio {c.get('keep_ratio')} (evaluation half):"]
        for kind, b in record["baselines"].items():
            lines.append(_line(f"  {kind}", b["metrics"]) + f"  (kept {b['keep_ratio']:.4f})")
    if "checkpoints" in record:
        lines += ["", "checkpoints at target accuracy (scoring half):"]
        for r in record["checkpoints"]["targets"]:
            if r["reached"]:
                lines.append(f"  {r['target']:<6g} step {r['step']:<6} scoring {r['scoring_accuracy']:.4f}  "
                             f"evaluation {r['evaluation_accuracy']:.4f}  {r['path']}")
            else:
                lines.append(f"  {r['target']:<6g} not reached ({r['note']})")
        for r in record["checkpoints"].get("steps", []):
            if r["saved"]:
                acc = "" if r["scoring_accuracy"] is None else (f"scoring {r['scoring_accuracy']:.4f}  evaluation "
                                                                f"{r['evaluation_accuracy']:.4f}  ")
                lines.append(f"  step {r['step']:<6} {acc}{r['path']}")
            else:
                lines.append(f"  step {r['step']:<6} not saved ({r['note']})")
    return "\n".join(lines) + "\n"
