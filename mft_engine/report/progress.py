"""The progress protocol every pipeline reports through: phases with a step count, steps, and an end.

The pipelines (experiments, train, bench) take a `Progress` and call it; the CLI passes a rich-backed one
(cli.RichProgress), the API and the tests a silent one (this class itself).
"""
from __future__ import annotations

from typing import Any


class Progress:
    """What the pipeline reports while it runs; the CLI passes a rich-backed one, the API a silent one."""

    def phase(self, name: str, total: int | None = None) -> None:
        """Start a phase named `name` of `total` steps (None: unknown)."""

    def advance(self, n: int = 1, **info: Any) -> None:
        """`n` more steps of the current phase done; `info` is shown beside the bar (e.g. loss=0.31)."""

    def done(self) -> None:
        """The current phase is finished."""
