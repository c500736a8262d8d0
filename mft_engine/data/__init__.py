"""Task data: the GLUE task registry, readers (GLUE folders, embedded SST-2, the Hub, local files),
sample selection, batching and tokenization. See DESIGN.md, "Data and models offline"."""

from mft_engine.data.batching import (
    TokenizedSplit,
    encode,
    fixed_batches,
    select_samples,
    split_by_length,
    token_budget_batches,
    tokenize_split,
    validation_halves,
)
from mft_engine.data.glue import find_task_dir, parse_glue_rows, read_glue_file, read_glue_split
from mft_engine.data.local import check_label_outliers, load_local, load_local_split, local_split_path
from mft_engine.data.sources import (
    ENV_DATA_DIR,
    HUB_DATASET,
    hub_host,
    hub_reachable,
    hub_unavailable_reason,
    load_embedded,
    load_data,
    load_from_hub,
    load_task,
)
from mft_engine.data.tasks import TaskData, TaskSpec, get_task, register_task, task_names

__all__ = [
    "ENV_DATA_DIR",
    "HUB_DATASET",
    "TaskData",
    "TaskSpec",
    "TokenizedSplit",
    "check_label_outliers",
    "encode",
    "find_task_dir",
    "fixed_batches",
    "get_task",
    "hub_host",
    "hub_reachable",
    "hub_unavailable_reason",
    "load_embedded",
    "load_data",
    "load_from_hub",
    "load_local",
    "load_local_split",
    "local_split_path",
    "load_task",
    "parse_glue_rows",
    "read_glue_file",
    "read_glue_split",
    "register_task",
    "select_samples",
    "split_by_length",
    "task_names",
    "token_budget_batches",
    "tokenize_split",
    "validation_halves",
]
