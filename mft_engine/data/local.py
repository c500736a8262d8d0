"""Read a task from a user's own CSV, TSV or JSONL file with named text and label columns.

This backs `--text-column`, `--text-pair-column` and `--label-column`. The file gets an unregistered
TaskSpec (name "local" unless given) whose `labels` record the label → class id map, so later splits
can be read with the same map by passing `labels=train.task.labels`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from mft_engine.errors import ConfigError, DataError, DataNotFoundError
from mft_engine.data.tasks import SPLIT_ALIASES, TaskData, TaskSpec

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_INT = re.compile(r"[+-]?\d+")

#: A label value rarer than this share of the rows (and than RARE_MAX_ROWS rows) among common ones is
#: taken for a typo (a lone `7` among 0/1, a lone `0.5` among integers) rather than a class or a score.
RARE_FRACTION = 0.001
RARE_MAX_ROWS = 5


def _records(path: Path, fmt: str, quoted: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for every non-blank data row."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if fmt == "jsonl":
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {line_no} is not valid JSON: {exc.msg}.") from exc
                if not isinstance(rec, dict):
                    kind = type(rec).__name__
                    raise DataError(f"{path} line {line_no} is a JSON {kind}; expected an object.")
                yield line_no, rec
            return
        reader = csv.reader(
            f,
            delimiter="," if fmt == "csv" else "\t",
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        )
        header = next((row for row in reader if row), None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {reader.line_num} has {len(row)} columns; expected {len(header)} "
                    f"({', '.join(header)})."
                )
            yield reader.line_num, dict(zip(header, row))


def _label_key(value: Any) -> Any:
    # JSON gives ints, floats, bools or strings; CSV always strings. Integral numbers become ints so
    # that 1, 1.0 and "1" name the same class.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if _INT.fullmatch(text) else text


def _looks_like_scores(raw: list[Any]) -> bool:
    try:
        numbers = [float(x) for x in raw]
    except (TypeError, ValueError):
        return False
    return any(math.isfinite(v) and not v.is_integer() for v in numbers) and all(
        not isinstance(x, bool) for x in raw
    )


def _numbers(raw: list[Any]) -> list[float] | None:
    """Every label as a float, or None when one is not a number (or is a JSON bool)."""
    out = []
    for x in raw:
        if isinstance(x, bool):
            return None
        try:
            out.append(float(x))
        except (TypeError, ValueError):
            return None
    return out


def check_label_outliers(path: Path | str, raw_labels: list[tuple[int, Any]]) -> None:
    """Raise DataError naming the first suspicious row of a label column whose type is being inferred.

    Suspicious: (a) numeric labels of which some, but fewer than RARE_FRACTION of the rows, are not
    integers (a lone `0.5` among integers would otherwise turn the task into regression); (b) a label
    value held by fewer than RARE_FRACTION of the rows and fewer than RARE_MAX_ROWS rows while other
    values are common (a lone `7` among 0/1 would otherwise add classes). Files under 1,000 rows never
    trip either rule (one row is then at least 0.1%). `raw_labels` holds (line number, raw value) pairs.
    Cost: one pass over the labels.
    """
    n = len(raw_labels)
    limit = RARE_FRACTION * n
    numbers = _numbers([raw for _, raw in raw_labels])
    if numbers is not None:
        odd = [(line, raw) for (line, raw), v in zip(raw_labels, numbers) if not v.is_integer()]
        if odd and len(odd) < limit:
            line, raw = odd[0]
            raise DataError(
                f"{path} line {line} has label {raw!r}, "
                f"{'the only non-integer label' if len(odd) == 1 else f'one of {len(odd)} non-integer labels'} "
                f"among {n - len(odd)} integers (fewer than {RARE_FRACTION:.1%}); fix the row, or give every "
                "row a score for a regression task."
            )
    keys = [_label_key(raw) for _, raw in raw_labels]
    counts = Counter(keys)
    rare = {k for k, c in counts.items() if c < limit and c < RARE_MAX_ROWS}
    if rare and len(rare) < len(counts):
        i = next(i for i, k in enumerate(keys) if k in rare)
        line, raw = raw_labels[i]
        common = min(c for k, c in counts.items() if k not in rare)
        raise DataError(
            f"{path} line {line} has label {raw!r}, held by only {counts[keys[i]]} of {n} rows "
            f"(fewer than {RARE_FRACTION:.1%} and fewer than {RARE_MAX_ROWS}) while every other label has at "
            f"least {common}; fix or remove the row."
        )


def load_local(
    path: str | Path,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    regression: bool | None = False,
    file_format: str | None = None,
    quoted: bool | None = None,
    split: str = "train",
    name: str = "local",
) -> TaskData:
    """Read a CSV/TSV/JSONL file into a TaskData with a synthetic TaskSpec.

    `text_column` defaults to "text", else "sentence", whichever the file has.
    Labels: with `regression=True`, floats; `regression=None` decides from the file (regression when
    every label is a number and one is not an integer). When the labels are inferred (no `labels`, no
    `regression=True`), a value that looks like a typo is an error naming its line: fewer than 0.1% of
    non-integers among integers, or a value held by fewer than 0.1% of the rows and fewer than 5 while the
    others are common (see `check_label_outliers`; files under 1,000 rows never trip it). Otherwise, when `labels` is given, each label
    must be one of those strings (its position is the class id; unknown ones raise DataError naming
    label, file and line). Without `labels`: non-negative integer labels are class ids as they stand (classes
    0..max); any other labels are mapped to ids in sorted order (numeric order for integers). The map
    is recorded in `result.task.labels`.

    `file_format` is inferred from the suffix (.csv, .tsv/.tab, .jsonl/.ndjson). `quoted` says whether
    `"` quotes fields; by default CSV is quoted and TSV is not (GLUE's convention: quotes are text).
    Cost: one pass over the file. Raises DataNotFoundError for a missing file, DataError for a missing
    column, malformed row, unknown label or no rows, ConfigError for a bad argument.
    """
    path = Path(path)
    fmt = (file_format or _FORMATS.get(path.suffix.lower(), "")).lower()
    if fmt not in ("csv", "tsv", "jsonl"):
        raise ConfigError(
            f"cannot tell the format of {path}; pass file_format='csv', 'tsv' or 'jsonl'."
        )
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist; expected a {fmt.upper()} data file.")
    if regression and labels is not None:
        raise ConfigError("labels cannot be given for a regression task; pass one or the other.")
    quoted = (fmt == "csv") if quoted is None else quoted
    records = _records(path, fmt, quoted)
    if text_column is None:
        first = next(records, None)
        records.close()
        found = sorted(first[1]) if first else []
        text_column = next((c for c in ("text", "sentence") if c in found), None)
        if text_column is None:
            raise DataError(
                f"{path} has no 'text' or 'sentence' column (found {found!r}); pass --text-column."
            )
        records = _records(path, fmt, quoted)
    columns = [text_column] + ([text_pair_column] if text_pair_column else []) + [label_column]

    texts: list[str] = []
    pairs: list[str] | None = [] if text_pair_column else None
    raw_labels: list[tuple[int, Any]] = []
    try:
        for line_no, rec in records:
            missing = [c for c in columns if c not in rec]
            if missing:
                raise DataError(
                    f"{path} line {line_no} has no column {', '.join(map(repr, missing))}; "
                    f"found {sorted(rec)!r}."
                )
            for c in columns[:-1]:
                if not isinstance(rec[c], str):
                    raise DataError(f"{path} line {line_no} column {c!r} is {rec[c]!r}; expected text.")
            texts.append(rec[text_column].strip())
            if pairs is not None:
                pairs.append(rec[text_pair_column].strip())
            raw_labels.append((line_no, rec[label_column]))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as UTF-8 {fmt.upper()}: {exc}.") from exc
    if not texts:
        raise DataError(f"{path} has no data rows; expected at least one example.")

    if labels is None and not regression:
        check_label_outliers(path, raw_labels)
    if regression is None:
        regression = labels is None and _looks_like_scores([raw for _, raw in raw_labels])
    if regression:
        values: list = []
        for line_no, raw in raw_labels:
            try:
                v = float(raw)
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v):
                raise DataError(f"{path} line {line_no} has label {raw!r}; expected a finite number.")
            values.append(v)
        label_names = None
    else:
        keys = [(line_no, _label_key(raw)) for line_no, raw in raw_labels]
        if labels is not None:
            label_names = tuple(str(x) for x in labels)
        else:
            found = {k for _, k in keys}
            if all(isinstance(k, int) for k in found) and min(found) >= 0:
                label_names = tuple(str(i) for i in range(max(found) + 1))
            else:
                # Mixed int/str sets sort ints first, numerically, then strings.
                ordered = sorted(found, key=lambda k: (isinstance(k, str), k))
                label_names = tuple(str(k) for k in ordered)
            if len(label_names) < 2:
                raise DataError(
                    f"{path} has the single label {label_names[0]!r}; pass labels=[...] naming all classes."
                )
        index = {lab: i for i, lab in enumerate(label_names)}
        values = []
        for line_no, k in keys:
            if str(k) not in index:
                raise DataError(
                    f"{path} line {line_no} has unknown label {str(k)!r}; "
                    f"expected one of {list(label_names)}."
                )
            values.append(index[str(k)])

    split = SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    metrics = ("pearson", "spearman") if regression else (
        ("accuracy", "f1") if len(label_names) == 2 else ("accuracy",)
    )
    spec = TaskSpec(
        name=name,
        glue_dir="",
        files={"train": path.name, "validation": path.name, split: path.name},
        text_columns=tuple(columns[:-1]),
        label_column=label_column,
        labels=label_names,
        metrics=metrics,
    )
    return TaskData(
        task=spec, split=split, texts=texts, text_pairs=pairs, labels=values,
        source=str(path), row_ids=list(range(len(texts))),
    )


def read_task_table(path: str | Path, spec: TaskSpec, split: str) -> TaskData:
    """Read one split of a registered table task (`spec.file_suffixes`, e.g. IMDB's `test.csv`).

    The file is read as `load_local` reads it (quoted CSV, unquoted TSV or JSON lines, by suffix) with
    the task's own columns and label strings, so labels 0/1 (or "0", "1", 1.0) become class ids by
    their position in `spec.labels`; the result carries `spec` itself. Raises as `load_local`.
    """
    data = load_local(
        path,
        text_column=spec.text_columns[0],
        text_pair_column=spec.text_columns[1] if spec.is_pair else None,
        label_column=spec.label_column,
        labels=spec.labels,
        regression=spec.is_regression,
        split=split,
        name=spec.name,
    )
    data.task, data.split = spec, split
    return data


_SPLIT_STEMS = {"train": ("train",), "validation": ("dev", "validation", "val", "valid")}


def local_split_path(path: str | Path, split: str = "train") -> Path:
    """The file holding `split` of a local task given as a file or a folder.

    A folder: `train.<ext>` for train; `dev.<ext>`, `validation.<ext>`, `val.<ext>` or `valid.<ext>`
    for validation (ext: csv, tsv, tab, jsonl, ndjson). A file: the file itself for train; for
    validation, the sibling whose name has `train` replaced by dev/validation/val/valid
    (`my_train.csv` → `my_dev.csv`). Raises DataNotFoundError naming the candidates tried.
    """
    path = Path(path)
    split = SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    stems = _SPLIT_STEMS.get(split)
    if stems is None:
        raise ConfigError(f"local tasks have splits 'train' and 'validation', not {split!r}.")
    if path.is_dir():
        candidates = [path / f"{stem}{ext}" for stem in stems for ext in _FORMATS]
    elif path.is_file():
        if split == "train":
            return path
        if "train" not in path.name:
            raise DataNotFoundError(
                f"no validation file for {path}: its name has no 'train' to replace with 'dev'; "
                "pass a folder holding train.csv and dev.csv (or .tsv/.jsonl)."
            )
        candidates = [path.with_name(path.name.replace("train", stem)) for stem in stems]
    else:
        raise DataNotFoundError(f"{path} does not exist; expected a CSV/TSV/JSONL file or a folder of them.")
    for c in candidates:
        if c.is_file():
            return c
    if path.is_dir():
        shown = f"{'|'.join(stems)}.(csv|tsv|tab|jsonl|ndjson) in {path}"
    else:
        shown = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(f"no {split} file for local task {path}; looked for {shown}.")


def load_local_split(
    path: str | Path,
    split: str = "train",
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
) -> TaskData:
    """Load `split` of a local task (file or folder, see local_split_path) with a label map shared by
    its splits: the validation split is read with the classes (or regression) found in train.

    Cost: one pass over the split's file, plus one over the train file for a validation split.
    """
    kw = dict(
        text_column=text_column, text_pair_column=text_pair_column, label_column=label_column or "label"
    )
    train_path = local_split_path(path, "train")
    train = load_local(train_path, regression=None, **kw)
    if SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower()) == "train":
        return train
    other = local_split_path(path, split)
    if train.is_regression:
        return load_local(other, regression=True, split="validation", **kw)
    return load_local(other, labels=train.task.labels, regression=False, split="validation", **kw)
