"""`FinetuneConfig`: the configuration of one `mft finetune` run (one method, one model, one task).

Fields map one to one onto CLI flags; results.json stores `to_dict()`. Method-specific fields (lora_*,
bitfit_*, freeze_layers, keep_ratio, mask_*) are validated whatever the method, so a bad value never passes
silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import PRECISIONS, parse_unit_list
from ..data.config import DataConfig
from ..errors import ConfigError
from ..fields import COUNT_MAX, FlatConfig, check_int_range, compose, help_field
from .bitfit import parse_group_lrs, parse_groups
from .learned_mask import validate_options as validate_mask_options
from .lora import PLACEMENTS
from .method import get_method

#: the widest layer of the supported BERT-family encoders is far narrower; a larger rank is a typo
LORA_RANK_MAX = 65536


def parse_targets(value: str | float | list[float] | tuple[float, ...] | None) -> list[float]:
    """'0.60,0.75,0.85' (or a number or a list) → sorted unique target accuracies, each in (0, 1].

    None or '' → []. Raises ConfigError for a non-number or a target outside (0, 1].
    """
    if value is None or value == "":
        return []
    return parse_unit_list(value, "--save-at target", "accuracies", "0.6,0.75")


@dataclass
class FinetuneConfig(FlatConfig):
    """Configuration of `mft finetune`: train one method, evaluate on the validation halves, write
    results/finetune_<method>_<timestamp>/."""

    method: str = help_field("fine-tuning method: full | bitfit | lora | lora8 | qlora | freeze | learned-mask", "full")
    model: str = help_field("minilm | bert-base-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm")
    data: DataConfig = compose(DataConfig, help={
        "sample_order": "first (first N rows) | seeded (N rows drawn with the seed)",
        "seed": "seed of the head, LoRA init, dropout, shuffling, sampling and the validation halves"})
    epochs: int = help_field("passes over the training rows (ignored when --max-steps > 0)", 1)
    max_steps: int = help_field("optimizer steps to run, overriding --epochs (0: epochs decide)", 0)
    batch_size: int = help_field("training rows per step (length-bucketed, seeded shuffle)", 32)
    lr: float | None = help_field("peak learning rate (default: the method's: full/freeze 5e-5, bitfit 1e-3, lora 5e-4, "
                                  "learned-mask 2e-5)",
                                  None, aliases=("--learning-rate",))
    weight_decay: float = help_field("AdamW weight decay (not applied to biases and LayerNorm weights)", 0.01)
    warmup_ratio: float = help_field("share of the steps with linear warm-up, then linear decay to 0", 0.1)
    max_grad_norm: float = help_field("clip the global gradient norm to this (0: no clipping)", 1.0)
    precision: str = help_field("fp32 | bf16 (bf16 autocast forward/backward, fp32 weights)", "fp32")
    eval_every: int = help_field("validate on the scoring half every n steps (for --save-at and early stopping)", 50)
    save_at: list[float] = help_field("save a checkpoint the first time scoring-half accuracy reaches each target "
                                      "(comma-separated, in (0, 1])", [])
    save_tolerance: float = help_field("a target first passed by more than this is listed as not reached", 0.02)
    dense_eval_until: float = help_field("validate every step while an unreached --save-at target is at or below "
                                         "this accuracy", 0.80)
    early_stopping_patience: int = help_field("stop after this many validations without a better scoring-half "
                                              "metric, keeping the best state (0: off)", 0)
    save_model: bool = help_field("write what the method stores (model, biases or adapter) to <run>/stored/", True)
    out: str = help_field("parent folder of the results folder", "results")
    lora_rank: int = help_field("LoRA rank r", 8)
    lora_alpha: float = help_field("LoRA alpha (the update is scaled by alpha / r)", 16.0)
    lora_dropout: float = help_field("dropout on the LoRA input", 0.1)
    lora_placement: str = help_field("LoRA layers: attn-qkv | attn-full | ffn-only | full", "attn-qkv")
    bitfit_groups: str = help_field("bias groups that train: all | comma-separated attention, feed-forward, layernorm, "
                                    "pooler, classifier", "all")
    bitfit_lr: str = help_field("per-group learning rates, e.g. attention=1e-3,classifier=2e-3 (others: --lr)", "")
    bitfit_clip: float = help_field("clip the biases' gradient norm to this before the global clip (0: off)", 0.0)
    bitfit_head: bool = help_field("BitFit also trains the classifier weight", False)
    freeze_layers: int = help_field("freeze: the embeddings and this many lowest encoder layers stay frozen", 0)
    keep_ratio: float = help_field("learned-mask: share of each masked weight tensor kept, in (0, 1]", 0.9)
    mask_layers: str = help_field("learned-mask: encoder layers masked: all | comma-separated numbers, e.g. 4,5", "all")
    mask_modules: str = help_field("learned-mask: linear modules masked: all | attn-qkv | attn-full | ffn-only | full | "
                                   "comma-separated module name patterns (glob or substring)", "all")
    mask_init: str = help_field("learned-mask: scores start at |W| (magnitude: the magnitude mask) or all equal (constant)",
                                "magnitude")

    def __post_init__(self) -> None:
        self.method = str(self.method).strip().lower()
        method = get_method(self.method)  # ConfigError naming the registered methods
        if self.lr is None:
            self.lr = method.default_lr
        self.save_at = parse_targets(self.save_at)
        _positive("lr", self.lr)
        for name, lo in (("batch_size", 1), ("eval_every", 1), ("max_steps", 0), ("epochs", 0), ("early_stopping_patience", 0), ("freeze_layers", 0)):
            check_int_range(f"--{name.replace('_', '-')}", getattr(self, name), lo, COUNT_MAX)
        if self.max_steps == 0 and self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs} must be >= 1 (or pass --max-steps)")
        for name in ("weight_decay", "max_grad_norm", "bitfit_clip"):
            v = getattr(self, name)
            if math.isnan(v) or v < 0 or math.isinf(v):
                raise ConfigError(f"--{name.replace('_', '-')} {v} must be a finite number >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio {self.warmup_ratio} must be in [0, 1)")
        if not 0.0 <= self.save_tolerance < 1.0:
            raise ConfigError(f"--save-tolerance {self.save_tolerance} must be in [0, 1)")
        if not 0.0 <= self.dense_eval_until <= 1.0:
            raise ConfigError(f"--dense-eval-until {self.dense_eval_until} must be in [0, 1]")
        for name, allowed in (("precision", PRECISIONS),
                              ("lora_placement", tuple(PLACEMENTS))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of "
                                  f"{', '.join(allowed)}")
        if self.lora_rank < 1:
            raise ConfigError(f"--lora-rank {self.lora_rank} must be >= 1")
        if self.lora_rank > LORA_RANK_MAX:
            # Allocating r x width adapters overflows or exhausts memory long before the model is checked.
            raise ConfigError(f"--lora-rank {self.lora_rank} must be <= {LORA_RANK_MAX} (a rank above a layer's "
                              "width adds nothing)")
        _positive("lora_alpha", self.lora_alpha)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout {self.lora_dropout} must be in [0, 1)")
        parse_groups(self.bitfit_groups)
        parse_group_lrs(self.bitfit_lr)
        validate_mask_options(self.keep_ratio, self.mask_layers, self.mask_modules, self.mask_init)


def _positive(name: str, v: float) -> None:
    if math.isnan(v) or not v > 0 or math.isinf(v):
        raise ConfigError(f"--{name.replace('_', '-')} {v} must be a finite number > 0")
