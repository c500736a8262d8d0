"""Evaluation: predictions over a split, the metrics reported before/after masking, and the validation split
with its scoring and evaluation halves."""
from .metrics import classification_metrics, regression_metrics
from .predict import evaluate_model, predict
from .validation import ValidationSets

__all__ = ["ValidationSets", "classification_metrics", "evaluate_model", "predict", "regression_metrics"]
