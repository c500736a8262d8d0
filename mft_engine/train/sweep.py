"""Grid search over `FinetuneConfig` fields (`mft sweep`) and multi-seed runs (`mft finetune --seeds`).

A sweep runs one `finetune` per cell of the grid (the product of its axes) into
`sweep_<name>/cells/<cell-id>/`, a finetune results folder each, and writes beside them:

    sweep.json         the grid, the fixed settings and every cell's status (updated after each cell)
    sweep.csv          one row per cell: axis values, status, metrics on both halves and the whole split
    summary.txt        the best cell and the table
    sweep_heatmap.png  (2-D grids) the primary metric on the scoring and the evaluation half
    results.json       config, versions, machine, cells and the best cell

Honest evaluation (DESIGN.md): the best cell is the one with the highest primary metric on the seeded
scoring half of the validation split; its figures are reported on the other, evaluation half (the whole
split is shown beside them for comparison with published numbers, but it contains the scoring half).

Resuming: a cell is finished when `cells/<cell-id>/results.json` exists. A cell is trained in
`cells/.<cell-id>.run/` and renamed into place only when its run succeeded, so an interrupted sweep
(Ctrl-C, kill) leaves finished cells intact; `sweep(..., resume=DIR)` or re-running with the same `out`
and `name` runs only the cells that are not finished. A cell that fails (bad value for this model, out of
memory) is recorded as failed and the sweep goes on; a resumed sweep tries it again.

Multi-seed runs (`finetune_seeds`) are a sweep over `seed` with a different summary: the mean and a
percentile-bootstrap 95% CI of every metric across seeds (evaluate/bootstrap.py).
"""
from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import itertools
import json
import logging
import math
import re
import shutil
import time
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MftError, ResumeError
from ..evaluate.bootstrap import DEFAULT_RESAMPLES, bootstrap_ci
from ..fields import SEED_MAX, check_field_types, check_int_range, flat_type_hints, help_field
from ..report import ResultsFolder, machine_info, versions
from ..report.folder import PARTIAL_SUFFIX, jsonable
from ..report.progress import Progress
from .config import FinetuneConfig
from .run import finetune

log = logging.getLogger("mft_engine")

SWEEP_FILE = "sweep.json"
CELLS_DIR = "cells"
#: metrics where lower is better (everything else: higher is better)
LOWER_IS_BETTER = frozenset({"mse"})
#: fields a grid cannot vary or fix: the sweep decides where each cell is written
_SWEEP_OWNED = frozenset({"out"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9._=,+-]")


# --------------------------------------------------------------------------------------------- grid parsing

def _field_types() -> dict[str, Any]:
    return flat_type_hints(FinetuneConfig)


def _check_field(name: str) -> Any:
    """The type of FinetuneConfig field `name`; ConfigError naming it when there is no such field."""
    hints = _field_types()
    if name not in hints:
        raise ConfigError(f"--grid field {name!r} is not a finetune setting; known: {', '.join(sorted(hints))}")
    return hints[name]


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def parse_value(name: str, text: str) -> Any:
    """One grid value as the type of FinetuneConfig field `name` (int, float, bool, str, None for an
    optional field given 'none', a list field's string left for the config to parse).

    Raises ConfigError naming the field for an unknown field or a value that does not parse.
    """
    tp = _check_field(name)
    args = typing.get_args(tp)
    optional = isinstance(tp, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    text = text.strip()
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if base is bool:
            low = text.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ValueError(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"--grid {name}={text!r}: expected {_describe(base)}"
                          + (" or none" if optional else "")) from None
    if not text:
        raise ConfigError(f"--grid {name} has an empty value")
    return text  # str fields, and list fields (e.g. save_at '0.6,0.75') that FinetuneConfig parses


def parse_grid(specs: Iterable[str] | Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Grid axes from `field=v1,v2,...` strings (or a mapping field → values), in the order given.

    Values are separated by commas, or by semicolons when a value itself holds commas
    (`bitfit_groups=attention,classifier;all`, `save_at=0.6,0.75;0.9`). Each string value is parsed with
    the field's type (`parse_value`). Raises ConfigError for an unknown field, a field given twice, an
    axis with no values, or `out` (the sweep decides each cell's folder).
    """
    grid: dict[str, list[Any]] = {}
    items: list[tuple[str, Any]]
    if isinstance(specs, Mapping):
        items = list(specs.items())
    else:
        items = []
        for spec in specs:
            name, sep, values = str(spec).partition("=")
            if not sep:
                raise ConfigError(f"--grid {spec!r} is not field=value,value,... (e.g. lr=1e-4,5e-5)")
            items.append((name, values))
    for raw_name, values in items:
        name = str(raw_name).strip().replace("-", "_")
        if name in _SWEEP_OWNED:
            raise ConfigError(f"--grid {name} cannot be an axis: the sweep writes each cell under <sweep>/cells/")
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice; list all its values in one --grid")
        if isinstance(values, str):
            sep = ";" if ";" in values else ","
            parts = [v for v in values.split(sep) if v.strip()]
            parsed = [parse_value(name, v) for v in parts]
        else:
            _check_field(name)
            parsed = list(values) if isinstance(values, (list, tuple)) else [values]
            for v in parsed:
                check_field_types(FinetuneConfig, {name: v})
        if not parsed:
            raise ConfigError(f"--grid {name} has no values; expected e.g. {name}=v1,v2")
        grid[name] = parsed
    return grid


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: distinct values never share an id
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt(x) for x in v)
    return "none" if v is None else str(v)


def cell_id(values: Mapping[str, Any]) -> str:
    """The stable folder name of a cell: `batch_size=16,lr=0.0001` (axes in grid order).

    Characters outside [A-Za-z0-9._=,+-] become '_'; when that changed something, or the name passes 96
    characters, 8 hex digits of a SHA-1 of the values keep it unique.
    """
    raw = ",".join(f"{k}={_fmt(v)}" for k, v in values.items())
    safe = _SAFE_ID_RE.sub("_", raw)
    if safe != raw or len(safe) > 96:
        digest = hashlib.sha1(json.dumps(jsonable(dict(values)), sort_keys=True).encode()).hexdigest()[:8]
        safe = f"{safe[:80]}-{digest}"
    return safe


@dataclass
class Cell:
    """One grid point: its id (folder name), the axis values (normalized by FinetuneConfig) and config."""

    id: str
    values: dict[str, Any]
    config: FinetuneConfig


def _json_roundtrip(x: Any) -> Any:
    return json.loads(json.dumps(jsonable(x)))


@dataclass
class SweepConfig:
    """Configuration of `mft sweep`: a grid over FinetuneConfig fields, the fields held fixed, and where
    the sweep folder goes. `to_dict()` is stored in sweep.json and results.json."""

    grid: dict[str, list[Any]] = help_field("axes: FinetuneConfig field -> values; the cells are their product "
                                            "(CLI: --grid field=v1,v2,...)", {})
    fixed: dict[str, Any] = help_field("FinetuneConfig fields held fixed in every cell (CLI: the finetune flags)", {})
    out: str = help_field("parent folder of the sweep folder", "results")
    name: str | None = help_field("sweep folder name sweep_<name>; re-running with the same --out and --name "
                                  "resumes it (default: sweep_<timestamp>)", None)

    def __post_init__(self) -> None:
        self.grid = parse_grid(self.grid)
        known = set(_field_types())
        self.fixed = {str(k).replace("-", "_"): v for k, v in dict(self.fixed).items() if v is not None}
        unknown = sorted(set(self.fixed) - known)
        if unknown:
            raise ConfigError(f"unknown finetune setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        check_field_types(FinetuneConfig, self.fixed)
        owned = sorted(set(self.fixed) & _SWEEP_OWNED)
        if owned:
            raise ConfigError(f"fixed setting {owned[0]!r} is decided by the sweep; pass SweepConfig.out instead")
        both = [k for k in self.grid if k in self.fixed]
        if both:
            raise ConfigError(f"--{both[0].replace('_', '-')} is both a fixed setting and a --grid axis; give one")
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ConfigError(f"--name {self.name!r} must be letters, digits, '.', '_' or '-' (a folder name)")

    def cells(self) -> list[Cell]:
        """Every cell in grid order (the last axis varies fastest), each config built and validated.

        Raises ConfigError naming the cell when a combination is invalid, or when two cells coincide
        after normalization (e.g. lr=1e-4,0.0001). Cost: one FinetuneConfig per cell, no I/O.
        """
        if not self.grid:
            raise ConfigError("--grid is required: give at least one axis, e.g. --grid lr=1e-4,5e-5")
        names = list(self.grid)
        cells: list[Cell] = []
        seen: set[str] = set()
        for combo in itertools.product(*(self.grid[n] for n in names)):
            given = dict(zip(names, combo))
            try:
                cfg = FinetuneConfig.of(**{**self.fixed, **given, "out": self.out})
            except TypeError as e:  # a mapping-built grid with a bad value type
                raise ConfigError(f"--grid cell {cell_id(given)}: {e}") from None
            except ConfigError as e:
                raise ConfigError(f"--grid cell {cell_id(given)}: {e}") from None
            flat = cfg.to_dict()
            values = {n: flat[n] for n in names}
            cid = cell_id(values)
            if cid in seen:
                raise ConfigError(f"--grid lists the cell {cid} twice; give each value once")
            seen.add(cid)
            cells.append(Cell(cid, values, cfg))
        return cells

    def to_dict(self) -> dict[str, Any]:
        return _json_roundtrip(dataclasses.asdict(self))


# ------------------------------------------------------------------------------------------ running cells

class _CellProgress(Progress):
    """A cell's phases shown as text on the sweep's one bar (steps done / total), at most 5 times a second."""

    def __init__(self, outer: Progress, label: str):
        self.outer, self.label = outer, label
        self.name, self.total, self.count, self._shown = "", None, 0, 0.0

    def phase(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.count = name, total, 0
        self._show(force=True)

    def advance(self, n: int = 1, **info: Any) -> None:
        self.count += n
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._shown > 0.2:
            self._shown = now
            of = f"/{self.total}" if self.total else ""
            self.outer.advance(0, cell=self.label, phase=f"{self.name} {self.count}{of}")


def run_cell(cell: Cell, parent: Path, progress: Progress | None = None) -> Path:
    """Fine-tune one cell into `parent/<cell.id>/` (a finetune results folder); returns that path.

    The run is written under `parent/.<cell.id>.run/` (removed first: an interrupted attempt's leftovers)
    and renamed into place only after `finetune` committed it, so `parent/<cell.id>/results.json` exists
    only for finished cells. Errors propagate (the staging folder is removed on MftError by finetune).
    Cost: one finetune run.
    """
    staging = parent / f".{cell.id}.run"
    shutil.rmtree(staging, ignore_errors=True)
    cfg = cell.config.replace(out=str(staging))
    result = finetune(cfg, progress)
    run_dir = result.out_dir
    del result  # the trained model: free it before the next cell
    gc.collect()
    final = parent / cell.id
    if final.exists():  # an unfinished leftover (no results.json): replace it
        shutil.rmtree(final)
    run_dir.rename(final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def _load_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


# ------------------------------------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    """A finished sweep: its folder, results.json as a dict, the table rows and the best cell's id."""

    out_dir: Path
    record: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        return self.record["best"]


def _existing_sweep(config: SweepConfig, resume: str | Path | None) -> Path | None:
    """The sweep folder (with its sweep.json) that --resume or --name names, or None for a new sweep."""
    if resume is not None:
        path = Path(resume)
        if not (path / SWEEP_FILE).is_file():
            raise ConfigError(f"--resume {path} is not a sweep folder (no {SWEEP_FILE} in it)")
        return path
    if config.name is None:
        return None
    out = Path(config.out)
    partial, final = out / f".sweep_{config.name}{PARTIAL_SUFFIX}", out / f"sweep_{config.name}"
    for p in (partial, final):
        if (p / SWEEP_FILE).is_file():
            return p
    for p in (final, partial):
        if p.exists():
            raise ConfigError(f"{p} exists and is not a sweep folder; choose another --name or --out")
    return None


def _merge_stored(config: SweepConfig, folder: Path) -> SweepConfig:
    """The stored sweep's config with what this call gives; ResumeError when a given value differs."""
    stored = json.loads((folder / SWEEP_FILE).read_text())["config"]
    mine = config.to_dict()
    if mine["grid"] and mine["grid"] != stored["grid"]:
        raise ResumeError(f"{folder} was started with another grid ({_grid_text(stored['grid'])}); "
                          f"resume it with the same --grid or start another --name")
    conflicts = [k for k, v in mine["fixed"].items() if k in stored["fixed"] and stored["fixed"][k] != v]
    conflicts += [k for k in mine["fixed"] if k not in stored["fixed"]]
    if conflicts:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in conflicts)
        raise ResumeError(f"{folder} was started with other fixed settings ({what} differ); "
                          f"resume it with the same flags or start another --name")
    return SweepConfig(grid=stored["grid"], fixed=stored["fixed"], out=str(folder.parent), name=stored.get("name"))


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    return " ".join(f"{k}={','.join(_fmt(v) for v in vs)}" for k, vs in grid.items())


def sweep(config: SweepConfig, resume: str | Path | None = None, progress: Progress | None = None) -> SweepResult:
    """Run every unfinished cell of the grid, then write the sweep's table, summary, heatmap and results.json.

    `resume` names an existing sweep folder (its `.sweep_<name>.partial` or final folder); without it,
    `config.name` makes the folder `out/sweep_<name>` and resumes it if it exists. Given settings must
    match the stored ones (ResumeError otherwise); a resume may omit --grid and the fixed flags.
    All cells are validated before anything is written (ConfigError naming the cell). Finished cells
    (results.json present) are not re-run. A cell that raises is recorded as failed and the sweep goes
    on; if no cell finished, the first failure is raised (and the new sweep folder removed).
    Cost: one finetune run per unfinished cell, run one after another in this process (so peak RSS is
    the sweep's high-water mark, not a per-cell figure), plus reading every cell's results.json.
    """
    progress = progress or Progress()
    existing = _existing_sweep(config, resume)
    if existing is not None:
        config = _merge_stored(config, existing)
    cells = config.cells()
    previous = {}
    if existing is not None:
        previous = {c["id"]: c for c in json.loads((existing / SWEEP_FILE).read_text()).get("cells", [])}

    t0 = time.perf_counter()
    name = f"sweep_{config.name}" if config.name is not None else None
    with ResultsFolder(config.out, "sweep", resume=existing, name=name) as folder:
        folder.confirm()
        cells_dir = folder.path / CELLS_DIR
        cells_dir.mkdir(exist_ok=True)
        entries = [{"id": c.id, "values": c.values, "path": f"{CELLS_DIR}/{c.id}", "status": "pending",
                    "attempts": int(previous.get(c.id, {}).get("attempts", 0)), "error": None} for c in cells]
        state = {"kind": "sweep", "config": config.to_dict(), "cells": entries}

        def save_state() -> None:
            folder.write_json(SWEEP_FILE, state)
            if any(e["status"] == "finished" for e in entries):
                # Finished cells are the sweep's checkpoint: kept, with sweep.json, whatever fails later.
                folder.keep_on_failure(SWEEP_FILE, delete_after_commit=False)
                folder.keep_on_failure(CELLS_DIR, delete_after_commit=False)

        for e in entries:
            if (folder.path / e["path"] / "results.json").is_file():
                e["status"] = "finished"
        save_state()
        n_earlier = sum(e["status"] == "finished" for e in entries)
        log.info("sweep %s: %d cells, %d finished earlier", folder.path, len(cells), n_earlier)
        progress.phase("sweep", len(cells))
        failures: list[BaseException] = []
        for cell, e in zip(cells, entries):
            if e["status"] == "finished":
                progress.advance(1, cell=cell.id, phase="finished earlier")
                continue
            e.update(status="running", attempts=e["attempts"] + 1, error=None)
            save_state()
            try:
                run_cell(cell, cells_dir, _CellProgress(progress, cell.id))
            except KeyboardInterrupt:
                e["status"] = "interrupted"
                save_state()
                raise
            except Exception as err:  # a failed cell must not lose the others
                log.exception("cell %s failed", cell.id)
                e.update(status="failed", error=f"{type(err).__name__}: {err}")
                failures.append(err)
            else:
                e["status"] = "finished"
            save_state()
            progress.advance(1, cell=cell.id, phase=e["status"])
        progress.done()

        if not any(e["status"] == "finished" for e in entries):
            first = failures[0]
            if isinstance(first, MftError):
                raise type(first)(f"every cell of the sweep failed; the first: {first}") from first
            raise first

        rows, records = _table(config, cells, entries, folder.path)
        best = _best(rows, records, entries)
        record: dict[str, Any] = {
            "kind": "sweep",
            "config": config.to_dict(),
            "versions": versions(),
            "machine": machine_info(),
            "grid": config.to_dict()["grid"],
            "n_cells": len(cells),
            "n_finished": sum(e["status"] == "finished" for e in entries),
            "n_failed": sum(e["status"] == "failed" for e in entries),
            "n_finished_earlier": n_earlier,
            "selection": {"metric": best["metric"] if best else None, "half": "scoring",
                          "reported_on": "evaluation half (whole split beside it; it contains the scoring half)"},
            "best": best,
            "cells": entries,
            "peak_mem_note": "cells run in one process: peak_mem_bytes is the sweep process's high-water mark",
            "timings": {"total_s": time.perf_counter() - t0},
        }
        with folder.writing("sweep.csv") as p:
            _write_csv(p, rows)
        if len(config.grid) == 2 and best is not None:
            with folder.writing("sweep_heatmap.png") as p:
                plot_sweep_heatmap(config.grid, rows, best, p)
        folder.write_json("results.json", record)
        folder.write_text("summary.txt", sweep_summary(record, rows))
        save_state()
        out = folder.commit()
    return SweepResult(out, record, rows)


def _metric_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in records:
        for m in r.get("metrics", {}):
            if m not in names:
                names.append(m)
    return names


def _table(config: SweepConfig, cells: list[Cell], entries: list[dict], root: Path):
    records = {e["id"]: _load_record(root / e["path"]) for e in entries if e["status"] == "finished"}
    metrics = _metric_columns(records.values())
    rows = []
    for cell, e in zip(cells, entries):
        row: dict[str, Any] = {"cell": cell.id, **{k: _fmt(v) if isinstance(v, list) else v
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


def _best(rows: list[dict], records: dict[str, dict], entries: list[dict]) -> dict[str, Any] | None:
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


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
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
        "grid   " + _grid_text(record["grid"]),
        "fixed  " + (" ".join(f"{k}={_fmt(v)}" for k, v in fixed.items()) or "(defaults)"),
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
        ax.set_xticks(range(len(xv)), [_fmt(v) for v in xv], rotation=30)
        ax.set_yticks(range(len(yv)), [_fmt(v) for v in yv])
        ax.set_xlabel(xa)
        ax.set_ylabel(ya)
        ax.set_title(f"{m}, {half} half" + (" (chooses)" if half == "scoring" else " (reported)"), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------------- multi-seed runs

def parse_seeds(value: str | Sequence[int]) -> list[int]:
    """'1,2,3' (or a list) → seeds in the order given; ConfigError for a non-integer, a repeat or none."""
    try:
        seeds = [int(v) for v in value.split(",") if v.strip()] if isinstance(value, str) else [int(v) for v in value]
    except ValueError:
        raise ConfigError(f"--seeds {value!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise ConfigError("--seeds is empty; expected integers such as 1,2,3")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {value!r} repeats a seed")
    for s_ in seeds:
        check_int_range("--seeds", s_, 0, SEED_MAX)
    return seeds


@dataclass
class SeedsResult:
    """A finished multi-seed run: its folder, results.json as a dict, and each seed's run folder."""

    out_dir: Path
    record: dict[str, Any]
    run_dirs: list[Path] = field(default_factory=list)


def _spread(values: list[float], resamples: int, seed: int) -> dict[str, Any]:
    ci = bootstrap_ci(values, resamples=resamples, seed=seed)
    n = len(values)
    std = math.sqrt(sum((v - ci.estimate) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": ci.estimate, "std": std, "ci_low": ci.low, "ci_high": ci.high, "values": values}


def finetune_seeds(config: FinetuneConfig, seeds: Sequence[int] | str, progress: Progress | None = None,
                   resamples: int = DEFAULT_RESAMPLES, bootstrap_seed: int = 0) -> SeedsResult:
    """One `finetune` per seed (the seed replaced), then the mean, std and percentile-bootstrap CI
    (`resamples` resamples, seeded with `bootstrap_seed`) of every metric across seeds.

    Writes `config.out/finetune_seeds_<method>_<timestamp>/` with runs/seed-<s>/ (finetune results
    folders), seeds.csv (one row per seed), summary.txt and results.json (config, seeds, versions,
    machine, per-seed figures and the summaries under `metrics` (evaluation half), `metrics_whole` and
    `train_s`). Each seed also draws its own validation halves, so the evaluation half differs by seed.
    Errors of any seed propagate (MftError: the folder is removed). Cost: len(seeds) finetune runs.
    """
    seeds = parse_seeds(seeds)
    progress = progress or Progress()
    cells = [Cell(f"seed-{s}", {"seed": s}, config.replace(seed=s)) for s in seeds]
    t0 = time.perf_counter()
    with ResultsFolder(config.out, f"finetune_seeds_{config.method}") as folder:
        runs_dir = folder.path / "runs"
        runs_dir.mkdir()
        progress.phase("seeds", len(cells))
        run_dirs, recs = [], []
        for cell in cells:
            run_dirs.append(run_cell(cell, runs_dir, _CellProgress(progress, cell.id)))
            recs.append(_load_record(run_dirs[-1]))
            progress.advance(1, seed=cell.values["seed"], **{k: float(v) for k, v in recs[-1]["metrics"].items()})
        progress.done()
        per_seed = [{"seed": s, "path": f"runs/seed-{s}", "metrics": r["metrics"], "metrics_whole": r["metrics_whole"],
                     "metrics_scoring_half": r["metrics_scoring_half"], "train_s": r["train_s"],
                     "steps": r["training"]["steps"], "peak_mem_bytes": r["peak_mem_bytes"]}
                    for s, r in zip(seeds, recs)]

        def summarize(key: str) -> dict[str, Any]:
            names = [m for m in recs[0][key] if all(m in r[key] for r in recs)]
            return {m: _spread([float(r[key][m]) for r in recs], resamples, bootstrap_seed) for m in names}

        first = recs[0]
        record = {
            "kind": "finetune_seeds",
            "config": {**config.to_dict(), "seed": None},
            "seeds": seeds,
            "versions": versions(),
            "machine": machine_info(),
            "method": config.method,
            "task": first["task"],
            "primary_metric": first["primary_metric"],
            "trainable_params": first["trainable_params"],
            "total_params": first["total_params"],
            "trainable_share": first["trainable_share"],
            "metrics": summarize("metrics"),
            "metrics_whole": summarize("metrics_whole"),
            "train_s": _spread([float(r["train_s"]) for r in recs], resamples, bootstrap_seed),
            "bootstrap": {"method": "percentile", "statistic": "mean", "resamples": resamples, "confidence": 0.95,
                          "seed": bootstrap_seed},
            "runs": per_seed,
            "peak_mem_note": "seeds run in one process: peak_mem_bytes is the process's high-water mark",
            "timings": {"total_s": time.perf_counter() - t0},
        }
        folder.write_csv("seeds.csv", [{"seed": p["seed"], **{f"evaluation_{k}": v for k, v in p["metrics"].items()},
                                        **{f"whole_{k}": v for k, v in p["metrics_whole"].items()},
                                        "train_s": p["train_s"], "steps": p["steps"]} for p in per_seed])
        folder.write_json("results.json", record)
        folder.write_text("summary.txt", seeds_summary(record))
        out = folder.commit()
    return SeedsResult(out, record, [out / "runs" / d.name for d in run_dirs])


def seeds_summary(record: dict[str, Any]) -> str:
    """summary.txt of a multi-seed run: mean and bootstrap 95% CI of each metric across seeds."""
    b = record["bootstrap"]
    n = len(record["seeds"])
    lines = [
        f"Fine-tuning ({record['method']}) on {record['task']} over {n} seeds: {', '.join(map(str, record['seeds']))}",
        (f"trainable parameters {record['trainable_params']:,} of {record['total_params']:,} "
         f"({100 * record['trainable_share']:.4f}%)"),
        (f"mean and {100 * b['confidence']:.0f}% CI of the mean across seeds ({b['method']} bootstrap, "
         f"{b['resamples']:,} resamples, seed {b['seed']})"),
        "",
    ]
    for label, key in (("evaluation half", "metrics"), ("whole split", "metrics_whole")):
        for m, s in record[key].items():
            lines.append(f"{label:<16} {m:<10} mean {s['mean']:.4f}  CI [{s['ci_low']:.4f}, {s['ci_high']:.4f}]  "
                         f"std {s['std']:.4f}  per seed " + " ".join(f"{v:.4f}" for v in s["values"]))
    t = record["train_s"]
    lines.append(f"{'train time':<16} {'s':<10} mean {t['mean']:.2f}  CI [{t['ci_low']:.2f}, {t['ci_high']:.2f}]")
    if n < 5:
        lines += ["", f"note: with {n} seeds the bootstrap resamples only {n} values; the interval understates the spread."]
    return "\n".join(lines) + "\n"
