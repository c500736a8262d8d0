"""Gradient collection: one pass over N training samples, no weight update, into a GradientState."""
from .collector import Batch, collect_gradients
from .state import GradientState

__all__ = ["Batch", "GradientState", "collect_gradients"]
