"""Metric functions over label and prediction arrays (checked against scikit-learn in the tests)."""
from __future__ import annotations

import math

import numpy as np


def classification_metrics(y_true, y_pred, num_labels: int) -> dict:
    """Accuracy, precision/recall/F1 (binary: of class 1; else macro), MCC, confusion matrix, recall per class.

    Confusion matrix rows are true labels, columns predictions. Undefined ratios (0/0) are 0, as
    scikit-learn's zero_division=0. Cost: O(n).
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    n = len(t)
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm).astype(float)
    pred_pos = cm.sum(0).astype(float)
    true_pos = cm.sum(1).astype(float)
    prec = np.divide(tp, pred_pos, out=np.zeros_like(tp), where=pred_pos > 0)
    rec = np.divide(tp, true_pos, out=np.zeros_like(tp), where=true_pos > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    out = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "mcc": _mcc(cm),
        "confusion_matrix": cm.tolist(),
        "recall_per_class": rec.tolist(),
        "predicted_share_per_class": (pred_pos / n).tolist() if n else [0.0] * num_labels,
    }
    if num_labels == 2:
        out.update(precision=float(prec[1]), recall=float(rec[1]), f1=float(f1[1]))
    else:
        out.update(precision=float(prec.mean()), recall=float(rec.mean()), f1=float(f1.mean()))
    return out


def _mcc(cm: np.ndarray) -> float:
    # Gorodkin's multi-class MCC, which is Matthews' coefficient for two classes.
    cm = cm.astype(float)
    s = cm.sum()
    c = np.trace(cm)
    t = cm.sum(1)
    p = cm.sum(0)
    num = c * s - t @ p
    den = math.sqrt(max(s * s - p @ p, 0.0)) * math.sqrt(max(s * s - t @ t, 0.0))
    return float(num / den) if den > 0 else 0.0


def regression_metrics(y_true, y_pred) -> dict:
    """Pearson and Spearman correlation and MSE (STS-B)."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)

    def pearson(a, b):
        a = a - a.mean()
        b = b - b.mean()
        d = math.sqrt(float(a @ a) * float(b @ b))
        return float(a @ b / d) if d > 0 else 0.0

    def ranks(a):
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a), dtype=float)
        r[order] = np.arange(len(a), dtype=float)
        # average ranks over ties, as scipy.stats.spearmanr
        vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.zeros(len(vals))
        np.add.at(sums, inv, r)
        return sums[inv] / counts[inv]

    return {"n": len(t), "pearson": pearson(t, p), "spearman": pearson(ranks(t), ranks(p)),
            "mse": float(np.mean((t - p) ** 2)) if len(t) else 0.0}
