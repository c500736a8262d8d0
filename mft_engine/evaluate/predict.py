"""Predictions over a tokenized split, batched by a token budget (sorted by length: little padding)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..device import graph_boundary, model_device, no_grad_context, to_device
from .metrics import classification_metrics, regression_metrics


def predict(model: torch.nn.Module, batches, n: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits for n rows; `batches` yields (row positions, HF batch dict). Returns fp32 [n, num_labels].

    Runs in eval mode (restoring the previous mode) without autograd on the model's device; the logits
    stay there until the one copy back at the end (no host sync per batch). Cost: one forward per batch.
    """
    was = model.training
    model.eval()
    device = model_device(model)
    out = None
    try:
        with no_grad_context(device):
            for rows, batch in batches:
                inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
                logits = model(**inputs).logits.float()
                if out is None:
                    out = torch.zeros((n, logits.shape[-1]), dtype=torch.float32, device=device)
                out[torch.as_tensor(rows, dtype=torch.long).to(device, non_blocking=True)] = logits
                graph_boundary(device)
                if on_batch is not None:
                    on_batch(len(rows))
    finally:
        model.train(was)
    return out.cpu().numpy() if out is not None else np.zeros((0, 1), dtype=np.float32)


def evaluate_model(model, batches, labels, num_labels: int, on_batch=None) -> dict:
    """Metrics of `model` on the rows `batches` covers: classification_metrics or regression_metrics."""
    logits = predict(model, batches, len(labels), on_batch)
    if num_labels == 1:
        return regression_metrics(labels, logits[:, 0])
    return classification_metrics(labels, logits.argmax(-1), num_labels)
