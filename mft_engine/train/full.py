"""Full fine-tuning: every parameter trains (fp32 weights; `--precision bf16` runs the forward and
backward under bf16 autocast, with fp32 master weights and optimizer state)."""
from __future__ import annotations

import torch

from .method import Method, Prepared, register_method


@register_method
class FullFineTuning(Method):
    """All parameters train, in one optimizer group. Stored: the whole model (its state at fp32)."""

    name = "full"
    summary = "every parameter trains"
    default_lr = 5e-5

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        for p in model.parameters():
            p.requires_grad_(True)
        return Prepared(model, [{"name": "all", "params": list(model.parameters())}])
