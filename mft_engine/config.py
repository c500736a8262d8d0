"""Run configurations: one dataclass per command, with help text, validation and to_dict().

CLI flags map onto these fields one to one; results.json stores `to_dict()` of the config that ran.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

EXCLUDE_PRESETS: dict[str, tuple[str, ...]] = {
    # The original BERT-MFT code left the head out: classifier and pooler.
    "original": ("classifier", "pooler"),
    # The influence follow-up also left out LayerNorm and the embeddings.
    "influence": ("classifier", "pooler", "LayerNorm", "embeddings"),
    "none": (),
}
RANK_BY = ("shrink", "update")
REDUCTIONS = ("batch-sum", "mean")
SAMPLE_ORDERS = ("first", "seeded")
PRECISIONS = ("fp32", "bf16")


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


def round_lr_fp32(lr: float) -> float:
    """The learning rate as the original's fp32 `param - lr * grad` saw it: rounded once to fp32."""
    return float(np.float32(lr))


def parse_unit_list(value: str | float | list[float] | tuple[float, ...], flag: str, what: str,
                    example: str) -> list[float]:
    """'a,b,c' or a number or a list -> sorted unique numbers, each in (0, 1]; ConfigError names `flag`."""
    if isinstance(value, (int, float)):
        items = [float(value)]
    elif isinstance(value, str):
        try:
            items = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{flag} {value!r} is not a comma-separated list of {what}") from None
    else:
        items = [float(v) for v in value]
    for f in items:
        if math.isnan(f) or not 0.0 < f <= 1.0:
            raise ConfigError(f"{flag} {f:g} is outside (0, 1]; expected {what} such as {example}")
    return sorted(set(items))


def parse_fractions(value: str | float | list[float] | tuple[float, ...]) -> list[float]:
    """'0.01,0.05,0.1' or a float or a list -> sorted unique fractions, each in (0, 1]."""
    items = parse_unit_list(value, "--fraction", "numbers", "0.1 or 0.01,0.05,0.1")
    if not items:
        raise ConfigError("--fraction is empty; expected numbers in (0, 1], e.g. 0.1 or 0.01,0.05,0.1")
    return items


@dataclass
class RunConfig:
    """Configuration of `mft run`: the BERT-MFT study (collect, test, select, zero, evaluate)."""

    model: str = _help("minilm | bert-base-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm")
    task: str = _help("task id (sst2, mrpc, cola, ...) or a local CSV/TSV/JSONL file", "sst2")
    data_dir: str | None = _help("GLUE root or task folder; else $MFT_DATA_DIR, the embedded SST-2, the Hub", None)
    samples: int = _help("number of training samples N to collect gradients on", 1000)
    batch_size: int = _help("fixed batch size defining g under batch-sum", 32)
    lr: float = _help("learning rate of the hypothetical step (rounded once to fp32)", 2e-5)
    fraction: list[float] = _help("fraction(s) of detrimental eligible parameters to zero", [0.1])
    rank_by: str = _help("ranking score among detrimental parameters: shrink | update", "shrink")
    exclude: str = _help("original | influence | none | comma-separated name patterns", "original")
    reduction: str = _help("batch-sum (sum of batch-mean gradients) | mean (gradient of the mean loss)", "batch-sum")
    sample_order: str = _help("first (first N rows in file order) | seeded (N rows drawn with the seed)", "first")
    keep_last: bool = _help("keep the last partial batch under batch-sum", False)
    precision: str = _help("fp32 | bf16 (autocast forward/backward, fp32 sums)", "fp32")
    literal: bool = _help("evaluate |θ − lr·g| < |θ| in fp32 as the original code did", False)
    eval_mode: bool = _help("collect with dropout off (default: train mode, as the original)", False)
    seed: int = _help("seed for the head initialisation, dropout, sampling and the random control", 42)
    max_length: int = _help("maximum tokens per sentence (pair)", 128)
    eval_batch_tokens: int = _help("token budget of an evaluation batch", 8192)
    checkpoint_every: int = _help("save a resumable collection checkpoint every B batches (0: never)", 0)
    out: str = _help("parent folder of the results folder", "results")
    state: str | None = _help("reuse this gradient_state.safetensors instead of collecting", None)
    control: bool = _help("also evaluate a random control mask of the same size", True)
    text_column: str | None = _help("text column of a local file task", None)
    text_pair_column: str | None = _help("second text column of a local pair task", None)
    label_column: str | None = _help("label column of a local file task", None)

    def __post_init__(self) -> None:
        self.fraction = parse_fractions(self.fraction)
        if not (self.lr > 0) or math.isinf(self.lr):
            raise ConfigError(f"--lr {self.lr} must be a finite number > 0")
        if round_lr_fp32(self.lr) == 0.0 or math.isinf(round_lr_fp32(self.lr)):
            raise ConfigError(f"--lr {self.lr} is not representable as a positive finite fp32")
        if self.samples < 1:
            raise ConfigError(f"--samples {self.samples} must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be >= 1")
        for name, allowed in (("rank_by", RANK_BY), ("reduction", REDUCTIONS),
                              ("sample_order", SAMPLE_ORDERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.reduction == "batch-sum" and not self.keep_last and self.samples < self.batch_size:
            raise ConfigError(
                f"--samples {self.samples} < --batch-size {self.batch_size}: batch-sum drops the last partial "
                "batch, so no sample would be used (pass --keep-last or more samples)")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every {self.checkpoint_every} must be >= 0")
        if not self.exclude.strip():
            raise ConfigError("--exclude is empty; expected original, influence, none or name patterns")

    @property
    def lr32(self) -> float:
        return round_lr_fp32(self.lr)

    def exclude_patterns(self) -> tuple[str, ...]:
        """The name patterns of excluded parameters (a preset or the user's comma-separated list)."""
        if self.exclude in EXCLUDE_PRESETS:
            return EXCLUDE_PRESETS[self.exclude]
        return tuple(p.strip() for p in self.exclude.split(",") if p.strip())

    def collection_key(self) -> dict[str, Any]:
        """The fields that define the gradient collection; a resume must match them exactly."""
        keys = ("model", "task", "data_dir", "samples", "batch_size", "reduction", "sample_order",
                "keep_last", "precision", "eval_mode", "seed", "max_length", "text_column",
                "text_pair_column", "label_column")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_fp32"] = self.lr32
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"lr_fp32"})
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "RunConfig":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {p} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config {p} must hold a mapping of field: value")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)


def field_help(cls: type, name: str) -> str:
    """Help text of one config field (used by the CLI so flags and config never drift apart)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)
