"""Loaded classifiers: each model the app offers, loaded lazily and once, with what the page shows of it.

A `Classifier` holds the model, its tokenizer, the task's label names and the parameter counts; its
`predict` returns softmax probabilities and the wall time of the call. The `ModelStore` maps picker keys
(see sources.ModelChoice) to classifiers, loading each on first use under a per-key lock (two browser
tabs asking for the same model wait for one load) and keeping the `capacity` most recently used.

Models stay where `models.load_model` puts them (fp32, CPU: the only device the engine runs on today).
Loading never writes: masks are applied to the in-memory copy, adapters merged into a copy.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import get_task
from ..errors import MftError
from ..masking import Mask
from ..models import load_model, minilm_path
from ..models.delta import bundled_path
from ..train import get_method
from .sources import (
    ADAPTER_METHODS,
    BUNDLED,
    DEFAULT_SEED,
    AppInputError,
    FolderInfo,
    ModelChoice,
    bundled_choice,
    config_value,
    describe_folder,
    find_folders,
    read_json,
    split_key,
)

log = logging.getLogger("mft_engine")

#: Tokens per input when neither the run nor the model says otherwise (the engine's --max-length default).
DEFAULT_MAX_LENGTH = 128


@dataclass
class Classifier:
    """A loaded sequence classifier and what the page shows of it.

    `counts`: total parameters (the loaded module's elements), trainable (the fine-tuning run's count, None
    when the model is not a fine-tuning result), zeroed (the mask's size, a learned mask's pruned weights or
    an export's zeroed count; 0 otherwise) and stored bytes (what must be kept beside the named base model to
    rebuild it: the run's stored parameters, the mask file, or a model folder's weight files).
    `label_names[i]` names class i; one name and `regression` for a regression head.
    """

    key: str
    label: str
    model: torch.nn.Module
    tokenizer: Any
    label_names: list[str]
    is_pair: bool
    max_length: int
    counts: dict[str, int | None]
    source_note: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def regression(self) -> bool:
        """Whether the head is a regression head (one output: a score, no softmax)."""
        return len(self.label_names) == 1

    @torch.inference_mode()
    def predict(self, text: str, pair: str | None = None) -> tuple[np.ndarray, float]:
        """(probabilities [num_labels] float64, latency in ms) of one input: tokenize (truncated to
        `max_length` tokens) and one forward pass, timed together. A regression head returns its raw score
        in a length-1 array. Cost: one forward over ≤ max_length tokens."""
        with self.lock:  # one forward at a time per model: torch already uses every core for one
            t0 = time.perf_counter()
            enc = self.tokenizer(text, pair if self.is_pair else None, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            logits = self.model(**enc).logits.float()[0]
            ms = (time.perf_counter() - t0) * 1e3
        if self.regression:
            return logits.double().numpy(), ms
        return torch.softmax(logits.double(), -1).numpy(), ms

    def predict_many(self, texts: list[str], pairs: list[str] | None = None,
                     on_row: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n, num_labels], latency per row in ms [n]) for n inputs, one forward per row so
        each latency is that example's own. `on_row(done, n)` is called after each row. Cost: n forwards."""
        n = len(texts)
        probs = np.zeros((n, len(self.label_names)), dtype=np.float64)
        lat = np.zeros(n, dtype=np.float64)
        for i, t in enumerate(texts):
            probs[i], lat[i] = self.predict(t, pairs[i] if pairs is not None else None)
            if on_row is not None:
                on_row(i + 1, n)
        return probs, lat


def task_labels(task: Any, num_labels: int) -> tuple[list[str], bool]:
    """(class names, is a pair task) for a task name the engine knows; class ids as names otherwise."""
    try:
        spec = get_task(task) if isinstance(task, str) and task else None
    except MftError:
        spec = None
    if spec is not None and spec.num_labels == num_labels:
        names = spec.label_names or spec.labels or ("score",)
        return list(names), spec.is_pair
    return (["score"] if num_labels == 1 else [str(i) for i in range(num_labels)]), False


def _num_labels(task: Any, record: dict[str, Any]) -> int:
    # The task's own count; for a task the engine does not know (a local folder), the recorded metrics'
    # per-class recall has one entry per class, and a regression record has no recall at all.
    try:
        return get_task(task).num_labels
    except (MftError, TypeError):
        pass
    for m in (record.get("before"), (record.get("evaluation") or {}).get("whole")):
        if isinstance(m, dict):
            return len(m["recall_per_class"]) if "recall_per_class" in m else 1
    raise AppInputError(f"cannot tell how many classes the task {task!r} of this run has")


def _file_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _load_base(record: dict[str, Any]):
    """The base model a results folder's run started from (same name, seed and max length), its task and
    label count."""
    name, task = config_value(record, "model"), config_value(record, "task")
    if not isinstance(name, str):
        raise AppInputError("the folder's results.json does not name the model it ran on (config.model)")
    num_labels = _num_labels(task, record)
    max_length = config_value(record, "max_length")
    lm = load_model(name, num_labels, seed=int(config_value(record, "seed", DEFAULT_SEED)),
                    problem_type="regression" if num_labels == 1 else None,
                    max_length=max_length if isinstance(max_length, int) else None)
    return lm, task, num_labels, (max_length if isinstance(max_length, int) else None)


def _max_length(wanted: int | None, limit: int | None) -> int:
    n = wanted or DEFAULT_MAX_LENGTH
    return min(n, limit) if limit else n


def load_choice(choice: ModelChoice, info: FolderInfo | None) -> Classifier:
    """Load the model `choice` names (see sources.ModelChoice), `info` being its folder (None for the
    bundled model). Cost: one model load (weights read from disk), plus applying a mask (O(k)) or merging
    adapters (one copy of the model). Raises an MftError subclass with one line on any failure."""
    if choice.source == BUNDLED:
        lm = load_model(BUNDLED, 2, seed=DEFAULT_SEED)
        names, pair = task_labels("sst2", 2)
        # what is stored: the base encoder's weights and the embedded fine-tuning delta merged into them
        weights = _file_bytes([*minilm_path().glob("*.safetensors"), bundled_path(BUNDLED)])
        return Classifier(choice.key, choice.label, lm.model, lm.tokenizer, names, pair,
                          _max_length(None, lm.max_tokens), {"total": _numel(lm.model), "trainable": None,
                                                             "zeroed": 0, "stored_bytes": weights}, lm.source)
    assert info is not None
    if info.kind == "run":
        return _load_run(choice, info)
    if info.kind == "finetune" and choice.source == str(info.path):
        return _load_finetune(choice, info)
    return _load_checkpoint(choice, Path(choice.source))


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _load_run(choice: ModelChoice, info: FolderInfo) -> Classifier:
    record = info.record
    lm, task, num_labels, max_length = _load_base(record)
    zeroed, stored = 0, 0
    if choice.variant.startswith("mask:"):
        fraction = float(choice.variant.split(":", 1)[1])
        entry = next((f for f in record["fractions"] if isinstance(f, dict)
                      and isinstance(f.get("fraction"), (int, float)) and abs(f["fraction"] - fraction) < 1e-12), None)
        if entry is None or not isinstance(entry.get("mask_file"), str):
            raise AppInputError(f"{info.path}: results.json names no mask file for fraction {fraction:g}")
        path = info.path / entry["mask_file"]
        mask = Mask.load(path)
        saved, mask.values = mask.values, None
        mask.apply(lm.model)  # in memory only: the mask file and the folder are left as they are
        # The saved values are the run's own weights at the zeroed positions: equal values prove the model
        # rebuilt from its name and seed is the one the mask was selected on (as `mft export` checks).
        if saved is not None and not torch.equal(saved, mask.values):
            raise AppInputError(f"the model rebuilt from {info.path} differs from the run's model at the masked "
                                "positions (was its model folder changed since?)")
        zeroed, stored = len(mask), path.stat().st_size
    names, pair = task_labels(task, num_labels)
    return Classifier(choice.key, choice.label, lm.model, lm.tokenizer, names, pair,
                      _max_length(max_length, lm.max_tokens), {"total": _numel(lm.model), "trainable": None,
                                                               "zeroed": zeroed, "stored_bytes": stored}, lm.source)


def _load_finetune(choice: ModelChoice, info: FolderInfo) -> Classifier:
    record = info.record
    lm, task, num_labels, max_length = _load_base(record)
    method = get_method(record["method"])
    model = method.load(lm.model, info.path / "stored")
    if choice.variant == "merged" and record["method"] in ADAPTER_METHODS:
        model = method.merged_model(model)
    zeroed = 0
    meta = read_json(info.path / "stored" / "method.json")
    if isinstance(meta.get("shapes"), dict) and isinstance(meta.get("kept"), dict):
        # a learned mask: the weights it prunes are those it does not keep
        zeroed = sum(int(np.prod(s)) for s in meta["shapes"].values()) - sum(int(k) for k in meta["kept"].values())
    names, pair = task_labels(task, num_labels)
    total = record.get("total_params") if record["method"] in ("lora8", "qlora") else None
    counts = {"total": int(total) if isinstance(total, int) else _numel(model),
              "trainable": record.get("trainable_params"), "zeroed": zeroed,
              "stored_bytes": record.get("stored_bytes")}
    return Classifier(choice.key, choice.label, model.eval(), lm.tokenizer, names, pair,
                      _max_length(max_length, lm.max_tokens), counts, lm.source)


def _load_checkpoint(choice: ModelChoice, path: Path) -> Classifier:
    config = read_json(path / "config.json")
    id2label = config.get("id2label") if isinstance(config.get("id2label"), dict) else {}
    num_labels = len(id2label) or int(config.get("num_labels", 2))
    lm = load_model(str(path), num_labels)
    task, zeroed = None, 0
    if (path / "mft_checkpoint.json").is_file():
        task = read_json(path / "mft_checkpoint.json").get("task")
    if (path / "mft_mask_info.json").is_file():
        mask_info = read_json(path / "mft_mask_info.json")
        zeroed = int(mask_info.get("zeroed", 0))
        results = Path(str(mask_info.get("results_dir", "")))
        if (results / "results.json").is_file():
            task = config_value(read_json(results / "results.json"), "task")
    names, pair = task_labels(task, num_labels)
    if task is None and id2label:
        # a model folder of unknown origin: its own label names, unless they are the LABEL_i placeholders
        own = [str(id2label.get(str(i), i)) for i in range(num_labels)]
        if not all(n == f"LABEL_{i}" for i, n in enumerate(own)):
            names = own
    weights = _file_bytes([*path.glob("*.safetensors"), *path.glob("*.bin")])
    return Classifier(choice.key, choice.label, lm.model, lm.tokenizer, names, pair,
                      _max_length(None, lm.max_tokens), {"total": _numel(lm.model), "trainable": None,
                                                         "zeroed": zeroed, "stored_bytes": weights}, lm.source)


class ModelStore:
    """The models the app offers (picker keys → choices) and the ones loaded so far.

    `add_folder` and `scan` add choices from folders (reading JSON only); `get` loads a model on first use
    and keeps the `capacity` most recently used. Thread-safe: gradio runs events on worker threads.
    """

    def __init__(self, folders: list[str | Path] = (), capacity: int = 6, bundled: bool = True):
        self.capacity = capacity
        self._choices: dict[str, ModelChoice] = {}
        self._folders: dict[str, FolderInfo] = {}
        self._loaded: OrderedDict[str, Classifier] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.preloaded: list[str] = []
        for f in folders:
            self.preloaded += [c.key for c in self.add_folder(f)]
        if bundled:
            c = bundled_choice()
            self._choices[c.key] = c

    def add_folder(self, path: str | Path) -> list[ModelChoice]:
        """Add the models `path` offers; returns them. AppInputError when it is not a folder the engine
        wrote or holds no model (an inspect-only folder such as a compare table)."""
        info = describe_folder(path)
        if not info.choices:
            why = "; ".join(info.notes) or f"it is a {info.kind} results folder (open it in Inspect)"
            raise AppInputError(f"{info.path} holds no model to load: {why}")
        with self._guard:
            self._register(info)
        return info.choices

    def _register(self, info: FolderInfo) -> None:
        for c in info.choices:
            self._choices[c.key] = c
            self._folders[c.source] = info if c.source == str(info.path) else self._folders.get(c.source, info)

    def scan(self, root: str | Path) -> list[FolderInfo]:
        """Add every model folder under `root` (see sources.find_folders); returns the folders found, those
        without a model included (for the Inspect picker). Cost: one small JSON read per folder."""
        found = find_folders(root)
        with self._guard:
            for info in found:
                if info.choices:
                    self._register(info)
        return found

    def choices(self) -> list[tuple[str, str]]:
        """(label, key) of every model offered, preloaded folders first, then the rest by label."""
        first = [self._choices[k] for k in self.preloaded if k in self._choices]
        rest = sorted((c for k, c in self._choices.items() if k not in self.preloaded), key=lambda c: c.label)
        return [(c.label, c.key) for c in first + rest]

    def loaded_keys(self) -> list[str]:
        """Keys of the models in memory, least recently used first."""
        with self._guard:
            return list(self._loaded)

    def get(self, key: str) -> Classifier:
        """The classifier `key` names, loaded on first use (once, even when asked from several threads).
        AppInputError for a key the store does not offer; the loader's MftError when loading fails."""
        source, _ = split_key(key)
        with self._guard:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            choice = self._choices.get(key)
            if choice is None:
                raise AppInputError(f"no model {key!r} is offered; add its folder in the Models tab")
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._loaded:
                    return self._loaded[key]
            t0 = time.perf_counter()
            clf = load_choice(choice, self._folders.get(source))
            log.info("app: loaded %s in %.2f s", choice.label, time.perf_counter() - t0)
            with self._guard:
                self._loaded[key] = clf
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            return clf
