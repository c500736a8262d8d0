"""Grid parsing for `mft sweep`: the axes (`field=v1,v2,...`, typed by FinetuneConfig's fields), the cell
ids that name each cell's folder, and `SweepConfig`, whose `cells()` builds and validates every cell's
FinetuneConfig before anything runs."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...fields import check_field_types, flat_type_hints, help_field
from ...report.folder import jsonable
from ..config import FinetuneConfig

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



def format_value(v: Any) -> str:
    """A grid value as cell ids, tables and summaries write it: bools lowercase, floats in their shortest
    round-trip form (distinct values never share an id), lists joined by '+', None as 'none'."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: distinct values never share an id
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    return "none" if v is None else str(v)


def cell_id(values: Mapping[str, Any]) -> str:
    """The stable folder name of a cell: `batch_size=16,lr=0.0001` (axes in grid order).

    Characters outside [A-Za-z0-9._=,+-] become '_'; when that changed something, or the name passes 96
    characters, 8 hex digits of a SHA-1 of the values keep it unique.
    """
    raw = ",".join(f"{k}={format_value(v)}" for k, v in values.items())
    safe = _SAFE_ID_RE.sub("_", raw)
    if safe != raw or len(safe) > 96:
        digest = hashlib.sha1(json.dumps(jsonable(dict(values)), sort_keys=True).encode()).hexdigest()[:8]
        safe = f"{safe[:80]}-{digest}"
    return safe

def grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    """The axes as one line, `lr=0.001,0.002 batch_size=16` (summaries and resume errors)."""
    return " ".join(f"{k}={','.join(format_value(v) for v in vs)}" for k, vs in grid.items())

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

