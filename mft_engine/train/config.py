"""`FinetuneConfig`: the configuration of one `mft finetune` run (one method, one model, one task).

Fields map one to one onto CLI flags; results.json stores `to_dict()`. Each registered method's options
dataclass (LoRAOptions, BitFitOptions, ...) is composed in (`fields.compose`), flat, so its fields (lora_*,
bitfit_*, freeze_layers, keep_ratio, mask_*) are flags and config.json keys under their own names; they
are validated whatever the method, so a bad value never passes silently.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import PRECISIONS, parse_unit_list
from ..data.config import DataConfig
from ..device import check_device_spec, device_field
from ..errors import ConfigError
from ..fields import COUNT_MAX, FlatConfig, check_int_range, compose, flat_fields, help_field
from . import registry  # noqa: F401  (registers the built-in methods: their options are composed below)
from .method import Method, get_method, method_class, on_register, registered_methods


def parse_targets(value: str | float | list[float] | tuple[float, ...] | None) -> list[float]:
    """'0.60,0.75,0.85' (or a number or a list) → sorted unique target accuracies, each in (0, 1].

    None or '' → []. Raises ConfigError for a non-number or a target outside (0, 1].
    """
    if value is None or value == "":
        return []
    return parse_unit_list(value, "--save-at target", "accuracies", "0.6,0.75")


def parse_steps(value: str | int | list[int] | tuple[int, ...] | None) -> list[int]:
    """'86,87,88' (or an int or a list) → sorted unique optimizer steps, each ≥ 1. None or '' → [].
    Raises ConfigError for a non-integer or a step below 1."""
    if value is None or value == "":
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        items = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"--save-steps {value!r} is not a comma-separated list of steps, e.g. 86,87,88") from None
    for v in items:
        check_int_range("--save-steps", v, 1, COUNT_MAX)
    return sorted(set(items))


def _default_lrs() -> str:
    """The registered methods' default learning rates in words, e.g. 'full/freeze 5e-05, lora 0.0005'."""
    by_lr: dict[float, list[str]] = {}
    for m in registered_methods():
        by_lr.setdefault(m.default_lr, []).append(m.name)
    return ", ".join(f"{'/'.join(names)} {lr:g}" for lr, names in by_lr.items())


@dataclass
class FinetuneConfig(FlatConfig):
    """Configuration of `mft finetune`: train one method, evaluate on the validation halves, write
    results/finetune_<method>_<timestamp>/."""

    method: str = help_field("fine-tuning method: " + " | ".join(m.name for m in registered_methods()), "full")
    model: str = help_field("minilm | bert-base-random | minilm-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm")
    data: DataConfig = compose(DataConfig, help={
        "sample_order": "first (first N rows) | seeded (N rows drawn with the seed)",
        "seed": "seed of the head, LoRA init, dropout, shuffling, sampling and the validation halves"})
    epochs: int = help_field("passes over the training rows (ignored when --max-steps > 0)", 1)
    max_steps: int = help_field("optimizer steps to run, overriding --epochs (0: epochs decide)", 0)
    batch_size: int = help_field("training rows per step (length-bucketed, seeded shuffle)", 32)
    lr: float | None = help_field(f"peak learning rate (default: the method's: {_default_lrs()})", None,
                                  aliases=("--learning-rate",))
    weight_decay: float = help_field("AdamW weight decay (not applied to biases and LayerNorm weights)", 0.01)
    warmup_ratio: float = help_field("share of the steps with linear warm-up, then linear decay to 0", 0.1)
    max_grad_norm: float = help_field("clip the global gradient norm to this (0: no clipping)", 1.0)
    precision: str = help_field("fp32 | bf16 (bf16 autocast forward/backward, fp32 weights)", "fp32")
    device: str = device_field()
    eval_every: int = help_field("validate on the scoring half every n steps (for --save-at and early stopping)", 50)
    save_at: list[float] = help_field("save a checkpoint the first time scoring-half accuracy reaches each target "
                                      "(comma-separated, in (0, 1])", [])
    save_steps: list[int] = help_field("also save a checkpoint after each of these optimizer steps, whatever its "
                                       "accuracy (comma-separated; checkpoints/step_<n>), for a target the run "
                                       "jumps over", [])
    stop_when_saved: bool = help_field("stop training once every --save-at target is passed and every --save-steps "
                                       "step saved (the schedule still spans the whole run, so the states up to "
                                       "there are those of the whole run)", False)
    save_tolerance: float = help_field("a target first passed by more than this is listed as not reached", 0.02)
    dense_eval_until: float = help_field("validate every step while an unreached --save-at target is at or below "
                                         "this accuracy", 0.80)
    early_stopping_patience: int = help_field("stop after this many validations without a better scoring-half "
                                              "metric, keeping the best state (0: off)", 0)
    save_model: bool = help_field("write what the method stores (model, biases or adapter) to <run>/stored/", True)
    out: str = help_field("parent folder of the results folder", "results")

    def __post_init__(self) -> None:
        self.method = str(self.method).strip().lower()
        method = get_method(self.method)  # ConfigError naming the registered methods
        if self.lr is None:
            self.lr = method.default_lr
        self.save_at = parse_targets(self.save_at)
        self.save_steps = parse_steps(self.save_steps)
        if self.stop_when_saved and not (self.save_at or self.save_steps):
            raise ConfigError("--stop-when-saved needs --save-at or --save-steps")
        _positive("lr", self.lr)
        for name, lo in (("batch_size", 1), ("eval_every", 1), ("max_steps", 0), ("epochs", 0), ("early_stopping_patience", 0)):
            check_int_range(f"--{name.replace('_', '-')}", getattr(self, name), lo, COUNT_MAX)
        if self.max_steps == 0 and self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs} must be >= 1 (or pass --max-steps)")
        for name in ("weight_decay", "max_grad_norm"):
            v = getattr(self, name)
            if math.isnan(v) or v < 0 or math.isinf(v):
                raise ConfigError(f"--{name.replace('_', '-')} {v} must be a finite number >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio {self.warmup_ratio} must be in [0, 1)")
        if not 0.0 <= self.save_tolerance < 1.0:
            raise ConfigError(f"--save-tolerance {self.save_tolerance} must be in [0, 1)")
        if not 0.0 <= self.dense_eval_until <= 1.0:
            raise ConfigError(f"--dense-eval-until {self.dense_eval_until} must be in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_device_spec(self.device)

    def method_options(self, method: str | None = None) -> Any:
        """The settings of `method` (default: this run's) in this config: the composed instance of the
        method's `options` dataclass (e.g. LoRAOptions), or None for a method that declares none.
        ConfigError naming the registered methods for an unknown name."""
        options = method_class(method or self.method).options
        return None if options is None else getattr(self, _OPTION_FIELDS[options])


def _positive(name: str, v: float) -> None:
    if math.isnan(v) or not v > 0 or math.isinf(v):
        raise ConfigError(f"--{name.replace('_', '-')} {v} must be a finite number > 0")


#: options dataclass → the FinetuneConfig field holding it (one field per class: lora8 and qlora share LoRA's)
_OPTION_FIELDS: dict[type, str] = {}


def _compose_options(method: type[Method]) -> None:
    """Compose `method.options` into FinetuneConfig as a field named after the method (flat: its leaves are
    FinetuneConfig's flat fields, flags and config.json keys under their own names).

    The class is extended in place (its dataclass fields, __init__, __repr__, __eq__ taken from a dataclass
    subclass that adds the field), because every module holds FinetuneConfig itself: a method registered
    after this module was imported (a plugin's, a test's) gets its options composed too. A leaf named like
    an existing flat field raises TypeError before anything changes. Cost: one dataclass creation.
    """
    options = method.options
    if options is None or options in _OPTION_FIELDS:
        return
    attr = method.name.replace("-", "_")
    if attr in FinetuneConfig.__dataclass_fields__:
        raise TypeError(f"method {method.name!r}: FinetuneConfig already has a field {attr!r}")
    extended = dataclasses.make_dataclass(FinetuneConfig.__name__, [(attr, options, compose(options))],
                                          bases=(FinetuneConfig,))
    flat_fields(extended)  # TypeError naming a flat name two methods would share
    FinetuneConfig.__annotations__[attr] = options
    for name in ("__dataclass_fields__", "__init__", "__repr__", "__eq__", "__match_args__"):
        setattr(FinetuneConfig, name, extended.__dict__[name])
    _OPTION_FIELDS[options] = attr


for _method in registered_methods():
    _compose_options(_method)
on_register(_compose_options)
