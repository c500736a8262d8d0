"""Gradient collection: one pass over N training samples, no weight update, into a GradientState."""
# Batch, the unit collect_gradients takes, is built by data.batching.gradient_batches: it is defined there.
from ..data.batching import Batch
from .collector import ActivationStats, collect_gradients
from .provenance import build_provenance, file_sha256, model_fingerprint, provenance_difference
from .state import GradientState

__all__ = ["ActivationStats", "Batch", "GradientState", "build_provenance", "collect_gradients", "file_sha256",
           "model_fingerprint", "provenance_difference"]
