"""What every command prints: progress on stderr (rich bars), then the run's summary and folder, or one
JSON object with --json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..report.progress import Progress, ProgressGroup, progress_for_sinks, rate_text, unit_for


class RichProgress(Progress):
    """Progress on a rich bar with rate and ETA (stderr), one task per phase."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self.quiet = quiet
        self.bar = RichBar(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                           TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                           console=Console(stderr=True), disable=quiet, transient=False)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def phase(self, name: str, total: int | None = None) -> None:
        self.task = self.bar.add_task(name, total=total, rate="", info="")

    def advance(self, n: int = 1, **info: Any) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, n)
        t = self.bar.tasks[-1]
        rate = rate_text(t.speed, unit_for(t.description))
        extra = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        self.bar.update(self.task, rate=rate, info=extra)

    def done(self) -> None:
        if self.task is not None:
            t = self.bar.tasks[-1]
            if t.total is not None and t.completed < t.total:
                self.bar.update(self.task, completed=t.total)
        self.task = None


def print_result(out_dir: Path | str, payload: dict[str, Any], json_out: bool, quiet: bool,
                 summary: str = "summary.txt") -> None:
    """`payload` as one JSON object (--json); else the folder's `summary` file and its path; with --quiet
    the path alone, so a script still learns where the results went."""
    if json_out:
        print(json.dumps(payload, default=str))
        return
    if not quiet:
        print((Path(out_dir) / summary).read_text(encoding="utf-8"))
    print(f"results: {out_dir}")


def brief_metrics(m: dict) -> dict:
    """The headline metrics of a metrics dict (those the task has)."""
    return {k: m[k] for k in ("accuracy", "precision", "recall", "f1", "mcc", "pearson", "spearman") if k in m}


def command_progress(quiet: bool) -> ProgressGroup:
    """The progress a command reports through: rich bars on a terminal, a plain line every 10 s on a pipe,
    nohup or CI (stderr), and lines in the run log either way; `quiet` (or --json) keeps the log lines only.
    Use as `with command_progress(quiet or json_out) as progress:`."""
    return progress_for_sinks(lambda: RichProgress(False), quiet=quiet)
