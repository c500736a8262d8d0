"""Inspecting a results folder: its figures drawn from the files the commands wrote, never recomputed.

- `mft run`: the zeroed share per layer × module as a heatmap (layers.csv, one fraction's column), and
  accuracy against the share removed (results.json: before, after and the random control per fraction);
- `mft finetune`: the metrics on each validation half (results.json) and its training-loss plot;
- `mft compare`: the methods table (methods.csv) and methods_tradeoff.png;
- `mft influence`: removal_curves.png and the removal sweeps (removal_sweeps.csv);
- `mft validate-scorer`: the ground-truth verdict per scorer (scorers.csv) and scorer_vs_truth.png;
- anything else with a results.json: its summary.txt.

Images are returned as PIL images (read from the folder's PNG or drawn with matplotlib into memory), so
nothing is written, in the folder or elsewhere.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report.plots import pyplot
from .sources import AppInputError, FolderInfo, config_value, describe_folder

#: Rows of a table shown in the page (the rest stay in the folder's CSV).
MAX_TABLE_ROWS = 200


@dataclass
class Inspection:
    """What the Inspect tab shows of a folder: `kind`, a Markdown `summary`, the `heatmap` and `curves`
    images (PIL, or None when the folder has no such figure), a `table` (header, rows) and the run's
    `fractions` (for the heatmap's fraction picker; `fraction` is the one drawn)."""

    path: Path
    kind: str
    summary: str
    heatmap: Any = None
    curves: Any = None
    table_header: list[str] = field(default_factory=list)
    table_rows: list[list[Any]] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    fraction: float | None = None


def _png(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")  # a copy in memory: the file is closed at once


def _figure_image(fig):
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AppInputError(f"{path} cannot be read as CSV ({type(e).__name__})") from None


def module_of(parameter: str) -> tuple[str, str]:
    """(layer, module) of a parameter name: `bert.encoder.layer.3.attention.self.query.weight` →
    (`layer.3`, `attention.self.query`); embeddings, pooler and classifier keep their sub-module name."""
    stem = re.sub(r"\.(weight|bias)$", "", parameter)
    m = re.search(r"(?:^|\.)layer\.(\d+)\.(.+)$", stem)
    if m:
        return f"layer.{m.group(1)}", m.group(2)
    for group in ("embeddings", "pooler", "classifier"):
        if group in stem.split("."):
            rest = stem.split(group, 1)[1].lstrip(".")
            return group, rest or group
    head, _, tail = stem.rpartition(".")
    return head or stem, tail or stem


def zeroed_grid(rows: list[dict[str, str]], column: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(layers, modules, share[layer][module]) from layers.csv rows: the zeroed count in `column` over the
    elements, per (layer, module) cell, weights and biases together; NaN where a layer has no such module.
    Layers keep the file's order; encoder modules come first in their order of appearance."""
    zeroed: dict[tuple[str, str], int] = {}
    numel: dict[tuple[str, str], int] = {}
    layers: list[str] = []
    modules: list[str] = []
    for r in rows:
        layer, module = module_of(r["parameter"])
        if layer not in layers:
            layers.append(layer)
        if module not in modules:
            modules.append(module)
        cell = (layer, module)
        zeroed[cell] = zeroed.get(cell, 0) + int(float(r.get(column) or 0))
        numel[cell] = numel.get(cell, 0) + int(float(r["numel"]))
    enc = [m for m in modules if any((layer, m) in numel for layer in layers if layer.startswith("layer."))]
    modules = enc + [m for m in modules if m not in enc]
    grid = [[zeroed[(layer, m)] / numel[(layer, m)] if numel.get((layer, m)) else math.nan for m in modules]
            for layer in layers]
    return layers, modules, grid


def draw_heatmap(layers: list[str], modules: list[str], grid: list[list[float]], title: str):
    """The zeroed-share grid as a heatmap image (percent per cell, written in the cell). Cost: one small
    matplotlib figure."""
    import numpy as np

    plt = pyplot()
    data = np.array(grid, dtype=float) * 100
    fig, ax = plt.subplots(figsize=(max(6.5, 0.75 * len(modules) + 2.5), max(3.0, 0.42 * len(layers) + 2.2)))
    masked = np.ma.masked_invalid(data)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6")  # grey: the layer has no such module
    im = ax.imshow(masked, cmap=cmap, aspect="auto", vmin=0, vmax=max(float(np.nanmax(data)) if masked.count() else 1, 1e-9))
    ax.set_xticks(range(len(modules)))
    ax.set_xticklabels(modules, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(layers, fontsize=8)
    if len(layers) * len(modules) <= 400:
        peak = float(np.nanmax(data)) if masked.count() else 0.0
        for i in range(len(layers)):
            for j in range(len(modules)):
                if not math.isnan(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if data[i, j] < 0.6 * peak else "black")
    fig.colorbar(im, ax=ax, label="% of the cell's parameters zeroed")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("module")
    ax.set_ylabel("layer")
    fig.tight_layout()
    return _figure_image(fig)


def _metric(m: Any, name: str) -> float | None:
    v = m.get(name) if isinstance(m, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def run_curve(record: dict[str, Any], metric: str):
    """`metric` against the share of eligible parameters zeroed: before (at 0), after each fraction, and the
    random control, as recorded in results.json. None when the record has no such metric."""
    before = _metric(record.get("before"), metric)
    fr = [f for f in record.get("fractions", []) if isinstance(f, dict) and isinstance(f.get("fraction"), (int, float))]
    if before is None or not fr:
        return None
    fr.sort(key=lambda f: f["fraction"])
    xs = [0.0] + [100 * f["fraction"] for f in fr]
    after = [before] + [_metric(f.get("after"), metric) for f in fr]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(xs, after, marker="o", label="detrimental mask")
    if all("control" in f for f in fr):
        ax.plot(xs, [before] + [_metric(f["control"], metric) for f in fr], marker="s", ls="--",
                label="random control (same count)")
    ax.set_xlabel("% of the detrimental eligible parameters zeroed")
    ax.set_ylabel(f"{metric} (whole validation split)")
    ax.set_title(f"{metric} as parameters are removed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _figure_image(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _inspect_run(info: FolderInfo, fraction: float | None) -> Inspection:
    rec = info.record
    fractions = sorted(float(f["fraction"]) for f in rec["fractions"]
                       if isinstance(f, dict) and isinstance(f.get("fraction"), (int, float)))
    if fraction is None or not any(abs(fraction - f) < 1e-12 for f in fractions):
        fraction = fractions[-1] if fractions else None
    counts = rec.get("counts", {})
    metric = "accuracy" if "accuracy" in (rec.get("before") or {}) else "pearson"
    lines = [(f"**mft run** `{info.path.name}` — model `{config_value(rec, 'model')}`, task "
              f"`{config_value(rec, 'task')}`, {_fmt(counts.get('total'))} parameters, "
              f"{_fmt(counts.get('detrimental_eligible'))} detrimental eligible."),
             "", "| fraction | zeroed | " + metric + " after | random control |", "|---|---|---|---|",
             f"| 0 (before) | 0 | {_fmt(_metric(rec.get('before'), metric))} | |"]
    for f in sorted((f for f in rec["fractions"] if isinstance(f, dict)), key=lambda f: f.get("fraction", 0)):
        lines.append(f"| {f.get('fraction'):g} | {_fmt(f.get('k'))} | {_fmt(_metric(f.get('after'), metric))} | "
                     f"{_fmt(_metric(f.get('control'), metric))} |")
    out = Inspection(info.path, "run", "\n".join(lines), fractions=fractions, fraction=fraction)
    layers_csv = info.path / "layers.csv"
    if layers_csv.is_file() and fraction is not None:
        header, rows = _read_csv(layers_csv)
        column = f"zeroed_{fraction:g}"
        if column not in header or "parameter" not in header or "numel" not in header:
            raise AppInputError(f"{layers_csv} has no column {column!r} (or no parameter / numel columns)")
        layers, modules, grid = zeroed_grid(rows, column)
        out.heatmap = draw_heatmap(layers, modules, grid, f"Zeroed share per layer × module, fraction {fraction:g} "
                                                          f"({info.path.name})")
        per_layer = {}
        for r in rows:
            g = per_layer.setdefault(r.get("layer", ""), [0, 0])
            g[0] += int(float(r["numel"]))
            g[1] += int(float(r.get(column) or 0))
        out.table_header = ["layer", "parameters", "zeroed", "% zeroed"]
        out.table_rows = [[k, n, z, round(100 * z / n, 4) if n else 0.0] for k, (n, z) in per_layer.items()]
    else:
        out.summary += "\n\n(no layers.csv in this folder: no heatmap)"
    out.curves = run_curve(rec, metric)
    return out


def _csv_table(path: Path, columns: list[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    header, rows = _read_csv(path)
    cols = [c for c in (columns or header) if c in header]
    return cols, [[r.get(c, "") for c in cols] for r in rows[:MAX_TABLE_ROWS]]


def inspect_folder(path: str | Path, fraction: float | None = None) -> Inspection:
    """What the Inspect tab shows of the results folder at `path` (module docstring), read from its files.

    `fraction` picks the heatmap's mask in an `mft run` folder (default: the largest). Cost: reading the
    folder's JSON / CSV / PNG files and drawing at most two small figures. Raises AppInputError for a path
    that is not a results folder the engine wrote, or a file in it that cannot be read.
    """
    info = describe_folder(path)
    rec = info.record
    p = info.path
    if info.kind == "checkpoint":
        raise AppInputError(f"{p} is a model folder, not a results folder: load it in the Models tab; Inspect "
                            "reads the folders that mft run, finetune, compare, influence and validate-scorer write")
    if info.kind == "run":
        return _inspect_run(info, fraction)
    out = Inspection(p, info.kind, "")
    if info.kind == "finetune":
        halves = [("evaluation half", rec.get("metrics")), ("scoring half", rec.get("metrics_scoring_half")),
                  ("whole split", rec.get("metrics_whole"))]
        names = sorted({k for _, m in halves if isinstance(m, dict) for k in m})
        out.summary = (f"**mft finetune** `{p.name}` — method `{rec['method']}`, task `{rec.get('task')}`, "
                       f"{_fmt(rec.get('trainable_params'))} trainable of {_fmt(rec.get('total_params'))} "
                       f"parameters, {_fmt(rec.get('stored_bytes'))} bytes stored, trained in "
                       f"{_fmt(rec.get('train_s'))} s." + ("\n\n" + "\n".join(info.notes) if info.notes else ""))
        out.table_header = ["split", *names]
        out.table_rows = [[h, *[_fmt(m.get(k, "")) for k in names]] for h, m in halves if isinstance(m, dict)]
        if (p / "training_loss.png").is_file():
            out.curves = _png(p / "training_loss.png")
    elif info.kind == "compare":
        out.summary = f"**mft compare** `{p.name}` — {len(rec.get('runs', []))} runs; the methods table:"
        if (p / "methods.csv").is_file():
            out.table_header, out.table_rows = _csv_table(p / "methods.csv")
        if (p / "methods_tradeoff.png").is_file():
            out.curves = _png(p / "methods_tradeoff.png")
    elif info.kind == "influence":
        out.summary = (f"**mft influence** `{p.name}` — removal sweeps: accuracy and its change against the "
                       "unmasked model on held-out rows and the evaluation half (Holm-adjusted McNemar p):")
        if (p / "removal_sweeps.csv").is_file():
            # columns absent from a folder (no held-out rows asked for) are left out by _csv_table
            out.table_header, out.table_rows = _csv_table(
                p / "removal_sweeps.csv", ["checkpoint", "scorer", "arm", "n_removed", "heldout_accuracy",
                                           "heldout_delta_accuracy", "heldout_p_accuracy_holm", "evaluation_accuracy",
                                           "evaluation_delta_accuracy", "evaluation_p_accuracy_holm",
                                           "scoring_accuracy"])
        if (p / "removal_curves.png").is_file():
            out.curves = _png(p / "removal_curves.png")
    elif info.kind == "validate":
        out.summary = (f"**mft validate-scorer** `{p.name}` — ground truth on {_fmt(rec.get('n_params'))} parameters; "
                       f"best signed scorer: `{rec.get('best_signed')}`. The verdict per scorer:")
        if (p / "scorers.csv").is_file():
            out.table_header, out.table_rows = _csv_table(
                p / "scorers.csv", ["name", "signed", "n_judged", "sign_accuracy", "balanced_accuracy", "mcc",
                                    "spearman", "top100_precision"])
        if (p / "scorer_vs_truth.png").is_file():
            out.curves = _png(p / "scorer_vs_truth.png")
    else:
        out.summary = f"results folder `{p.name}`"
    if (p / "summary.txt").is_file() and info.kind in ("results", "influence", "validate"):
        text = (p / "summary.txt").read_text(encoding="utf-8", errors="replace")[:20_000]
        out.summary += "\n\n```\n" + text + "\n```"
    return out
