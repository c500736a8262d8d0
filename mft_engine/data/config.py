"""`DataConfig`: which data a pipeline reads and how it is made ready, declared once.

`mft run`, `mft finetune`, the studies and the scorer pipelines compose it (`fields.compose`), each with
its own defaults where they differ (`samples`; `eval_batch_tokens` is 4096 for the scorer pipelines and
8192 elsewhere), so flags, config.json keys and sweep axes keep their flat names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..fields import COUNT_MAX, SEED_MAX, check_int_range, help_field
from .prepared import PreparedTask, TaskSplits, load_splits, prepare_task

SAMPLE_ORDERS = ("first", "seeded")


@dataclass
class DataConfig:
    """The task, where its files are, the training rows chosen, tokenization and evaluation batching.

    `seed` is the run's one seed: it draws the rows (`sample_order="seeded"`) and the validation halves,
    and pipelines seed their heads, dropout and controls from it too. Validated at construction
    (ConfigError naming the flag).
    """

    task: str = help_field("task id (sst2, mrpc, cola, ...) or a local CSV/TSV/JSONL file or folder", "sst2")
    data_dir: str | None = help_field("GLUE root or task folder; else $MFT_DATA_DIR, the embedded SST-2, the Hub", None)
    text_column: str | None = help_field("text column of a local file task", None)
    text_pair_column: str | None = help_field("second text column of a local pair task", None)
    label_column: str | None = help_field("label column of a local file task", None)
    samples: int | None = help_field("training rows used (default: all)", None, aliases=("--max-train-samples",))
    sample_order: str = help_field("first (first N rows in file order) | seeded (N rows drawn with the seed)", "first")
    seed: int = help_field("seed of the sampling, the validation halves and everything else the run seeds", 42)
    max_length: int = help_field("maximum tokens per sentence (pair)", 128)
    eval_batch_tokens: int = help_field("token budget of an evaluation batch", 8192)

    def __post_init__(self) -> None:
        if self.samples is not None:
            check_int_range("--samples", self.samples, 1, COUNT_MAX)
        check_int_range("--seed", self.seed, 0, SEED_MAX)
        for name, lo in (("max_length", 2), ("eval_batch_tokens", 1)):
            check_int_range(f"--{name.replace('_', '-')}", getattr(self, name), lo, COUNT_MAX)
        if self.sample_order not in SAMPLE_ORDERS:
            raise ConfigError(f"--sample-order {self.sample_order!r} is not one of {', '.join(SAMPLE_ORDERS)}")

    def elsewhere(self, task: str, data_dir: str | None, samples: int | None) -> DataConfig:
        """The same settings for another task and data folder (the transfer study's target)."""
        return dataclasses.replace(self, task=task, data_dir=data_dir, samples=samples)

    def load_splits(self) -> TaskSplits:
        """Both splits of the task (see data.load_splits). Cost: reading the two files once."""
        return load_splits(self)

    def prepare(self, splits: TaskSplits, tokenizer, *, as_subset: bool = False) -> PreparedTask:
        """`splits` made ready with this config's rows, seed and max_length (see data.prepare_task).
        Cost: one tokenizer call per split over the rows used."""
        return prepare_task(splits, tokenizer, samples=self.samples, sample_order=self.sample_order,
                            seed=self.seed, max_length=self.max_length, as_subset=as_subset)
