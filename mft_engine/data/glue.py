"""Read GLUE tasks from folders in the original layout (`SST-2/train.tsv`, `MRPC/dev.tsv`, ...).

Table tasks (a TaskSpec with `file_suffixes`, e.g. IMDB's `IMDB/train.csv` or `IMDB/test.jsonl`) are
found the same way and read as quoted CSV / JSON lines by `mft_engine.data.local.read_task_table`.

The files are tab-separated with no quoting: quotes are ordinary characters inside sentences (MRPC,
SST-2 and QQP all have unbalanced `"`), so `csv.QUOTE_NONE` is the only safe reading. MRPC's header
starts with a UTF-8 BOM (hence `utf-8-sig`), CoLA has no header, SST-2 sentences end in a space.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Iterable

from mft_engine.errors import DataError, DataNotFoundError
from mft_engine.data.local import read_task_table
from mft_engine.data.tasks import TaskData, TaskSpec, get_task, task_names


def parse_glue_rows(lines: Iterable[str], spec: TaskSpec, split: str, source: str) -> TaskData:
    """Turn the lines of one GLUE TSV (an open text file or any iterable of lines) into a TaskData.

    Texts are stripped of surrounding whitespace; blank lines are skipped; labels become class ids
    (or floats for regression). `source` names the file in error messages and in the result.
    Cost: one pass over the lines; memory is the texts themselves.

    Raises DataError naming `source` and the line number for a row with the wrong number of columns,
    an unknown label, a non-numeric score, a header without the needed columns, or no data rows.
    """
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        return _parse(reader, spec, split, source)
    except csv.Error as exc:  # e.g. a field over csv's size limit in a corrupted file
        raise DataError(f"{source} line {reader.line_num} cannot be read as TSV: {exc}.") from exc
    except UnicodeDecodeError as exc:  # decoding runs ahead in blocks, so the line is approximate
        raise DataError(f"{source} is not UTF-8 text (failed after line {reader.line_num}).") from exc


def _parse(reader, spec: TaskSpec, split: str, source: str) -> TaskData:
    if spec.headerless:
        columns = list(spec.columns or ())
    else:
        header = next((row for row in reader if row), None)
        if header is None:
            raise DataError(f"{source} is empty; expected a header and rows for the {split} split.")
        # utf-8-sig removes a BOM at the start of a file, but not one that reached us through another
        # decoder (e.g. a stream opened as plain utf-8); strip it here as well.
        columns = [c.lstrip("\ufeff").strip() for c in header]
        missing = [c for c in (*spec.text_columns, spec.label_column) if c not in columns]
        if missing:
            raise DataError(
                f"{source} header has no column {', '.join(map(repr, missing))}; "
                f"found {columns!r}, expected the {spec.name} layout."
            )
    text_pos = [columns.index(c) for c in spec.text_columns]
    label_pos = columns.index(spec.label_column)
    label_map = spec.label_map()

    texts: list[str] = []
    pairs: list[str] | None = [] if spec.is_pair else None
    labels: list = []
    for row in reader:
        if not row:
            continue
        line = reader.line_num
        if len(row) != len(columns):
            raise DataError(
                f"{source} line {line} has {len(row)} tab-separated columns; expected {len(columns)} "
                f"({', '.join(columns)})."
            )
        raw = row[label_pos].strip()
        if label_map:
            if raw not in label_map:
                raise DataError(
                    f"{source} line {line} has unknown label {raw!r}; expected one of {list(label_map)}."
                )
            labels.append(label_map[raw])
        else:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DataError(f"{source} line {line} has score {raw!r}; expected a finite number.")
            labels.append(value)
        texts.append(row[text_pos[0]].strip())
        if pairs is not None:
            pairs.append(row[text_pos[1]].strip())
    if not texts:
        raise DataError(f"{source} has no data rows; the {split} split of {spec.name} must not be empty.")
    return TaskData(
        task=spec, split=split, texts=texts, text_pairs=pairs, labels=labels,
        source=source, row_ids=list(range(len(texts))),
    )


def read_glue_file(path: str | Path, task: str | TaskSpec, split: str = "train") -> TaskData:
    """Read one GLUE TSV file of `task` (e.g. `.../MRPC/dev.tsv`) into a TaskData; a table task's
    CSV/JSONL file (`.../IMDB/test.csv`) is read by `read_task_table`.

    Raises DataNotFoundError naming the path when it is not a file; parse errors as parse_glue_rows.
    """
    spec = get_task(task)
    split = spec.canonical_split(split)
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist; expected the {split} file of {spec.name}.")
    if spec.file_suffixes:
        return read_task_table(path, spec, split)
    # newline="" lets csv see "\r\n" endings itself, so Windows-edited files read the same.
    with open(path, encoding="utf-8-sig", newline="") as f:
        return parse_glue_rows(f, spec, split, str(path))


def _key(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def find_task_dir(data_dir: str | Path, task: str | TaskSpec) -> Path | None:
    """The folder holding `task`'s files under `data_dir`, or None.

    `data_dir` may be a GLUE root (with `SST-2/` inside, matched case-insensitively and ignoring
    '-'/'_', so `sst2/` works too) or the task folder itself (holding one of the task's split files,
    and not named after a different task).
    """
    spec = get_task(task)
    root = Path(data_dir)
    if not root.is_dir():
        return None
    if (root / spec.glue_dir).is_dir():
        return root / spec.glue_dir
    wanted = {_key(spec.glue_dir), _key(spec.name), *(_key(a) for a in spec.aliases)}
    for child in sorted(root.iterdir()):
        if child.is_dir() and _key(child.name) in wanted:
            return child
    # A folder named after another task (MRPC/ given for sst2) also has a train.tsv; refusing it here
    # gives a "folder not found" error instead of a confusing missing-column error.
    other = {_key(n) for n in task_names()} | {_key(get_task(n).glue_dir) for n in task_names()}
    if _key(root.name) in other and _key(root.name) not in wanted:
        return None
    if any((root / f).is_file() for s in spec.files for f in spec.split_files(s)):
        return root
    return None


def read_glue_split(data_dir: str | Path, task: str | TaskSpec, split: str = "train") -> TaskData:
    """Read `split` of `task` from a GLUE root or task folder (see find_task_dir).

    A table task's split is the first of its files that exists (`test.csv`, then `test.jsonl`).
    Cost: one pass over the file. Raises DataNotFoundError naming the path that is missing (the
    folder, or the split's file inside the task folder); DataError for malformed content.
    """
    spec = get_task(task)
    split = spec.canonical_split(split)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"data directory {root} does not exist; expected a GLUE folder.")
    task_dir = find_task_dir(root, spec)
    names = spec.split_files(split)
    if task_dir is None:
        if spec.file_suffixes:
            raise DataNotFoundError(
                f"{root} has no {spec.glue_dir} folder; expected {spec.folder_layout(split)}."
            )
        raise DataNotFoundError(
            f"{root} has no {spec.glue_dir} folder; expected {root / spec.glue_dir / spec.files[split]}."
        )
    path = next((task_dir / n for n in names if (task_dir / n).is_file()), task_dir / names[0])
    if spec.file_suffixes and not path.is_file():
        note = f" ({spec.data_note})" if spec.data_note else ""
        raise DataNotFoundError(
            f"{task_dir} has no {' or '.join(names)} for the {split} split of {spec.name}{note}; "
            f"expected {spec.folder_layout(split)}."
        )
    return read_glue_file(path, spec, split)
