"""Gradient collection: one pass over N training samples, no weight update, into a GradientState."""
from .collector import Batch, collect_gradients
from .provenance import build_provenance, file_sha256, model_fingerprint, provenance_difference
from .state import GradientState

__all__ = ["Batch", "GradientState", "build_provenance", "collect_gradients", "file_sha256", "model_fingerprint",
           "provenance_difference"]
