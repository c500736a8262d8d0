"""Where a task's data comes from: `load_task` and its precedence of sources.

Precedence: an explicit `data_dir` > the `MFT_DATA_DIR` environment variable > the copy of SST-2
embedded in the package > the Hugging Face Hub (`nyu-mll/glue`, or the task's own `hub_dataset` such
as `stanfordnlp/imdb`; only when `datasets` is installed, the Hub is not switched off and answers
quickly) > DataNotFoundError naming these options.
"""

from __future__ import annotations

import importlib
import importlib.util
import lzma
import os
from pathlib import Path
from urllib.parse import urlparse

from mft_engine.errors import ConfigError, DataError, DataNotFoundError
from mft_engine.data.glue import find_task_dir, parse_glue_rows, read_glue_split
from mft_engine.data.local import load_local_split
from mft_engine.data.tasks import GLUE_HUB_DATASET, TaskData, TaskSpec, get_task, task_names

ENV_DATA_DIR = "MFT_DATA_DIR"
HUB_DATASET = GLUE_HUB_DATASET
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
#: task name → split → file in bundled/ (xz-compressed copies of the original GLUE files).
EMBEDDED = {"sst2": {"train": "sst2_train.tsv.xz", "validation": "sst2_dev.tsv.xz"}}

_TRUE = {"1", "true", "yes", "on"}


def load_task(task: str | TaskSpec, split: str = "train", data_dir: str | Path | None = None) -> TaskData:
    """Load one split of a GLUE task from the first source that has it.

    Order: `data_dir` (a GLUE root holding `SST-2/`, or the task folder itself; no fallback when it
    lacks the task) > `$MFT_DATA_DIR` (same forms; a root without this task's folder falls through,
    a task folder missing the split's file is an error) > the embedded SST-2 > the Hub > error.
    `split` is "train", "validation" (aliases "dev", "val"), or for MNLI also "validation_matched" /
    "validation_mismatched"; MNLI's "validation" is the matched one, IMDB's is its test split.

    Cost: one pass over the file (the embedded SST-2 train decompresses ~3.5 MB in well under a
    second). Raises ConfigError for an unknown task or split, DataNotFoundError when no source has the
    data (one line naming --data-dir, MFT_DATA_DIR and the Hub), DataError for malformed data.
    """
    spec = get_task(task)
    split = spec.canonical_split(split)
    if data_dir is not None:
        return read_glue_split(data_dir, spec, split)

    env_dir = os.environ.get(ENV_DATA_DIR, "").strip()
    if env_dir:
        root = Path(env_dir).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"{ENV_DATA_DIR}={env_dir} is not a directory; expected a GLUE folder.")
        if find_task_dir(root, spec) is not None:
            return read_glue_split(root, spec, split)

    if split in EMBEDDED.get(spec.name, {}):
        return load_embedded(spec, split)

    hub_reason = hub_unavailable_reason()
    if hub_reason is None:
        return load_from_hub(spec, split)

    env_note = f" ({ENV_DATA_DIR}={env_dir} has no {spec.glue_dir} folder)" if env_dir else ""
    data_note = f"; {spec.data_note}" if spec.data_note else ""
    raise DataNotFoundError(
        f"no data for {spec.name} {split}{env_note}: pass --data-dir DIR ({spec.folder_layout(split)}), "
        f"set {ENV_DATA_DIR}=DIR, or use the Hugging Face Hub ({spec.hub_dataset}), which is unavailable: "
        f"{hub_reason}{data_note}."
    )


def load_embedded(task: str | TaskSpec, split: str = "train") -> TaskData:
    """Read the copy of a task shipped in `mft_engine/data/bundled/` (SST-2 train and validation).

    The files are the original GLUE TSVs, xz-compressed, read with the same parser as a folder.
    Raises DataNotFoundError when the task/split is not embedded or the file is missing from the install.
    """
    spec = get_task(task)
    split = spec.canonical_split(split)
    name = EMBEDDED.get(spec.name, {}).get(split)
    if name is None:
        raise DataNotFoundError(f"{spec.name} {split} is not embedded; only SST-2 train and validation are.")
    path = BUNDLED_DIR / name
    if not path.is_file():
        raise DataNotFoundError(f"{path} is missing from the installed package; reinstall mft_engine.")
    with lzma.open(path, "rt", encoding="utf-8-sig", newline="") as f:
        data = parse_glue_rows(f, spec, split, str(path))
    data.source = "embedded"
    return data


def hub_unavailable_reason(timeout: float = 1.5) -> str | None:
    """None when the Hub can be used now, else a short reason why not.

    Checks, cheapest first: `datasets` importable; HF_HUB_OFFLINE / HF_DATASETS_OFFLINE not set; the Hub
    endpoint (HF_ENDPOINT or https://huggingface.co) answering within `timeout` seconds (`hub_reachable`).
    """
    if importlib.util.find_spec("datasets") is None:
        return "the `datasets` package is not installed"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    if not _hub_reachable(timeout):
        return f"{hub_host()} cannot be reached"
    return None


def hub_host() -> str:
    """The host name of the Hugging Face Hub endpoint in use (HF_ENDPOINT, default huggingface.co)."""
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub endpoint (HF_ENDPOINT, default https://huggingface.co) answers an HTTP HEAD request
    within about `timeout` seconds (any status counts: the server is there).

    Without a network this answers at once (no DNS) or after `timeout`, where the Hub clients would retry
    for about 50 s. An HTTP answer, and for https a certificate valid for the host, is required, so a
    middlebox that accepts every TCP connection does not pass for the Hub. Proxies set in the environment
    (HTTPS_PROXY, NO_PROXY) are used as the Hub clients use them.
    """
    return _hub_reachable(timeout)


def _hub_reachable(timeout: float) -> bool:
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/"
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered, if only with an error status
    except (OSError, ValueError):  # URLError, timeouts, TLS failures, a malformed HF_ENDPOINT
        return False


def load_from_hub(task: str | TaskSpec, split: str = "train") -> TaskData:
    """Load a split from the Hub via `datasets.load_dataset` (downloads; cached by datasets): the task's
    `hub_dataset`, `nyu-mll/glue` for GLUE tasks, `stanfordnlp/imdb` for IMDB.

    Maps our names to the Hub's: the config (`sst2`, `mnli`, ..., IMDB's `plain_text`), the split (MNLI
    "validation" → "validation_matched", IMDB "validation" → "test") and the columns (MNLI
    premise/hypothesis, MRPC sentence1/sentence2); label ids are kept, since TaskSpec.labels follow
    the Hub's ClassLabel order. Raises DataError on a split without labels (GLUE's test splits carry -1),
    DataNotFoundError (one line) when `datasets` fails to load it. Callers probe the Hub first
    (`hub_unavailable_reason`), as `load_task` does, so that no network fails fast.
    """
    spec = get_task(task)
    split = spec.canonical_split(split)
    if spec.hub_config is None:
        raise DataNotFoundError(f"task {spec.name} has no Hub configuration; pass --data-dir.")
    datasets = importlib.import_module("datasets")
    hub_split = spec.hub_split(split)
    source = f"hub:{spec.hub_dataset}/{spec.hub_config}/{hub_split}"
    try:
        ds = datasets.load_dataset(spec.hub_dataset, spec.hub_config, split=hub_split)
    except Exception as e:  # network drops, a missing dataset or config: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataNotFoundError(
            f"{source} could not be loaded from the Hub ({type(e).__name__}{': ' + first if first else ''}); "
            "pass --data-dir DIR instead."
        ) from None
    cols = spec.hub_text_columns or spec.text_columns
    texts = [str(t).strip() for t in ds[cols[0]]]
    pairs = [str(t).strip() for t in ds[cols[1]]] if len(cols) == 2 else None
    raw = list(ds["label"])
    if spec.is_regression:
        labels: list = [float(x) for x in raw]
    else:
        labels = [int(x) for x in raw]
        bad = next((i for i, x in enumerate(labels) if not 0 <= x < spec.num_labels), None)
        if bad is not None:
            raise DataError(
                f"{source} row {bad} has label {labels[bad]}; expected 0..{spec.num_labels - 1} "
                "(test splits have no labels)."
            )
    if not texts:
        raise DataError(f"{source} has no rows; the {split} split of {spec.name} must not be empty.")
    return TaskData(
        task=spec, split=split, texts=texts, text_pairs=pairs, labels=labels,
        source=source, row_ids=list(range(len(texts))),
    )


def load_data(cfg, split: str = "train") -> TaskData:
    """Load `split` for a run configuration: a registered task id, or a local file/folder.

    Reads `cfg.task` and, when present, `cfg.data_dir`, `cfg.text_column`, `cfg.text_pair_column`,
    `cfg.label_column` (any object with those attributes). A registered id goes through `load_task`
    (and its precedence); anything else must be an existing CSV/TSV/JSONL file or folder (see
    `load_local_split`). Raises ConfigError naming the known tasks when it is neither.
    """
    task = str(cfg.task)
    try:
        spec = get_task(task)
    except ConfigError:
        if not Path(task).expanduser().exists():
            raise ConfigError(
                f"task {task!r} is neither a known task ({', '.join(task_names())}) nor an existing "
                "CSV/TSV/JSONL file or folder."
            ) from None
        return load_local_split(
            Path(task).expanduser(),
            split,
            text_column=getattr(cfg, "text_column", None),
            text_pair_column=getattr(cfg, "text_pair_column", None),
            label_column=getattr(cfg, "label_column", None),
        )
    return load_task(spec, split, getattr(cfg, "data_dir", None))
