"""LoRA through Hugging Face PEFT: low-rank adapters on chosen linear layers, the classifier head trained
and saved with the adapter (PEFT's `task_type=SEQ_CLS` adds it to `modules_to_save`).

Placements are regular expressions over full module paths, because BERT's `output.dense` names two
different layers: `layer.N.attention.output.dense` (attention output projection) and `layer.N.output.dense`
(the feed-forward output). PEFT matches a string `target_modules` with `re.fullmatch` against each
module's path inside the base model (`bert.encoder.layer.0.attention.self.query`).
"""
from __future__ import annotations

import contextlib
import copy
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .._optional import silence_bitsandbytes_notices
from ..errors import ConfigError, ModelError
from ..fields import help_field
from .method import METHOD_FILE, Method, Prepared, read_method_file, register_method

_QKV = r"attention\.self\.(query|key|value)"
_ATTN_OUT = r"attention\.output\.dense"
_FFN = r"(intermediate\.dense|output\.dense)"  # right after layer.N: never the attention's output.dense
PLACEMENTS: dict[str, str] = {
    "attn-qkv": rf".*\.layer\.\d+\.{_QKV}",
    "attn-full": rf".*\.layer\.\d+\.({_QKV}|{_ATTN_OUT})",
    "ffn-only": rf".*\.layer\.\d+\.{_FFN}",
    "full": rf".*\.layer\.\d+\.({_QKV}|{_ATTN_OUT}|{_FFN})",
}


#: the widest layer of the supported BERT-family encoders is far narrower; a larger rank is a typo
LORA_RANK_MAX = 65536


@dataclass
class LoRAOptions:
    """LoRA's settings (peft.LoraConfig's r, lora_alpha, lora_dropout and target_modules, the last as a
    named placement), shared by lora, lora8 and qlora. Checked on creation: ConfigError naming the flag."""

    lora_rank: int = help_field("LoRA rank r", 8)
    lora_alpha: float = help_field("LoRA alpha (the update is scaled by alpha / r)", 16.0)
    lora_dropout: float = help_field("dropout on the LoRA input", 0.1)
    lora_placement: str = help_field("LoRA layers: attn-qkv | attn-full | ffn-only | full", "attn-qkv")

    def __post_init__(self) -> None:
        if self.lora_placement not in PLACEMENTS:
            raise ConfigError(f"--lora-placement {self.lora_placement!r} is not one of {', '.join(PLACEMENTS)}")
        if self.lora_rank < 1:
            raise ConfigError(f"--lora-rank {self.lora_rank} must be >= 1")
        if self.lora_rank > LORA_RANK_MAX:
            # Allocating r x width adapters overflows or exhausts memory long before the model is checked.
            raise ConfigError(f"--lora-rank {self.lora_rank} must be <= {LORA_RANK_MAX} (a rank above a layer's "
                              "width adds nothing)")
        if math.isnan(self.lora_alpha) or not self.lora_alpha > 0 or math.isinf(self.lora_alpha):
            raise ConfigError(f"--lora-alpha {self.lora_alpha} must be a finite number > 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout {self.lora_dropout} must be in [0, 1)")


def placement_pattern(placement: str) -> str:
    """The full-path regex of a placement; ConfigError naming the placements when unknown."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"--lora-placement {placement!r} is not one of {', '.join(PLACEMENTS)}")
    return PLACEMENTS[placement]


def matched_modules(model: torch.nn.Module, placement: str) -> list[str]:
    """Paths of the nn.Linear modules of a plain (unwrapped) model that `placement` adapts, in model order."""
    pattern = re.compile(placement_pattern(placement))
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pattern.fullmatch(n)]


def lora_targets(model: torch.nn.Module, options: LoRAOptions) -> list[str]:
    """The module paths `options.lora_placement` adapts in `model`; ModelError when it matches none."""
    targets = matched_modules(model, options.lora_placement)
    if not targets:
        raise ModelError(f"--lora-placement {options.lora_placement} matches no linear layer of this model "
                         "(expected BERT-style names such as encoder.layer.0.attention.self.query)")
    return targets


def _import_peft():
    """`import peft`, after dropping bitsandbytes' expected import-time notice (peft imports it when installed)."""
    silence_bitsandbytes_notices()
    import peft

    return peft


@contextlib.contextmanager
def quiet_peft():
    """Context manager: FutureWarnings silenced around a PEFT call (LoRA and its quantized variants use it)."""
    # transformers 5 deprecates an attribute PEFT still reads (`is_gradient_checkpointing`); harmless here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@register_method
class LoRA(Method):
    """LoRA adapters of rank r and scale alpha / r on the placement's linear layers, plus the trained head.
    Stored: the adapter matrices and the classifier (PEFT's adapter folder)."""

    name = "lora"
    summary = "low-rank adapters (HF PEFT) + trained classifier head"
    default_lr = 5e-4
    options = LoRAOptions

    def describe(self, options: LoRAOptions) -> str:
        """e.g. "lora (attn-qkv, r=8)": the placement and rank tell LoRA runs apart."""
        return f"{self.name} ({options.lora_placement}, r={options.lora_rank})"

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        options = self.options_of(config)
        return self.wrap(model, options, lora_targets(model, options))

    def wrap(self, model: torch.nn.Module, config: LoRAOptions, targets: list[str]) -> Prepared:
        """Add the adapters (`config`: the LoRA options; `targets`: from `lora_targets` on the plain model) and
        the trained head to `model` in place; return the PeftModel, its groups (adapters, head) and the notes. Shared with the quantized
        methods, which pass their quantized base. Cost: two r × n matrices per target layer and a head copy."""
        peft = _import_peft()
        lcfg = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=int(config.lora_rank),
                               lora_alpha=float(config.lora_alpha), lora_dropout=float(config.lora_dropout),
                               target_modules=placement_pattern(config.lora_placement), bias="none")
        with quiet_peft():
            peft_model = peft.get_peft_model(model, lcfg)
        adapters = [p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
        head = [p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n]
        groups = [{"name": "lora", "params": adapters}]
        if head:
            groups.append({"name": "head", "params": head})
        return Prepared(peft_model, groups, notes={
            "lora_modules": targets, "rank": int(config.lora_rank), "alpha": float(config.lora_alpha),
            "dropout": float(config.lora_dropout), "placement": config.lora_placement,
            "added_params": sum(p.numel() for p in adapters) + sum(p.numel() for p in head)})

    def adapter_source(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The tensors PEFT reads the adapter and head from when storing; None: PEFT's default, `model.state_dict()`."""
        return None

    def stored_params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return dict(_import_peft().get_peft_model_state_dict(model, state_dict=self.adapter_source(model)))

    def save(self, model: torch.nn.Module, folder: str | Path) -> Path:
        """PEFT's adapter folder (adapter_config.json, adapter_model.safetensors) plus method.json."""
        import json

        folder = Path(folder)
        source = self.adapter_source(model)
        with quiet_peft():
            model.save_pretrained(str(folder), **({} if source is None else {"state_dict": source}))
        (folder / METHOD_FILE).write_text(json.dumps({"method": self.name, "format": "peft-adapter"}, indent=2) + "\n")
        return folder

    def load(self, model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
        """Wrap the base `model` (same name and seed as the trained one) with the saved adapter and head;
        returns the PeftModel in eval mode."""
        peft = _import_peft()
        folder = Path(folder)
        if read_method_file(folder).get("method") != self.name:
            raise ModelError(f"{folder} does not hold a {self.name} adapter")
        try:
            with quiet_peft():
                return peft.PeftModel.from_pretrained(model, str(folder)).eval()
        except (ValueError, RuntimeError, KeyError) as e:
            raise ModelError(f"{folder}: the adapter does not fit the model ({str(e).splitlines()[0]})") from None

    def merged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A deep copy with ΔW = (alpha / r)·B·A merged into the base weights and the trained head in place.
        Cost: one copy of the model, one r-rank matmul per adapted layer."""
        with quiet_peft():
            return copy.deepcopy(model).merge_and_unload()
