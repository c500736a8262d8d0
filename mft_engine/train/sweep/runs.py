"""Running a sweep and resuming it: one finetune per cell, trained in a staging folder and renamed into
place when it succeeded, sweep.json updated after each cell, finished cells never re-run (see the package
docstring for the folder's layout)."""
from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...device import resolve_device
from ...errors import ConfigError, MftError, ResumeError
from ...report import ResultsFolder, machine_info, versions
from ...report.folder import PARTIAL_SUFFIX
from ...report.progress import Progress
from ..run import finetune
from .grid import CELLS_DIR, SWEEP_FILE, Cell, SweepConfig, grid_text
from .report import best_cell, plot_sweep_heatmap, sweep_summary, table_rows, write_csv

log = logging.getLogger("mft_engine")


class CellProgress(Progress):
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

def load_record(run_dir: Path) -> dict[str, Any]:
    """results.json of a finished cell or seed run, as a dict."""
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
        raise ResumeError(f"{folder} was started with another grid ({grid_text(stored['grid'])}); "
                          f"resume it with the same --grid or start another --name")
    conflicts = [k for k, v in mine["fixed"].items() if k in stored["fixed"] and stored["fixed"][k] != v]
    conflicts += [k for k in mine["fixed"] if k not in stored["fixed"]]
    if conflicts:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in conflicts)
        raise ResumeError(f"{folder} was started with other fixed settings ({what} differ); "
                          f"resume it with the same flags or start another --name")
    return SweepConfig(grid=stored["grid"], fixed=stored["fixed"], out=str(folder.parent), name=stored.get("name"))


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
    for device in dict.fromkeys(c.config.device for c in cells):
        resolve_device(device)  # a device this machine lacks: one line before any cell runs
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
                run_cell(cell, cells_dir, CellProgress(progress, cell.id))
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

        rows, records = table_rows(config, cells, entries, folder.path)
        best = best_cell(rows, records, entries)
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
            write_csv(p, rows)
        if len(config.grid) == 2 and best is not None:
            with folder.writing("sweep_heatmap.png") as p:
                plot_sweep_heatmap(config.grid, rows, best, p)
        folder.write_json("results.json", record)
        folder.write_text("summary.txt", sweep_summary(record, rows))
        save_state()
        out = folder.commit()
    return SweepResult(out, record, rows)
