"""Evaluation: predictions over a split and the metrics reported before/after masking."""
from .metrics import classification_metrics, regression_metrics
from .predict import evaluate_model, predict

__all__ = ["classification_metrics", "evaluate_model", "predict", "regression_metrics"]
