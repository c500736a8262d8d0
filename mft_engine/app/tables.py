"""Uploaded CSV / TSV files: read, checked and turned into texts and class ids, with one-line errors.

An upload is refused (AppInputError) when it is larger than MAX_TABLE_BYTES, empty, not UTF-8, has no
header or no data row, more than MAX_TABLE_ROWS rows, or lacks a chosen column; labels must be class ids
or the task's label names (or its label strings, e.g. "0"/"1"). Reading never writes anywhere.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .sources import AppInputError

#: Largest upload read (bytes): a batch runs one forward per row on the CPU, so a few thousand rows is
#: what a browser user waits for.
MAX_TABLE_BYTES = 2 * 2**20
#: Most data rows in one batch.
MAX_TABLE_ROWS = 5000
#: Longest text accepted in one cell or text box (characters); the model reads at most a few hundred
#: tokens, so anything longer is a paste gone wrong.
MAX_TEXT_CHARS = 20_000
#: Column names tried, in order, as the default text, pair and label columns.
TEXT_NAMES = ("sentence", "text", "sentence1", "question1", "premise", "#1 String")
PAIR_NAMES = ("sentence2", "question2", "hypothesis", "#2 String", "text_pair")
LABEL_NAMES = ("label", "labels", "gold_label", "is_duplicate", "quality", "score", "target")


@dataclass
class Table:
    """A read upload: its `header` (column names) and `rows` (one dict per data row, every column a str;
    short rows padded with "")."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]

    def column(self, name: str) -> list[str]:
        """The values of column `name`; AppInputError naming the columns there are when it is absent."""
        if name not in self.header:
            raise AppInputError(f"{self.path.name} has no column {name!r}; its columns are "
                                f"{', '.join(repr(h) for h in self.header)}")
        return [r[name] for r in self.rows]


def read_table(path: str | Path | None) -> Table:
    """Read an uploaded CSV (comma) or TSV (tab, or a .tsv name) with a header row.

    Cost: one read of at most MAX_TABLE_BYTES. Raises AppInputError with the reason (size, empty, not
    UTF-8, no header, no rows, too many rows, duplicate column names).
    """
    if path is None or not str(path).strip():
        raise AppInputError("no file uploaded; choose a CSV or TSV file with a header row")
    p = Path(path)
    if not p.is_file():
        raise AppInputError(f"{p.name} is not a file")
    size = p.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise AppInputError(f"{p.name} is {size / 2**20:.1f} MiB; the batch tab reads files up to "
                            f"{MAX_TABLE_BYTES / 2**20:.0f} MiB ({MAX_TABLE_ROWS:,} rows)")
    raw = p.read_bytes()
    if not raw.strip():
        raise AppInputError(f"{p.name} is empty; expected a header row and at least one data row")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AppInputError(f"{p.name} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                            "save it as UTF-8 CSV") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if p.suffix.lower() == ".tsv" or first.count("\t") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        lines = [r for r in reader if any(c.strip() for c in r)]
    except csv.Error as e:
        raise AppInputError(f"{p.name} is not a valid CSV/TSV file ({e})") from None
    if not lines:
        raise AppInputError(f"{p.name} is empty; expected a header row and at least one data row")
    header = [h.strip() for h in lines[0]]
    if len(set(header)) != len(header) or not all(header):
        raise AppInputError(f"{p.name}: the header row needs distinct, non-empty column names (got {header})")
    if len(lines) == 1:
        raise AppInputError(f"{p.name} has a header but no data rows")
    if len(lines) - 1 > MAX_TABLE_ROWS:
        raise AppInputError(f"{p.name} has {len(lines) - 1:,} rows; the batch tab takes at most {MAX_TABLE_ROWS:,}")
    rows = [{h: (r[i] if i < len(r) else "") for i, h in enumerate(header)} for r in lines[1:]]
    return Table(p, header, rows)


def default_column(header: list[str], names: tuple[str, ...], fallback_first: bool = False) -> str | None:
    """The first of `names` in `header` (case-insensitive), else the first column when `fallback_first`."""
    lower = {h.lower(): h for h in header}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return header[0] if fallback_first and header else None


def check_text(text: str | None, what: str = "the text") -> str:
    """`text` stripped; AppInputError when it is empty or longer than MAX_TEXT_CHARS."""
    t = (text or "").strip()
    if not t:
        raise AppInputError(f"{what} is empty; type a sentence")
    if len(t) > MAX_TEXT_CHARS:
        raise AppInputError(f"{what} has {len(t):,} characters; at most {MAX_TEXT_CHARS:,} are accepted "
                            "(the model reads only its first few hundred tokens)")
    return t


def label_ids(values: list[str], label_names: list[str], column: str) -> list[int]:
    """Class ids of a label column: each value is a class id (0 … C−1) or a class name (case-insensitive).

    Raises AppInputError naming the first row (1-based, after the header) whose value is neither.
    """
    by_name = {n.lower(): i for i, n in enumerate(label_names)}
    out = []
    for row, v in enumerate(values, start=1):
        s = v.strip()
        if s.lower() in by_name:
            out.append(by_name[s.lower()])
            continue
        try:
            f = float(s)
        except ValueError:
            f = None
        if f is not None and f.is_integer() and 0 <= int(f) < len(label_names):
            out.append(int(f))
            continue
        raise AppInputError(f"row {row}: label {v!r} in column {column!r} is not a class of this model "
                            f"(expected 0–{len(label_names) - 1} or one of {', '.join(label_names)})")
    return out
