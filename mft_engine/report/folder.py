"""A results folder written under a temporary name and renamed only when the run succeeds."""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..errors import MftError

PARTIAL_SUFFIX = ".partial"


def timestamp() -> str:
    """Local time as YYYYMMDD_HHMMSS (the original's results/experiment_<timestamp> convention)."""
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


class ResultsFolder:
    """`results/<prefix>_<timestamp>/`, built in `.<prefix>_<timestamp>.partial/` until commit().

    Used as a context manager: bad input (MftError) removes the partial folder, so nothing half-written is
    left; an interruption (Ctrl-C, kill) leaves it, since it holds the collection checkpoint that
    `mft run --resume DIR` continues from. The run log goes to logs/run.log.
    """

    def __init__(self, out: str | Path, prefix: str = "mft", resume: str | Path | None = None):
        self.out = Path(out)
        if resume is not None:
            self.tmp = Path(resume)
            name = self.tmp.name
            self.final_name = name[1:-len(PARTIAL_SUFFIX)] if name.startswith(".") and name.endswith(PARTIAL_SUFFIX) else name
            self.out = self.tmp.parent
        else:
            stamp = timestamp()
            self.final_name = f"{prefix}_{stamp}"
            n = 1
            while (self.out / self.final_name).exists() or (self.out / f".{self.final_name}{PARTIAL_SUFFIX}").exists():
                n += 1
                self.final_name = f"{prefix}_{stamp}_{n}"
            self.tmp = self.out / f".{self.final_name}{PARTIAL_SUFFIX}"
        self.final = self.out / self.final_name
        self._handler: logging.Handler | None = None

    @property
    def path(self) -> Path:
        return self.tmp

    def __enter__(self) -> "ResultsFolder":
        (self.tmp / "logs").mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.tmp / "logs" / "run.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log = logging.getLogger("mft_engine")
        log.setLevel(logging.INFO)
        log.addHandler(self._handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._handler is not None:
            logging.getLogger("mft_engine").removeHandler(self._handler)
            self._handler.close()
        if exc_type is not None and issubclass(exc_type, MftError):
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def commit(self) -> Path:
        """Rename the finished folder to its final name; returns the final path."""
        if self._handler is not None:
            self._handler.flush()
        self.tmp.rename(self.final)
        self.tmp = self.final
        return self.final

    def write_json(self, name: str, data: Any) -> Path:
        p = self.tmp / name
        p.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
        return p

    def write_text(self, name: str, text: str) -> Path:
        p = self.tmp / name
        p.write_text(text)
        return p

    def write_csv(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        rows = list(rows)
        p = self.tmp / name
        with p.open("w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                w.writeheader()
                w.writerows(rows)
        return p
