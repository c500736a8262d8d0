"""The task registry: what each task's files look like and how it is scored.

One `TaskSpec` per task holds everything a reader needs to turn the original folder (or the Hub copy)
into texts and labels: the folder and file names, which columns hold the text(s) and the label, the
label vocabulary (or regression), and the metric names. The nine GLUE tasks keep GLUE's TSV files;
IMDB is kept as CSV or JSON lines (see `file_suffixes`). Adding a task is one `TaskSpec` plus one
`register_task` call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from mft_engine.errors import ConfigError

#: Split names every task must offer; "validation" is the default evaluation split.
REQUIRED_SPLITS = ("train", "validation")

#: Spellings users type for the validation split.
SPLIT_ALIASES = {
    "dev": "validation",
    "val": "validation",
    "valid": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}

KNOWN_METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")

#: Suffixes a table task (`TaskSpec.file_suffixes`) may use: quoted CSV, unquoted TSV, JSON lines.
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")

#: The Hub dataset holding the GLUE tasks (a TaskSpec's default `hub_dataset`).
GLUE_HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskSpec:
    """The real on-disk format of one task and how it is scored.

    `labels` lists the label strings exactly as they appear in the files; a label's position in that
    tuple is its class id (chosen to agree with the Hub's ClassLabel ids). `labels=None` means
    regression (float targets, MSE loss).

    `file_suffixes` empty (GLUE): `files` names each split's TSV, read with GLUE's unquoted parser.
    Non-empty: `files` names each split's file stem, tried with each suffix in turn (`.csv` quoted CSV
    with a header, `.jsonl` one JSON object per line), with columns `text_columns` and `label_column`.
    `hub_dataset`/`hub_config`/`hub_splits` say where the Hub keeps the task. `data_note` is one
    clause added to "no data" errors (IMDB: its test split serves as validation).
    """

    name: str
    glue_dir: str
    files: Mapping[str, str]
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    headerless: bool = False
    columns: tuple[str, ...] | None = None
    label_names: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    hub_config: str | None = None
    hub_text_columns: tuple[str, ...] | None = None
    hub_splits: Mapping[str, str] = field(default_factory=dict)
    hub_dataset: str = GLUE_HUB_DATASET
    file_suffixes: tuple[str, ...] = ()
    data_note: str = ""

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise containers via object.__setattr__ so specs stay hashable-ish
        # and callers cannot mutate a registered spec's file table.
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "hub_splits", MappingProxyType(dict(self.hub_splits)))
        object.__setattr__(self, "text_columns", tuple(self.text_columns))
        object.__setattr__(self, "file_suffixes", tuple(self.file_suffixes))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"task name {self.name!r} must be lowercase letters, digits or '_'.")
        if len(self.text_columns) not in (1, 2):
            raise ConfigError(
                f"task {self.name!r} has {len(self.text_columns)} text columns; expected one or two."
            )
        for split in REQUIRED_SPLITS:
            if split not in self.files:
                raise ConfigError(f"task {self.name!r} has no file for the {split!r} split.")
        if self.labels is not None:
            if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
                raise ConfigError(
                    f"task {self.name!r} labels {self.labels!r} must be two or more distinct strings."
                )
        if self.label_names is not None and (
            self.labels is None or len(self.label_names) != len(self.labels)
        ):
            raise ConfigError(f"task {self.name!r} label_names must match labels one for one.")
        unknown = [m for m in self.metrics if m not in KNOWN_METRICS]
        if not self.metrics or unknown:
            raise ConfigError(
                f"task {self.name!r} metrics {self.metrics!r} must be non-empty names from {KNOWN_METRICS}."
            )
        if self.headerless:
            needed = (*self.text_columns, self.label_column)
            if not self.columns or any(c not in self.columns for c in needed):
                raise ConfigError(
                    f"header-less task {self.name!r} needs `columns` naming {needed!r} among them."
                )
        bad_suffixes = [x for x in self.file_suffixes if x not in TABLE_SUFFIXES]
        if bad_suffixes:
            raise ConfigError(
                f"task {self.name!r} file_suffixes {bad_suffixes!r} must be among {TABLE_SUFFIXES}."
            )
        if self.hub_text_columns is not None and len(self.hub_text_columns) != len(self.text_columns):
            raise ConfigError(f"task {self.name!r} hub_text_columns must match text_columns in number.")

    @property
    def is_regression(self) -> bool:
        """True for float targets (STS-B)."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: 1 for regression, else the number of classes."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        """True when each example is a pair of texts."""
        return len(self.text_columns) == 2

    @property
    def loss(self) -> str:
        """"mse" for regression, "cross_entropy" otherwise."""
        return "mse" if self.is_regression else "cross_entropy"

    @property
    def primary_metric(self) -> str:
        """The metric reported first (GLUE's headline metric for the task)."""
        return self.metrics[0]

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names this task offers."""
        return tuple(self.files)

    def canonical_split(self, split: str) -> str:
        """Map a user's split name ("dev", "val", "dev_mismatched", ...) to one in `files`.

        Raises ConfigError naming the offered splits when the name is unknown.
        """
        key = split.strip().lower().replace("-", "_")
        key = SPLIT_ALIASES.get(key, key)
        if key not in self.files:
            raise ConfigError(
                f"task {self.name!r} has no split {split!r}; expected one of {', '.join(self.files)}."
            )
        return key

    def hub_split(self, split: str) -> str:
        """The Hub split name (in `hub_dataset`) for one of our split names."""
        split = self.canonical_split(split)
        return self.hub_splits.get(split, split)

    def split_files(self, split: str) -> tuple[str, ...]:
        """File names that may hold `split` inside the task folder, in the order they are tried."""
        name = self.files[self.canonical_split(split)]
        return tuple(name + s for s in self.file_suffixes) if self.file_suffixes else (name,)

    def folder_layout(self, split: str) -> str:
        """What a local folder must hold for `split`, in words, for error messages.

        GLUE: "a GLUE folder holding SST-2/train.tsv". Table tasks name every split's file in each
        format and the columns: "a folder IMDB/ holding train.csv and test.csv, or train.jsonl and
        test.jsonl, with columns text,label".
        """
        if not self.file_suffixes:
            return f"a GLUE folder holding {self.glue_dir}/{self.files[self.canonical_split(split)]}"
        stems = list(dict.fromkeys(self.files.values()))
        forms = ", or ".join(" and ".join(stem + sfx for stem in stems) for sfx in self.file_suffixes)
        columns = ",".join((*self.text_columns, self.label_column))
        return f"a folder {self.glue_dir}/ holding {forms}, with columns {columns}"

    def label_map(self) -> dict[str, int]:
        """Label string → class id (empty for regression)."""
        return {} if self.labels is None else {lab: i for i, lab in enumerate(self.labels)}

    # The mapping fields are unhashable; a task is identified by its name.
    def __hash__(self) -> int:
        return hash(self.name)


@dataclass
class TaskData:
    """One split of one task, in memory: parallel lists, one entry per example.

    `labels` are class ids (int) or float scores for regression. `row_ids[i]` is the 0-based number
    of example i among the data rows of its file (header and blank lines not counted), so a reported
    example can be found in the source. `source` says where the rows came from ("embedded", a file
    path, or "hub:<dataset>/<config>/<split>" with the Hub's split name, e.g.
    "hub:nyu-mll/glue/sst2/validation" or "hub:stanfordnlp/imdb/plain_text/test").
    """

    task: TaskSpec
    split: str
    texts: list[str]
    text_pairs: list[str] | None
    labels: list[int] | list[float]
    source: str
    row_ids: list[int]

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n or len(self.row_ids) != n or (
            self.text_pairs is not None and len(self.text_pairs) != n
        ):
            raise ValueError("TaskData lists must all have one entry per example.")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of model outputs (1 for regression)."""
        return self.task.num_labels

    @property
    def is_regression(self) -> bool:
        """True for float targets."""
        return self.task.is_regression

    @property
    def label_summary(self) -> str:
        """The label type in a few words, for summaries and results.json: "regression (float)" or
        "2 classes (0, 1)" / "3 classes (neg, neutral, pos)" (the labels in class-id order, the first 10
        then "..."; "0: negative" where the task names them). For a local file this is what was inferred
        from its label column."""
        if self.is_regression:
            return "regression (float)"
        labels, named = self.task.labels, self.task.label_names
        names = [str(lab) if not named or named[i] == lab else f"{lab}: {named[i]}" for i, lab in enumerate(labels)]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return f"{len(names)} classes ({shown})"

    def subset(self, indices) -> "TaskData":
        """A new TaskData holding the examples at `indices` (positions in this one), in that order.

        Cost: O(len(indices)) list copies; the strings themselves are shared.
        """
        idx = [int(i) for i in indices]
        return TaskData(
            task=self.task,
            split=self.split,
            texts=[self.texts[i] for i in idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            source=self.source,
            row_ids=[self.row_ids[i] for i in idx],
        )


_REGISTRY: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    # "SST-2", "sst_2", "Sst2" all name the same task; the registry stores the bare lowercase form.
    return re.sub(r"[-_\s]", "", name.strip().lower())


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Add `spec` to the registry under its name and aliases; return it.

    Names are lowercase and unique: a second task with the same name (or a name/alias colliding with
    another task's, after dropping '-' and '_') raises ConfigError unless `overwrite=True`.
    """
    keys = {_normalise(spec.name), *(_normalise(a) for a in spec.aliases)}
    if not overwrite:
        for key in keys:
            owner = _REGISTRY.get(key) or _REGISTRY.get(_ALIASES.get(key, ""))
            if owner is not None:
                raise ConfigError(
                    f"task name {key!r} of {spec.name!r} is already registered by {owner.name!r}."
                )
    else:
        old = _REGISTRY.pop(spec.name, None)
        if old is not None:
            for key in [k for k, v in _ALIASES.items() if v == old.name]:
                del _ALIASES[key]
    _REGISTRY[spec.name] = spec
    for key in keys:
        if key != spec.name:
            _ALIASES[key] = spec.name
    return spec


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Look a task up by id ("sst2", "sst-2", "SST-2", "STS-B", ...); a TaskSpec passes through.

    Raises ConfigError naming the known tasks when the id is unknown.
    """
    if isinstance(task, TaskSpec):
        return task
    key = _normalise(str(task))
    name = key if key in _REGISTRY else _ALIASES.get(key)
    if name is None:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(task_names())}.")
    return _REGISTRY[name]


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_REGISTRY)


def _glue(name: str, glue_dir: str, **kw) -> TaskSpec:
    kw.setdefault("files", {"train": "train.tsv", "validation": "dev.tsv"})
    kw.setdefault("hub_config", name)
    return register_task(TaskSpec(name=name, glue_dir=glue_dir, **kw))


_BINARY = ("0", "1")
_ENTAIL2 = ("entailment", "not_entailment")

# Column layouts are those of the files written by GLUE's download_glue_data.py; label order follows
# the Hub's ClassLabel ids so that a model fine-tuned on either source reads the same class ids.
_glue(
    "cola", "CoLA",
    headerless=True, columns=("source", "label", "original_label", "sentence"),
    text_columns=("sentence",), label_column="label", labels=_BINARY,
    label_names=("unacceptable", "acceptable"), metrics=("mcc",),
)
_glue(
    "sst2", "SST-2",
    text_columns=("sentence",), label_column="label", labels=_BINARY,
    label_names=("negative", "positive"), metrics=("accuracy",),
)
_glue(
    "mrpc", "MRPC",
    text_columns=("#1 String", "#2 String"), label_column="Quality", labels=_BINARY,
    label_names=("not_equivalent", "equivalent"), metrics=("accuracy", "f1"),
    hub_text_columns=("sentence1", "sentence2"),
)
_glue(
    "qqp", "QQP",
    text_columns=("question1", "question2"), label_column="is_duplicate", labels=_BINARY,
    label_names=("not_duplicate", "duplicate"), metrics=("accuracy", "f1"),
)
_glue(
    "stsb", "STS-B",
    text_columns=("sentence1", "sentence2"), label_column="score", labels=None,
    metrics=("pearson", "spearman"),
)
_glue(
    "mnli", "MNLI",
    files={
        "train": "train.tsv",
        "validation": "dev_matched.tsv",
        "validation_matched": "dev_matched.tsv",
        "validation_mismatched": "dev_mismatched.tsv",
    },
    text_columns=("sentence1", "sentence2"), label_column="gold_label",
    labels=("entailment", "neutral", "contradiction"), metrics=("accuracy",),
    hub_text_columns=("premise", "hypothesis"), hub_splits={"validation": "validation_matched"},
)
_glue(
    "qnli", "QNLI",
    text_columns=("question", "sentence"), label_column="label", labels=_ENTAIL2, metrics=("accuracy",),
)
_glue(
    "rte", "RTE",
    text_columns=("sentence1", "sentence2"), label_column="label", labels=_ENTAIL2, metrics=("accuracy",),
)
_glue(
    "wnli", "WNLI",
    text_columns=("sentence1", "sentence2"), label_column="label", labels=_BINARY, metrics=("accuracy",),
)

# IMDB (Maas et al., 2011): 25,000 train and 25,000 test movie reviews, label 0 = negative, 1 = positive.
# It has no validation split, so our "validation" split is IMDB's test split, both on the Hub
# (`stanfordnlp/imdb`, config `plain_text`, split "test") and in a local folder (`test.csv`/`test.jsonl`).
# No copy is embedded: the data comes from --data-dir / MFT_DATA_DIR (a folder `IMDB/`, or the folder
# itself, holding train.csv and test.csv, or train.jsonl and test.jsonl, with columns text,label) or
# from the Hub.
register_task(TaskSpec(
    name="imdb", glue_dir="IMDB", files={"train": "train", "validation": "test"},
    file_suffixes=(".csv", ".jsonl"),
    text_columns=("text",), label_column="label", labels=_BINARY,
    label_names=("negative", "positive"), metrics=("accuracy", "f1", "mcc"),
    hub_dataset="stanfordnlp/imdb", hub_config="plain_text", hub_splits={"validation": "test"},
    data_note="IMDB has no validation split, so its test split serves as validation",
))
