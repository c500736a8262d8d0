"""What every fine-tuning study shares: its common configuration, one controlled fine-tune ("trial") on
chosen rows or changed texts, the metrics on both validation halves, and the results-folder record.

A study runs many trials that differ in one thing only (the rows, the texts, the adapter's origin), so
each trial starts from the same base model (re-created from the seed, not carried over), trains with
`train_model` under the same FinetuneConfig, and is evaluated on the same validation halves. Studies
choose nothing from validation data, so every reported figure comes from the evaluation half, with the
whole split beside it for comparison with published numbers (DESIGN.md, honest evaluation).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PRECISIONS
from ..data import TaskData, tokenize_split
from ..data.config import DataConfig
from ..errors import ConfigError
from ..evaluate.validation import ValidationSets
from ..fields import FlatConfig, compose, flatten, help_field
from ..device import device_field, device_summary, resolve_device
from ..models import load_model
from ..report import machine_info, versions
from ..report.progress import Progress

#: study fields that are also the training fields of every trial's FinetuneConfig
_FINETUNE_FIELDS = ("method", "model", "epochs", "max_steps", "batch_size", "lr", "precision", "device",
                    "lora_rank", "lora_alpha", "lora_placement", "out")


@dataclass
class StudyConfig(FlatConfig):
    """Fields every study shares: the model, the data, and how each trial fine-tunes.

    Subclasses add the study's own fields. Validation builds the trials' FinetuneConfig once, so a bad
    method, learning rate or placement fails before anything runs, naming the flag.
    """

    model: str = help_field("minilm | bert-base-random | minilm-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm")
    data: DataConfig = compose(DataConfig, help={
        "samples": "training rows in the study's pool (default: all)",
        "sample_order": "first (first N rows) | seeded (N rows drawn with the seed)",
        "seed": "seed of the pool, the subsets, the heads, LoRA init, shuffling and the validation halves"})
    method: str = help_field("fine-tuning method of every trial: full | bitfit | lora | freeze", "full")
    epochs: int = help_field("passes over each trial's training rows (ignored when --max-steps > 0)", 1)
    max_steps: int = help_field("optimizer steps of each trial, overriding --epochs (0: epochs decide)", 0)
    batch_size: int = help_field("training rows per step", 32)
    lr: float | None = help_field("peak learning rate (default: the method's)", None, aliases=("--learning-rate",))
    precision: str = help_field("fp32 | bf16 (bf16 autocast forward/backward, fp32 weights)", "fp32")
    device: str = device_field()
    lora_rank: int = help_field("LoRA rank r (method lora)", 8)
    lora_alpha: float = help_field("LoRA alpha (the update is scaled by alpha / r)", 16.0)
    lora_placement: str = help_field("LoRA layers: attn-qkv | attn-full | ffn-only | full", "attn-qkv")
    out: str = help_field("parent folder of the results folder", "results")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        self.finetune_config()  # validates the training fields (ConfigError naming the flag)

    def finetune_config(self, **overrides: Any):
        """The FinetuneConfig of one trial: this study's data and training fields, nothing chosen on
        validation data (no early stopping, no checkpoints), nothing stored; `overrides` replace flat
        fields (e.g. seed, method). The trial's rows are given to train_model, not drawn from `samples`."""
        from ..train import FinetuneConfig

        fields = {k: getattr(self, k) for k in _FINETUNE_FIELDS}
        fields.update(save_model=False, save_at=[], early_stopping_patience=0)
        # by flat names: the LoRA fields belong to FinetuneConfig's composed method options
        cfg = FinetuneConfig.of(**flatten(self.data), **fields)
        return cfg.replace(**overrides) if overrides else cfg


def parse_int_list(flag: str, value: str | Sequence[int] | None) -> list[int]:
    """'16,32,64' (or a list) → the ints in the given order, duplicates dropped; ConfigError naming `flag`."""
    if value is None or value == "":
        return []
    try:
        items = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else [int(v) for v in value]
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a comma-separated list of integers") from None
    return list(dict.fromkeys(items))


def parse_float_list(flag: str, value: str | Sequence[float] | None) -> list[float]:
    """'0,0.1,0.2' (or a list) → the floats in the given order, duplicates dropped; ConfigError naming `flag`."""
    if value is None or value == "":
        return []
    try:
        items = ([float(v) for v in value.split(",") if v.strip()] if isinstance(value, str)
                 else [float(v) for v in value])
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a comma-separated list of numbers") from None
    return list(dict.fromkeys(items))


def parse_names(flag: str, value: str | Sequence[str], allowed: Sequence[str]) -> list[str]:
    """'a,b' (or a list) → names in order, each one of `allowed` ('all' → every allowed one)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [str(v) for v in value]
    if items == ["all"]:
        return list(allowed)
    if not items:
        raise ConfigError(f"{flag} is empty; expected one or more of {', '.join(allowed)}")
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ConfigError(f"{flag} {bad[0]!r} is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------------ trials


class Bench:
    """One task's data, tokenizer, base models and validation halves, prepared once for many trials.

    `base(seed)` is a fresh copy of the base model whose new head comes from `seed` (models are built
    once per seed and deep-copied, so a checkpoint is read once). `train` holds the pool rows only, in
    pool order; `val` the whole validation split with `vsets` its tokenized halves.
    """

    def __init__(self, cfg: StudyConfig, data: DataConfig | None = None, model: str | None = None):
        data = cfg.data if data is None else data
        self.model_name = model or cfg.model
        self.cfg = cfg
        self.data_config = data
        self.device = resolve_device(cfg.device)
        splits = data.load_splits()
        self.spec = splits.train.task
        self.n_train_rows = len(splits.train)
        self._models: dict[int, Any] = {}
        lm = self._load(data.seed)
        self.tokenizer = lm.tokenizer
        self.model_source = lm.source
        # the pool as its own split: studies index it 0..n-1
        p = data.prepare(splits, self.tokenizer, as_subset=True)
        self.train, self.val, self.train_tokens = p.train, p.val, p.train_tokens
        self.scoring_rows, self.evaluation_rows = p.scoring_rows, p.evaluation_rows
        self.vsets = ValidationSets(p.val_tokens, list(self.val.labels), self.val.num_labels, self.val.is_regression,
                                    self.scoring_rows, self.evaluation_rows, data.eval_batch_tokens)

    @classmethod
    def of(cls, cfg: StudyConfig) -> Bench:
        """The bench of the study's own task, data folder and pool (--task, --data-dir, --samples)."""
        return cls(cfg)

    def _load(self, seed: int):
        if seed not in self._models:
            self._models[seed] = load_model(self.model_name, self.spec.num_labels, seed=seed,
                                            problem_type="regression" if self.spec.is_regression else None,
                                            max_length=self.data_config.max_length)
            self._models[seed].model.to(self.device)
        return self._models[seed]

    def base(self, seed: int) -> torch.nn.Module:
        """A fresh copy of the base model with the head initialised from `seed` (eval mode)."""
        return copy.deepcopy(self._load(seed).model)

    def tokens(self, data: TaskData):
        """`data` tokenized as this bench tokenizes (same tokenizer and max_length)."""
        return tokenize_split(self.tokenizer, data, None, max_length=self.data_config.max_length)

    def validation_sets(self, val: TaskData) -> ValidationSets:
        """ValidationSets over `val` (the validation split, or a changed copy of it) with this bench's halves."""
        return ValidationSets(self.tokens(val), list(val.labels), val.num_labels, val.is_regression,
                              self.scoring_rows, self.evaluation_rows, self.data_config.eval_batch_tokens)

    def data_record(self) -> dict[str, Any]:
        return {"task": self.spec.name, "train_source": self.train.source, "validation_source": self.val.source,
                "n_train_rows": self.n_train_rows, "pool": len(self.train), "n_validation": len(self.val),
                "n_evaluation_half": len(self.evaluation_rows), "n_scoring_half": len(self.scoring_rows),
                "model": self.model_source}


@dataclass
class StudyOutput:
    """A finished study: its results folder, results.json as a dict, and its main table (the CSV's rows)."""

    out_dir: Path
    record: dict[str, Any]
    table: list[dict[str, Any]]


@dataclass
class Trial:
    """A trained model and what its training did: `log` is the TrainLog, `notes` the method's notes."""

    model: torch.nn.Module
    log: Any
    notes: dict[str, Any]
    trainable_params: int


def run_trial(bench: Bench, ft_cfg, rows: Sequence[int], train_tokens=None, model: torch.nn.Module | None = None,
              progress: Progress | None = None, prepare=None) -> Trial:
    """Fine-tune on `rows` (positions in `train_tokens`, default the bench's pool tokens) as `ft_cfg` says.

    The model is `model` or a fresh `bench.base(ft_cfg.data.seed)`; `prepare(model) -> (Prepared, Method)`
    replaces the method's own preparation (the transfer study's head-only training). Cost: the training
    steps of `train_model`; no validation pass (nothing is chosen on validation data).
    """
    from ..train import get_method, train_model

    if not rows:
        raise ConfigError("a study trial got no training rows")
    tokens = bench.train_tokens if train_tokens is None else train_tokens
    model = bench.base(ft_cfg.data.seed) if model is None else model
    torch.manual_seed(ft_cfg.data.seed)  # LoRA's initialisation
    if prepare is None:
        method = get_method(ft_cfg.method)
        prepared = method.prepare(model, ft_cfg)
    else:
        prepared, method = prepare(model)
    tlog = train_model(prepared, method, ft_cfg, tokens, list(rows), bench.vsets, bench.spec.primary_metric,
                       progress=progress)
    return Trial(prepared.model, tlog, prepared.notes, method.trainable_params(prepared.model))


def halves_metrics(bench: Bench, model: torch.nn.Module, vsets=None) -> dict[str, dict[str, float]]:
    """The task's metrics of `model` on the evaluation half and on the whole split ("evaluation", "whole")."""
    vsets = bench.vsets if vsets is None else vsets
    names = bench.spec.metrics
    out = {}
    for which in ("evaluation", "whole"):
        m = vsets.metrics(model, which)
        out[which] = {k: float(m[k]) for k in names if k in m}
    return out


def flat_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"evaluation": {"accuracy": a}, "whole": {...}} → {"accuracy": a, ..., "accuracy_whole": ...} (table columns)."""
    row = dict(metrics["evaluation"])
    row.update({f"{k}_whole": v for k, v in metrics["whole"].items()})
    return row


def trial_record(trial: Trial) -> dict[str, Any]:
    """What results.json keeps of one trial: steps, time, trainable parameters, the per-step losses."""
    return {"steps": trial.log.steps, "train_s": trial.log.train_s, "trainable_params": trial.trainable_params,
            "final_loss": trial.log.losses[-1] if trial.log.losses else None, "losses": trial.log.losses}


def base_record(cfg: StudyConfig, study: str, bench: Bench, timings: dict[str, float]) -> dict[str, Any]:
    """The head of a study's results.json: study name, config, versions, machine, data, timings."""
    return {"study": study, "config": cfg.to_dict(), "versions": versions(), "machine": machine_info(),
            "device": device_summary(bench.device), "data": bench.data_record(), "primary_metric": bench.spec.primary_metric,
            "metrics_reported": "evaluation half of the validation split (seeded); *_whole: the whole split",
            "timings": timings}


class Timer:
    """Phase timings for results.json: `with timer("train"): ...` adds the seconds under "train_s"."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                key = f"{name}_s"
                timer.timings[key] = timer.timings.get(key, 0.0) + time.perf_counter() - self.t
                return False

        return _Phase()

    def total(self) -> dict[str, float]:
        self.timings["total_s"] = time.perf_counter() - self.t0
        return self.timings


def write_table(folder, name: str, rows: list[dict[str, Any]]) -> None:
    """A CSV of `rows` whose columns are the union of the rows' keys in first-seen order (missing and None
    cells are empty; list values are joined with ';')."""
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))

    def cell(v: Any) -> Any:
        if v is None:
            return ""
        return ";".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else v

    folder.write_csv(name, [{c: cell(r.get(c)) for c in columns} for r in rows])


def table_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width text table of `columns` (floats to 4 decimals) for summary.txt."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)


def mean_and_range(values: Sequence[float]) -> dict[str, float]:
    """Mean, min and max of values (the spread across seeds; a bootstrap CI is added where n ≥ 2)."""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}
