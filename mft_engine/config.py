"""`RunConfig`: the configuration of `mft run`, composed of the data setup (`DataConfig`), the selection
(`SelectionSpec`) and the collection's own settings.

CLI flags and config.json keys are the flat names of its leaves (`fields.flat_fields`); results.json
stores `to_dict()` of the config that ran. The field helpers every config uses live in `fields` and are
re-exported here for the modules that read them from config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .data.config import SAMPLE_ORDERS, DataConfig  # noqa: F401
from .device import check_device_spec, device_field, dist_backend_field
from .errors import ConfigError

# The field helpers and the selection's vocabulary are defined once (fields, selection_spec); re-exported.
from .fields import (  # noqa: F401
    COUNT_MAX,
    SEED_MAX,
    FlatConfig,
    check_field_types,
    check_int_range,
    compose,
    field_help,
    flatten,
    help_field,
    integral_floats_to_int,
)
from .selection_spec import EXCLUDE_PRESETS, SelectionSpec, parse_unit_list, round_lr_fp32  # noqa: F401

REDUCTIONS = ("batch-sum", "mean")
PRECISIONS = ("fp32", "bf16")


@dataclass
class RunConfig(FlatConfig):
    """Configuration of `mft run`: the BERT-MFT study (collect, test, select, zero, evaluate)."""

    model: str = help_field("minilm-sst2 (MiniLM fine-tuned on SST-2, embedded) | minilm (new untrained head) | "
                            "bert-base-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm-sst2")
    data: DataConfig = compose(DataConfig, samples=1000, types={"samples": int}, help={
        "task": "task id (sst2, mrpc, cola, ...) or a local CSV/TSV/JSONL file",
        "samples": "number of training samples N to collect gradients on",
        "seed": "seed for the head initialisation, dropout, sampling and the random control"})
    batch_size: int = help_field("fixed batch size defining g under batch-sum", 32)
    selection: SelectionSpec = compose(SelectionSpec, names={"fractions": "fraction"})
    reduction: str = help_field("batch-sum (sum of batch-mean gradients) | mean (gradient of the mean loss)", "batch-sum")
    keep_last: bool = help_field("keep the last partial batch under batch-sum", False, off="--drop-last")
    precision: str = help_field("fp32 | bf16 (autocast forward/backward, fp32 sums)", "fp32")
    device: str = device_field()
    eval_mode: bool = help_field("collect with dropout off (default: train mode, as the original)", False,
                                 off="--train-mode")
    checkpoint_every: int = help_field("save a resumable collection checkpoint every B batches (0: never)", 0)
    save_state: bool | None = help_field("write gradient_state.safetensors (reuse with --state; default: only with "
                                         "--checkpoint-every)", None, off="--no-save-state")
    out: str = help_field("parent folder of the results folder", "results")
    state: str | None = help_field("reuse this gradient_state.safetensors instead of collecting", None)
    control: bool = help_field("also evaluate a random control mask of the same size", True)
    dist_backend: str | None = dist_backend_field()

    def __post_init__(self) -> None:
        if self.data.samples is None:
            raise ConfigError("--samples must be given: mft run collects over a fixed number of samples")
        check_device_spec(self.device)
        for name, lo in (("batch_size", 1), ("checkpoint_every", 0)):
            check_int_range(f"--{name.replace('_', '-')}", getattr(self, name), lo, COUNT_MAX)
        for name, allowed in (("reduction", REDUCTIONS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.reduction == "batch-sum" and not self.keep_last and self.data.samples < self.batch_size:
            raise ConfigError(
                f"--samples {self.data.samples} < --batch-size {self.batch_size}: batch-sum drops the last partial "
                "batch, so no sample would be used (pass --keep-last or more samples)")

    def collection_key(self) -> dict[str, Any]:
        """The fields that define the gradient collection; a resume must match them exactly."""
        keys = ("model", "task", "data_dir", "samples", "batch_size", "reduction", "sample_order",
                "keep_last", "precision", "eval_mode", "seed", "max_length", "text_column",
                "text_pair_column", "label_column")
        flat = flatten(self)
        return {k: flat[k] for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """The flat fields (config.json's keys) and lr_fp32, the lr the run used."""
        return {**flatten(self), "lr_fp32": self.selection.lr32}

    @classmethod
    def from_dict(cls, d: dict[str, Any], extra=None) -> RunConfig:
        """The config from a flat dict (config.json, a YAML mapping; its lr_fp32 is derived, so dropped);
        ConfigError for an unknown field or a value of the wrong type, naming the field."""
        return super().from_dict(d, extra=lambda k: k == "lr_fp32" or bool(extra and extra(k)))
