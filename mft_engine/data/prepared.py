"""A task made ready for a pipeline, in one place: both splits loaded, the training rows chosen, both
tokenized once, and the validation split cut into its seeded scoring and evaluation halves."""
from __future__ import annotations

from dataclasses import dataclass

from .batching import TokenizedSplit, select_samples, tokenize_split, validation_halves
from .sources import load_data
from .tasks import TaskData


@dataclass
class TaskSplits:
    """The training and validation splits of a task, loaded (not tokenized: the tokenizer comes with the
    model, whose head size is read from here)."""

    train: TaskData
    val: TaskData

    @property
    def num_labels(self) -> int:
        return self.train.num_labels

    @property
    def is_regression(self) -> bool:
        return self.train.is_regression


def load_splits(where) -> TaskSplits:
    """Both splits of the task `where` names (task, data_dir and the column fields; see load_data).
    Cost: reading the two files (or the embedded or cached copies) once."""
    return TaskSplits(load_data(where, "train"), load_data(where, "validation"))


@dataclass
class PreparedTask:
    """The splits with the chosen training rows and everything a pipeline reads of them.

    `rows` index `train` (with `as_subset`, `train` holds only the chosen rows, in their order, and
    `rows` is 0..n-1 over it); `train_tokens` covers `rows`, `val_tokens` the whole validation split;
    `scoring_rows` / `evaluation_rows` are its seeded halves (validation_halves).
    """

    train: TaskData
    val: TaskData
    rows: list[int]
    train_tokens: TokenizedSplit
    val_tokens: TokenizedSplit
    scoring_rows: list[int]
    evaluation_rows: list[int]


def prepare_task(splits: TaskSplits, tokenizer, *, samples: int | None, sample_order: str, seed: int,
                 max_length: int, as_subset: bool = False) -> PreparedTask:
    """Choose `samples` training rows (select_samples with `sample_order` and `seed`), tokenize them and the
    whole validation split with `max_length`, and cut the validation halves with `seed`.
    Cost: one tokenizer call per split over the rows used."""
    rows = select_samples(len(splits.train), samples, order=sample_order, seed=seed)
    train = splits.train
    if as_subset:
        train = train.subset(rows)
        rows = list(range(len(train)))
    train_tokens = tokenize_split(tokenizer, train, rows, max_length=max_length)
    val_tokens = tokenize_split(tokenizer, splits.val, None, max_length=max_length)
    scoring_rows, evaluation_rows = validation_halves(len(splits.val), seed)
    return PreparedTask(train, splits.val, rows, train_tokens, val_tokens, scoring_rows, evaluation_rows)
