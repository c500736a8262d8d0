"""Layer freezing: the embeddings and the lowest k encoder layers stay frozen; the layers above them, the
pooler and the classifier train."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..fields import COUNT_MAX, check_int_range, help_field
from .method import Method, Prepared, register_method

_LAYER = re.compile(r"(?:^|\.)(?:encoder\.)?layers?\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """Encoder layer number of a parameter name (`bert.encoder.layer.3.attention...` → 3), else None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def num_layers(model: torch.nn.Module) -> int:
    """Encoder layers of a model: its config's num_hidden_layers, else 1 + the highest layer index seen."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n is not None:
        return int(n)
    seen = [layer_index(n) for n, _ in model.named_parameters()]
    return 1 + max((i for i in seen if i is not None), default=-1)


@dataclass
class FreezeOptions:
    """Layer freezing's setting: how many of the lowest encoder layers stay frozen (with the embeddings)."""

    freeze_layers: int = help_field("freeze: the embeddings and this many lowest encoder layers stay frozen", 0)

    def __post_init__(self) -> None:
        check_int_range("--freeze-layers", self.freeze_layers, 0, COUNT_MAX)


@register_method
class Freeze(Method):
    """Freeze the embeddings and layers 0 .. k-1 (k = `freeze_layers`); everything else trains.
    Stored: the trained parameters (the frozen ones come from the base model)."""

    name = "freeze"
    summary = "embeddings and the lowest k layers frozen, the rest trains"
    default_lr = 5e-5
    options = FreezeOptions

    def describe(self, options: FreezeOptions) -> str:
        """e.g. "freeze (4 layers)"."""
        return f"freeze ({options.freeze_layers} layers)"

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        k = int(self.options_of(config).freeze_layers)
        total = num_layers(model)
        if k > total:
            raise ConfigError(f"--freeze-layers {k} exceeds the model's {total} encoder layers")
        trainable = []
        for name, p in model.named_parameters():
            i = layer_index(name)
            frozen = "embeddings." in name or (i is not None and i < k)
            p.requires_grad_(not frozen)
            if not frozen:
                trainable.append(p)
        return Prepared(model, [{"name": f"layers {k}..{total - 1} + head", "params": trainable}],
                        notes={"frozen_layers": k, "encoder_layers": total})
