"""A toy fine-tuning method in one file: the biases of the top k encoder layers and the classifier train.

It shows what adding a method takes: an options dataclass (composed into FinetuneConfig, so `toy_layers`
is a flat field, a config.json key and, with generated flags, `--toy-layers`), `describe` for the methods
table, `prepare`, and the one registration line (`@register_method`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mft_engine.errors import ConfigError
from mft_engine.fields import help_field
from mft_engine.train import Method, Prepared, register_method
from mft_engine.train.freeze import layer_index, num_layers


@dataclass
class ToyOptions:
    """The toy method's one setting."""

    toy_layers: int = help_field("toy-top-bias: the biases of this many top encoder layers train", 1)

    def __post_init__(self) -> None:
        if self.toy_layers < 1:
            raise ConfigError(f"--toy-layers {self.toy_layers} must be >= 1")


@register_method
class ToyTopBias(Method):
    """Biases of the top `toy_layers` encoder layers plus the classifier train."""

    name = "toy-top-bias"
    summary = "biases of the top k layers + classifier"
    default_lr = 1e-3
    options = ToyOptions

    def describe(self, options: ToyOptions) -> str:
        return f"toy-top-bias (top {options.toy_layers})"

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        k = self.options_of(config).toy_layers
        top = num_layers(model) - k
        trainable = []
        for name, p in model.named_parameters():
            i = layer_index(name)
            train = "classifier" in name or (name.endswith(".bias") and i is not None and i >= top)
            p.requires_grad_(train)
            if train:
                trainable.append(p)
        return Prepared(model, [{"name": "toy", "params": trainable}], notes={"toy_layers": k})
