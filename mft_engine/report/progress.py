"""The progress protocol every pipeline reports through: phases with a step count, steps, and an end.

The pipelines (experiments, train, bench) take a `Progress` and call it; the CLI passes a rich-backed one
on a terminal, `LineProgress` elsewhere (a pipe, nohup, CI, a scheduler: one plain line every 10 s on
stderr and in logs/run.log), the API and the tests a silent one (this class itself). `ProgressGroup`
reports to several at once (rich bars on the terminal and lines in the run log).

Rates carry their unit, chosen from the phase's name (`unit_for`): "3.5 s/batch" when a step takes longer
than a second, "120 samples/s" otherwise (`rate_text`).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any, Callable

#: The unit of one step, by the first word of the phase name; anything else counts steps.
PHASE_UNITS = {
    "collect": ("batch", "batches"),       # mft run, scorer pipelines: one forward+backward per batch
    "evaluate": ("sample", "samples"),     # evaluations advance by the rows of each batch
    "train": ("step", "steps"),            # mft finetune: optimizer steps
    "sweep": ("cell", "cells"),
    "seeds": ("run", "runs"),
}

#: Seconds between two plain progress lines of one phase ($MFT_PROGRESS_INTERVAL overrides it).
LINE_INTERVAL_S = 10.0


def line_interval() -> float:
    """$MFT_PROGRESS_INTERVAL when it holds a number >= 0, else LINE_INTERVAL_S."""
    try:
        v = float(os.environ.get("MFT_PROGRESS_INTERVAL", ""))
    except ValueError:
        return LINE_INTERVAL_S
    return v if v >= 0 else LINE_INTERVAL_S


def unit_for(phase: str) -> tuple[str, str]:
    """(singular, plural) unit of a phase's steps, from the first word of its name."""
    word = phase.split(":")[-1].strip().split(" ", 1)[0].lower() if phase else ""
    return PHASE_UNITS.get(word, ("step", "steps"))


def rate_text(rate: float | None, unit: tuple[str, str] | str = ("step", "steps")) -> str:
    """A rate with its unit: '3.5 s/batch' below one step a second, '120 samples/s' at or above; '' when
    unknown. `rate` is in steps per second."""
    one, many = (unit, unit + "s") if isinstance(unit, str) else unit
    if not rate or rate <= 0:
        return ""
    if rate < 1:
        return f"{1 / rate:.1f} s/{one}"
    return f"{rate:.0f} {many}/s" if rate >= 10 else f"{rate:.1f} {many}/s"


def duration_text(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _info_text(info: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())


class Progress:
    """What the pipeline reports while it runs; the CLI passes a rich-backed one, the API a silent one."""

    def phase(self, name: str, total: int | None = None) -> None:
        """Start a phase named `name` of `total` steps (None: unknown)."""

    def advance(self, n: int = 1, **info: Any) -> None:
        """`n` more steps of the current phase done; `info` is shown beside the bar (e.g. loss=0.31)."""

    def done(self) -> None:
        """The current phase is finished."""


class LineProgress(Progress):
    """Plain progress lines for sinks that are not a terminal: at most one every `interval` s per phase (default $MFT_PROGRESS_INTERVAL, else 10)
    (the first after `interval` s, so short phases print nothing but their end), each naming the phase,
    done/total, the rate with its unit, the ETA and the latest `info`:

        progress collect gradients: 12/31 batches (39%), 3.5 s/batch, eta 1 min 07 s, loss 0.2871

    A phase that printed a line also prints one at its end (`done`). Lines go to `stream` (stderr by
    default; None: nowhere) and, when `log` is true, to the `mft_engine` logger at INFO, which a results
    folder copies into logs/run.log. `clock` is injectable for tests. A stream that fails (a closed pipe)
    is dropped; the run goes on.
    """

    def __init__(self, stream: IO[str] | None | str = "stderr", log: bool = True, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream  # "stderr": whatever sys.stderr is when a line is written
        self.log = logging.getLogger("mft_engine") if log else None
        self.interval = line_interval() if interval is None else float(interval)
        self.clock = clock
        self.name: str | None = None
        self.total: int | None = None
        self.count = 0
        self.info: dict[str, Any] = {}
        self.start = self.last = 0.0
        self.printed = False

    def phase(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.count, self.info = name, total, 0, {}
        self.start = self.last = self.clock()
        self.printed = False

    def advance(self, n: int = 1, **info: Any) -> None:
        if self.name is None:
            return
        self.count += n
        if info:
            self.info = info
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(self.line(now))

    def done(self) -> None:
        if self.name is not None and self.printed:
            now = self.clock()
            if self.total is not None and self.count < self.total:
                self.count = self.total
            self.emit(self.line(now, finished=True))
        self.name = None

    def line(self, now: float, finished: bool = False) -> str:
        """The progress line of the current phase at time `now`."""
        one, many = unit_for(self.name or "")
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 and self.count else None
        if self.total:
            done = f"{self.count}/{self.total} {many if self.total != 1 else one} ({100 * self.count / self.total:.0f}%)"
        else:
            done = f"{self.count} {many if self.count != 1 else one}"
        parts = [f"progress {self.name}: {done}"]
        r = rate_text(rate, (one, many))
        if r:
            parts.append(r)
        if finished:
            parts.append(f"done in {duration_text(elapsed)}")
        elif rate and self.total:
            parts.append(f"eta {duration_text(max(self.total - self.count, 0) / rate)}")
        if self.info:
            parts.append(_info_text(self.info))
        return ", ".join(parts)

    def emit(self, text: str) -> None:
        self.printed = True
        if self.stream is not None:
            stream = sys.stderr if isinstance(self.stream, str) else self.stream
            try:
                stream.write(text + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe must not end the run
                self.stream = None
        if self.log is not None:
            self.log.info("%s", text)


class ProgressGroup(Progress):
    """Reports to every member (e.g. rich bars on the terminal and `LineProgress(stream=None)` for the
    run log). Members that are context managers are entered and left with the group."""

    def __init__(self, *members: Progress):
        self.members = [m for m in members if m is not None]

    def __enter__(self):
        for m in self.members:
            if hasattr(m, "__enter__"):
                m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self.members):
            if hasattr(m, "__exit__"):
                m.__exit__(*exc)

    def phase(self, name: str, total: int | None = None) -> None:
        for m in self.members:
            m.phase(name, total)

    def advance(self, n: int = 1, **info: Any) -> None:
        for m in self.members:
            m.advance(n, **info)

    def done(self) -> None:
        for m in self.members:
            m.done()


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default stderr) is an interactive terminal: rich bars there, lines elsewhere."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_for_sinks(bars: Callable[[], Progress] | None = None, quiet: bool = False,
                       stream: IO[str] | None | str = "stderr") -> ProgressGroup:
    """The progress a command reports through, for every sink: on a terminal the rich bars `bars()` makes
    plus plain lines in the run log only; elsewhere (a pipe, nohup, CI) plain lines on `stream` and in the
    run log; `quiet` (or --json): lines in the run log only. Use it as a context manager:

        with progress_for_sinks(lambda: RichProgress(False), quiet=quiet or json_out) as progress: ...
    """
    target = sys.stderr if isinstance(stream, str) else stream
    if quiet:
        return ProgressGroup(LineProgress(stream=None))
    if bars is not None and target is not None and is_terminal(target):
        return ProgressGroup(bars(), LineProgress(stream=None))
    return ProgressGroup(LineProgress(stream=stream))
