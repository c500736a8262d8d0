"""A sweep's report: the table of cells (axis values, status, metrics on both halves and the whole split),
the best cell chosen on the scoring half, sweep.csv, summary.txt and the 2-D heatmap."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .grid import LOWER_IS_BETTER, Cell, SweepConfig, format_value, grid_text


def _metric_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in records:
        for m in r.get("metrics", {}):
            if m not in names:
                names.append(m)
    return names


def table_rows(config: SweepConfig, cells: list[Cell], entries: list[dict], root: Path):
    """(one table row per cell in grid order, {cell id: results.json} of the finished cells). A row holds
    the axis values, status, attempts, the metrics on the scoring / evaluation half and the whole split,
    time, trainable parameters, peak memory, steps and the error (None where the cell did not finish).
    Cost: reading each finished cell's results.json."""
    records = {e["id"]: json.loads((root / e["path"] / "results.json").read_text())
               for e in entries if e["status"] == "finished"}
    metrics = _metric_columns(records.values())
    rows = []
    for cell, e in zip(cells, entries):
        row: dict[str, Any] = {"cell": cell.id, **{k: format_value(v) if isinstance(v, list) else v
                                                   for k, v in cell.values.items()},
                               "status": e["status"], "attempts": e["attempts"]}
        rec = records.get(cell.id)
        for half, key in (("scoring", "metrics_scoring_half"), ("evaluation", "metrics"), ("whole", "metrics_whole")):
            for m in metrics:
                row[f"{half}_{m}"] = rec[key].get(m) if rec else None
        for k in ("train_s", "trainable_params", "peak_mem_bytes"):
            row[k] = rec.get(k) if rec else None
        row["steps"] = rec["training"]["steps"] if rec else None
        row["stopped_early"] = rec["training"]["stopped_early"] if rec else None
        row["error"] = e["error"]
        rows.append(row)
    return rows, records

def best_cell(rows: list[dict], records: dict[str, dict], entries: list[dict]) -> dict[str, Any] | None:
    """The finished cell with the best primary metric on the scoring half (ties: the first in grid order)."""
    finished = [r for r in rows if r["status"] == "finished"]
    if not finished:
        return None
    metric = records[finished[0]["cell"]]["primary_metric"]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def key(row: dict) -> float:
        v = row.get(f"scoring_{metric}")
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else sign * v

    row = max(finished, key=key)  # max keeps the first of equal keys
    rec = records[row["cell"]]
    entry = next(e for e in entries if e["id"] == row["cell"])
    return {"id": row["cell"], "values": entry["values"], "path": entry["path"], "metric": metric,
            "scoring_half": rec["metrics_scoring_half"], "evaluation_half": rec["metrics"],
            "whole": rec["metrics_whole"], "n": {k: rec["data"][k] for k in
                                                 ("n_scoring_half", "n_evaluation_half", "n_validation")},
            "train_s": rec["train_s"], "steps": rec["training"]["steps"]}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """sweep.csv: the rows under a header of the first row's keys (nothing written for no rows)."""
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)

def _cellfmt(v: Any, width: int) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:.4f}".rjust(width)
    return str(v).rjust(width)


def sweep_summary(record: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """summary.txt of a sweep: what ran, the best cell on both halves and the whole split, and the table."""
    cfg = record["config"]
    fixed = cfg["fixed"]
    best = record["best"]
    m = best["metric"]
    lines = [
        (f"Sweep of {fixed.get('method', 'full')} on {fixed.get('task', 'sst2')} "
         f"(model {fixed.get('model', 'minilm')}): {record['n_cells']} cells over {' x '.join(record['grid'])}"),
        "grid   " + grid_text(record["grid"]),
        "fixed  " + (" ".join(f"{k}={format_value(v)}" for k, v in fixed.items()) or "(defaults)"),
        (f"cells  {record['n_finished']} finished ({record['n_finished_earlier']} in an earlier session), "
         f"{record['n_failed']} failed"),
        (f"machine {record['machine']['cpu']}  threads {record['machine']['torch_threads']}  "
         f"commit {record['versions'].get('git_commit')}"),
        "",
        f"best cell (highest {m} on the scoring half): {best['id']}",
        f"  scoring half     {m} {best['scoring_half'][m]:.4f}  (chooses; n={best['n']['n_scoring_half']})",
        ("  evaluation half  " + "  ".join(f"{k} {v:.4f}" for k, v in best["evaluation_half"].items())
         + f"  (reported; n={best['n']['n_evaluation_half']})"),
        ("  whole split      " + "  ".join(f"{k} {v:.4f}" for k, v in best["whole"].items())
         + f"  (n={best['n']['n_validation']}; contains the scoring half)"),
        "",
    ]
    cols = ["cell", "status", f"scoring_{m}", f"evaluation_{m}", f"whole_{m}", "train_s"]
    widths = [max(len("cell"), *(len(r["cell"]) for r in rows)), 11] + [max(len(c), 9) for c in cols[2:]]
    lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    for r in rows:
        cells = [r["cell"].ljust(widths[0])] + [_cellfmt(r.get(c), w) for c, w in zip(cols[1:], widths[1:])]
        lines.append("  ".join(cells) + ("  <- best" if r["cell"] == best["id"] else ""))
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "failed cells:"] + [f"  {r['cell']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot_sweep_heatmap(grid: Mapping[str, Sequence[Any]], rows: list[dict], best: dict, path: Path) -> None:
    """Two heatmaps of a 2-D grid: the primary metric on the scoring half (which chose) and on the
    evaluation half (reported); the best cell outlined, failed cells blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    (ya, yv), (xa, xv) = list(grid.items())
    m = best["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(xv), 1.5 + 0.7 * len(yv)), squeeze=False)
    for ax, half in zip(axes[0], ("scoring", "evaluation")):
        z = np.full((len(yv), len(xv)), np.nan)
        for k, r in enumerate(rows):
            v = r.get(f"{half}_{m}")
            if v is not None:
                z[k // len(xv), k % len(xv)] = v
        im = ax.imshow(z, cmap="viridis", aspect="auto")
        for i in range(len(yv)):
            for j in range(len(xv)):
                if not np.isnan(z[i, j]):
                    ax.text(j, i, f"{z[i, j]:.3f}", ha="center", va="center", fontsize=8,
                            color="white" if z[i, j] < np.nanmean(z) else "black")
        bi = next(k for k, r in enumerate(rows) if r["cell"] == best["id"])
        ax.add_patch(Rectangle((bi % len(xv) - 0.5, bi // len(xv) - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_xticks(range(len(xv)), [format_value(v) for v in xv], rotation=30)
        ax.set_yticks(range(len(yv)), [format_value(v) for v in yv])
        ax.set_xlabel(xa)
        ax.set_ylabel(ya)
        ax.set_title(f"{m}, {half} half" + (" (chooses)" if half == "scoring" else " (reported)"), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


