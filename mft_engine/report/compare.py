"""`mft compare RUN_DIR...`: the methods table over finetune results folders.

Reads each folder's results.json (written by `mft finetune`) and writes `<out>/compare_<timestamp>/`:

    methods.csv           one row per run: method, parameters, share, time, memory, stored bytes, gradient
                          checkpointing, settings, metrics on the evaluation half and the whole split
    methods.md            the same as a Markdown table (what a write-up pastes)
    methods_tradeoff.png  the primary metric on the evaluation half vs trainable share (log x), colour = train time
    results.json          the runs compared, the rows, versions and machine
    summary.txt           methods.md

Reported metrics come from the evaluation half; the whole split sits beside them for comparison with
published figures. Peak memory is each run's own high-water mark, comparable only between runs made
in their own processes (as `mft finetune` runs are).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .folder import ResultsFolder
from .machine import machine_info, versions

#: keys a finetune results.json must hold to be compared
REQUIRED = ("method", "trainable_params", "total_params", "trainable_share", "train_s", "peak_mem_bytes",
            "stored_bytes", "metrics", "metrics_whole", "primary_metric", "config")


@dataclass
class CompareResult:
    """A written comparison: its folder, the table rows (one per run, in the order given) and the record."""

    out_dir: Path
    rows: list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)


def read_run(path: str | Path) -> dict[str, Any]:
    """results.json of a finetune results folder, as a dict.

    Raises DataError (one line naming the folder) when the folder is missing, has no results.json, holds
    another kind of results (a sweep, a multi-seed run, an `mft run` study) or lacks a finetune key.
    """
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"RUN_DIR {p} is not a folder; expected a finetune results folder (results/finetune_*)")
    f = p / "results.json"
    if not f.is_file():
        raise DataError(f"RUN_DIR {p} is not a finetune results folder (no results.json in it)")
    try:
        rec = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"RUN_DIR {p}: results.json is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(rec, dict):
        raise DataError(f"RUN_DIR {p}: results.json is not a finetune record (not a JSON object)")
    kind = rec.get("kind")
    if kind == "sweep":
        best = (rec.get("best") or {}).get("path", "cells/<cell-id>")
        raise DataError(f"RUN_DIR {p} is a sweep folder; pass one of its cells, e.g. {p / best}")
    if kind == "finetune_seeds":
        raise DataError(f"RUN_DIR {p} is a multi-seed folder; pass its runs, e.g. {p / 'runs' / 'seed-1'}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DataError(f"RUN_DIR {p} is not a finetune results folder (results.json lacks {', '.join(missing)})")
    return rec


def _mib(b: float | None) -> float | None:
    return None if b is None else b / 2**20


def method_label(rec: dict[str, Any]) -> str:
    """The run's label in the table: what its method recorded (`Method.describe`: the settings that tell
    its runs apart, e.g. "lora (attn-qkv, r=8)"), else the method's name (a record written before labels)."""
    return rec.get("method_label") or rec["method"]


def method_row(run_dir: Path, rec: dict[str, Any], metric_names: Sequence[str]) -> dict[str, Any]:
    """One row of the methods table from a finetune record (None where the run has no such metric)."""
    c = rec["config"]
    notes = rec.get("method_notes") or {}
    row: dict[str, Any] = {
        "run": run_dir.name,
        "method": method_label(rec),
        "task": rec.get("task"),
        "model": (rec.get("model") or {}).get("source"),
        "trainable_params": rec["trainable_params"],
        "total_params": rec["total_params"],
        "trainable_share": rec["trainable_share"],
        "train_s": rec["train_s"],
        "peak_mem_mib": _mib(rec["peak_mem_bytes"]),
        "peak_cuda_mib": _mib(rec.get("peak_cuda_bytes")),
        "stored_bytes": rec["stored_bytes"],
        "gradient_checkpointing": bool(rec.get("gradient_checkpointing", notes.get("gradient_checkpointing", False))),
        "precision": c.get("precision"),
        "lr": c.get("lr"),
        "batch_size": c.get("batch_size"),
        "steps": (rec.get("training") or {}).get("steps"),
        "samples": (rec.get("data") or {}).get("samples_used"),
        "seed": c.get("seed"),
    }
    for m in metric_names:
        row[f"evaluation_{m}"] = rec["metrics"].get(m)
    for m in metric_names:
        row[f"whole_{m}"] = rec["metrics_whole"].get(m)
    return row


def _md_value(k: str, v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if k == "trainable_share":
        return f"{100 * v:.4g}%"
    if k in ("trainable_params", "total_params", "stored_bytes"):
        return f"{v:,}"
    if k in ("train_s", "peak_mem_mib", "peak_cuda_mib"):
        return f"{v:.1f}"
    if k == "lr":
        return f"{v:g}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


#: Markdown columns (CSV has every row key) and their headers
_MD_COLUMNS = [("method", "method"), ("trainable_params", "trainable params"), ("trainable_share", "share"),
               ("train_s", "train s"), ("peak_mem_mib", "peak MiB"), ("stored_bytes", "stored bytes"),
               ("gradient_checkpointing", "grad. ckpt"), ("precision", "precision"), ("steps", "steps")]


def methods_markdown(rows: list[dict[str, Any]], metric_names: Sequence[str]) -> str:
    """The methods table as GitHub Markdown: one row per run; metrics on the evaluation half, then the whole split."""
    cols = list(_MD_COLUMNS)
    if any(r.get("peak_cuda_mib") is not None for r in rows):
        cols.insert(5, ("peak_cuda_mib", "peak CUDA MiB"))
    cols += [(f"evaluation_{m}", f"{m} (eval. half)") for m in metric_names]
    cols += [(f"whole_{m}", f"{m} (whole)") for m in metric_names]
    cols.append(("run", "run"))
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---" if k in ("method", "run", "precision") else "---:" for k, _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_value(k, r.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_tradeoff(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Scatter of the evaluation-half `metric` against trainable share (log x), colour by train time,
    each point labelled with its method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get(f"evaluation_{metric}") is not None and r["trainable_share"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if pts:
        x = [100 * r["trainable_share"] for r in pts]
        y = [r[f"evaluation_{metric}"] for r in pts]
        t = [r["train_s"] for r in pts]
        sc = ax.scatter(x, y, c=t, cmap="viridis", s=80, edgecolors="black", linewidths=0.5)
        fig.colorbar(sc, ax=ax, label="train time (s)")
        for xi, yi, r in zip(x, y, pts):
            ax.annotate(r["method"], (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of the base model, log scale)")
    ax.set_ylabel(f"{metric} (evaluation half)")
    ax.set_title("Methods: metric vs trainable share vs time")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path = "results") -> CompareResult:
    """Read finetune results folders and write the methods table to `out/compare_<timestamp>/`.

    Every folder is read and checked before anything is written (DataError naming the first bad one).
    Metric columns are the union of the runs' task metrics, in first-seen order; the plot uses `accuracy`
    when every run has it, else the first run's primary metric. Cost: one results.json read per run.
    """
    if not run_dirs:
        raise DataError("mft compare needs at least one RUN_DIR (a finetune results folder)")
    paths = [Path(p) for p in run_dirs]
    records = [read_run(p) for p in paths]
    metric_names: list[str] = []
    for rec in records:
        for m in rec["metrics"]:
            if m not in metric_names:
                metric_names.append(m)
    rows = [method_row(p, rec, metric_names) for p, rec in zip(paths, records)]
    plot_metric = ("accuracy" if all("accuracy" in rec["metrics"] for rec in records)
                   else records[0]["primary_metric"])
    md = methods_markdown(rows, metric_names)
    record = {
        "kind": "compare",
        "runs": [str(p.resolve()) for p in paths],
        "metric_names": metric_names,
        "plot_metric": plot_metric,
        "rows": rows,
        "versions": versions(),
        "machine": machine_info(),
        "run_machines": [rec.get("machine", {}).get("cpu") for rec in records],
        "run_commits": [rec.get("versions", {}).get("git_commit") for rec in records],
    }
    with ResultsFolder(out, "compare") as folder:
        folder.write_csv("methods.csv", [{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
        folder.write_text("methods.md", md)
        plot_tradeoff(rows, plot_metric, folder.path / "methods_tradeoff.png")
        folder.write_json("results.json", record)
        notes = []
        if len(set(record["run_machines"])) > 1:
            notes.append("note: the runs come from different machines; times and memory do not compare directly.")
        folder.write_text("summary.txt", md + ("\n" + "\n".join(notes) + "\n" if notes else ""))
        out_dir = folder.commit()
    return CompareResult(out_dir, rows, record)
