"""The app's handlers: plain functions from the page's inputs to what it shows, testable without a browser.

`predict_text` (Try it), `predict_batch` (Batch), `inspect_folder` (Inspect, in inspection.py) and
`compare_text` / `compare_batch` (Compare). Each takes a `ModelStore` and the picker's model keys, checks
its inputs (AppInputError, one line the page shows) and returns a dataclass of plain values. None of them
writes into a model or results folder: the only file written is the batch predictions CSV, in a fresh
temporary folder.
"""
from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import classification_metrics, regression_metrics
from .inspection import Inspection, inspect_folder
from .sources import AppInputError
from .store import Classifier, ModelStore
from .tables import check_text, label_ids, read_table

__all__ = ["BatchResult", "CompareBatch", "CompareText", "Inspection", "TextPrediction", "compare_batch",
           "compare_text", "inspect_folder", "predict_batch", "predict_text"]

#: Rows of a predictions or disagreements table shown in the page (the CSV holds every row).
SHOWN_ROWS = 200
#: Characters of a text shown in a table cell.
SHOWN_CHARS = 160


@dataclass
class TextPrediction:
    """One input through one model: the predicted `label` and its `confidence` (softmax), `probs` (class
    name → probability; empty for a regression head, whose `score` is set instead), `latency_ms` of the call
    (tokenize + forward), the model's `counts` (see Classifier) and its picker `model` label."""

    model: str
    label: str
    confidence: float | None
    probs: dict[str, float]
    latency_ms: float
    counts: dict[str, int | None]
    score: float | None = None


@dataclass
class BatchResult:
    """A CSV through one model: `n` rows, `metrics` against the label column (empty without one: accuracy,
    precision / recall / F1 (binary: of class 1; else macro), MCC, recall per class; Pearson / Spearman / MSE
    for a regression head), mean and p95 latency per example (ms), `predicted` class names (or scores) per
    row, the `rows` shown (header `columns`) and `csv_path`, the predictions file to download."""

    model: str
    n: int
    metrics: dict[str, Any]
    mean_ms: float
    p95_ms: float
    predicted: list[str]
    confidence: list[float]
    columns: list[str]
    rows: list[list[Any]]
    csv_path: Path | None
    texts: list[str] = field(default_factory=list)
    labels: list[str] | None = None


@dataclass
class CompareText:
    """The same input through two models: both predictions, whether their labels agree, and the latency
    difference b − a (ms)."""

    a: TextPrediction
    b: TextPrediction
    agree: bool
    latency_diff_ms: float


@dataclass
class CompareBatch:
    """The same CSV through two models: both results, the differences b − a in accuracy (None without a label
    column) and in mean latency (ms), the share of rows where they agree, and the rows where they disagree
    (header `columns`, at most SHOWN_ROWS of `n_disagree`)."""

    a: BatchResult
    b: BatchResult
    accuracy_diff: float | None
    mean_ms_diff: float
    agreement: float
    n_disagree: int
    columns: list[str]
    rows: list[list[Any]]


def _prediction(clf: Classifier, probs: np.ndarray, ms: float) -> TextPrediction:
    if clf.regression:
        score = float(probs[0])
        return TextPrediction(clf.label, f"{score:.4g}", None, {}, ms, dict(clf.counts), score)
    i = int(np.argmax(probs))
    return TextPrediction(clf.label, clf.label_names[i], float(probs[i]),
                          {n: float(p) for n, p in zip(clf.label_names, probs)}, ms, dict(clf.counts))


def _pair(clf: Classifier, pair: str | None) -> str | None:
    if not clf.is_pair:
        return None
    return check_text(pair, "the second sentence (this model's task takes a sentence pair)")


def predict_text(store: ModelStore, key: str, text: str, pair: str | None = None) -> TextPrediction:
    """Predict one text (or sentence pair, for a pair task) with the model `key` names.

    Loads the model on first use. Cost: one tokenization and one forward pass (plus the load, once).
    Raises AppInputError for an empty or over-long text, a missing second sentence, an unknown key.
    """
    t = check_text(text)
    clf = store.get(key)
    probs, ms = clf.predict(t, _pair(clf, pair))
    return _prediction(clf, probs, ms)


def _clip(s: str) -> str:
    return s if len(s) <= SHOWN_CHARS else s[:SHOWN_CHARS - 1] + "…"


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:60].strip("_") or "model"


def predict_batch(store: ModelStore, key: str, path: str | Path | None, text_column: str | None,
                  label_column: str | None = None, pair_column: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  out_dir: str | Path | None = None) -> BatchResult:
    """Predict every row of an uploaded CSV / TSV with the model `key` names; metrics when a label column
    is chosen.

    Every row is checked before the model runs (an empty or over-long text, a label that is not a class:
    AppInputError naming the row). One forward per row, so the latencies are per example;
    `on_progress(done, n)` after each. The predictions (row, text, label, predicted, confidence, latency,
    one probability column per class) go to `predictions_<model>.csv` in `out_dir` (default: a new
    temporary folder). Cost: n forward passes and one CSV write.
    """
    table = read_table(path)
    if not text_column:
        raise AppInputError("choose the text column")
    texts = [check_text(t, f"row {i} of column {text_column!r}") for i, t in enumerate(table.column(text_column), 1)]
    clf = store.get(key)
    pairs = None
    if clf.is_pair:
        if not pair_column:
            raise AppInputError("this model's task takes a sentence pair: choose the second text column")
        pairs = [check_text(t, f"row {i} of column {pair_column!r}")
                 for i, t in enumerate(table.column(pair_column), 1)]
    raw_labels = table.column(label_column) if label_column else None
    y = None
    if raw_labels is not None and not clf.regression:
        y = label_ids(raw_labels, clf.label_names, label_column)
    elif raw_labels is not None:
        try:
            y = [float(v) for v in raw_labels]
        except ValueError:
            raise AppInputError(f"column {label_column!r} must hold numbers for this regression model") from None
    probs, lat = clf.predict_many(texts, pairs, on_progress)
    if clf.regression:
        predicted = [f"{p[0]:.4g}" for p in probs]
        conf = [float(p[0]) for p in probs]
        metrics = regression_metrics(y, probs[:, 0]) if y is not None else {}
    else:
        idx = probs.argmax(1)
        predicted = [clf.label_names[i] for i in idx]
        conf = [float(probs[r, i]) for r, i in enumerate(idx)]
        metrics = classification_metrics(y, idx, len(clf.label_names)) if y is not None else {}
        if metrics:
            metrics["recall_per_class"] = dict(zip(clf.label_names, metrics["recall_per_class"]))
    metrics.pop("predicted_share_per_class", None)
    labels = None
    if y is not None:
        labels = [f"{v:.4g}" for v in y] if clf.regression else [clf.label_names[v] for v in y]

    columns = ["row", "text", *(["label"] if labels else []), "predicted",
               "score" if clf.regression else "confidence", "latency_ms"]
    full = [[i + 1, texts[i], *([labels[i]] if labels else []), predicted[i], round(conf[i], 6), round(float(lat[i]), 3)]
            for i in range(len(texts))]
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mft_app_"))
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"predictions_{_safe_name(clf.label)}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns + ([] if clf.regression else [f"p_{n}" for n in clf.label_names]))
        for r, p in zip(full, probs):
            w.writerow(r + ([] if clf.regression else [round(float(v), 6) for v in p]))
    shown = [[r[0], _clip(r[1]), *r[2:]] for r in full[:SHOWN_ROWS]]
    return BatchResult(clf.label, len(texts), metrics, float(lat.mean()), float(np.percentile(lat, 95)),
                       predicted, conf, columns, shown, csv_path, texts, labels)


def compare_text(store: ModelStore, key_a: str, key_b: str, text: str, pair: str | None = None) -> CompareText:
    """The same text through models a and b (predict_text each). Cost: two forwards (plus loads, once)."""
    if key_a == key_b:
        raise AppInputError("pick two different models to compare")
    a = predict_text(store, key_a, text, pair)
    b = predict_text(store, key_b, text, pair)
    return CompareText(a, b, a.label == b.label, b.latency_ms - a.latency_ms)


def compare_batch(store: ModelStore, key_a: str, key_b: str, path: str | Path | None, text_column: str | None,
                  label_column: str | None = None, pair_column: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  out_dir: str | Path | None = None) -> CompareBatch:
    """The same CSV through models a and b (predict_batch each): the accuracy and mean-latency differences
    b − a and the rows where the predicted labels differ. `on_progress(done, 2n)` counts both models' rows.
    Cost: 2n forwards."""
    if key_a == key_b:
        raise AppInputError("pick two different models to compare")
    table = read_table(path)  # checked once before either model runs
    n = len(table.rows)
    a = predict_batch(store, key_a, path, text_column, label_column, pair_column,
                      (lambda d, _: on_progress(d, 2 * n)) if on_progress else None, out_dir)
    b = predict_batch(store, key_b, path, text_column, label_column, pair_column,
                      (lambda d, _: on_progress(n + d, 2 * n)) if on_progress else None, a.csv_path.parent)
    acc_a, acc_b = a.metrics.get("accuracy"), b.metrics.get("accuracy")
    differ = [i for i in range(n) if a.predicted[i] != b.predicted[i]]
    columns = ["row", "text", *(["label"] if a.labels else []), "model a", "confidence a", "model b", "confidence b"]
    rows = [[i + 1, _clip(a.texts[i]), *([a.labels[i]] if a.labels else []), a.predicted[i], round(a.confidence[i], 4),
             b.predicted[i], round(b.confidence[i], 4)] for i in differ[:SHOWN_ROWS]]
    return CompareBatch(a, b, (acc_b - acc_a) if acc_a is not None and acc_b is not None else None,
                        b.mean_ms - a.mean_ms, 1 - len(differ) / n, len(differ), columns, rows)
