"""What a folder the engine wrote is, and which models it offers, read from its files alone.

A folder is one of:

- `run`: an `mft run` results folder (results.json with `fractions` and `counts`, mask files); it offers
  the base model (no mask) and the masked model at each fraction;
- `finetune`: an `mft finetune` results folder (results.json with `method`, the stored parameters in
  stored/); it offers the fine-tuned model (LoRA-family: the adapters unmerged and merged), and its
  checkpoint folders are offered beside it;
- `checkpoint`: a Hugging Face model folder (config.json with a `model_type`): a `--save-at` checkpoint,
  an `mft export` folder or any BERT-family classifier;
- `compare`, `influence`, `validate`, `results`: results folders with no model (inspected only).

Nothing here loads weights: describing a folder reads its JSON files (a few kB), so the picker can list
every folder under results/ at once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MftError

#: The model the app offers without any folder: the bundled pretrained MiniLM (with a new seeded head).
BUNDLED = "minilm-sst2"
#: Folder kinds that hold a model to load; the others are inspected only.
MODEL_KINDS = ("run", "finetune", "checkpoint")
#: Fine-tuning methods whose stored result is a PEFT adapter: offered unmerged and merged.
ADAPTER_METHODS = ("lora", "lora8", "qlora")
#: The default seed of `mft run` / `mft finetune`, used when a record does not name one.
DEFAULT_SEED = 42


class AppInputError(MftError, ValueError):
    """Bad input given to the app (a file, a folder, a text, a choice); the page shows its message."""


@dataclass(frozen=True)
class ModelChoice:
    """One model the app can load: `source` (a folder's absolute path, or BUNDLED), `variant` ("" for the
    folder's only model, "base", "mask:<fraction>", "adapters", "merged", "stored") and the label the
    picker shows. `key` is the picker's value: `source::variant`."""

    source: str
    variant: str
    label: str

    @property
    def key(self) -> str:
        """The picker value `source::variant` (split back by split_key)."""
        return f"{self.source}::{self.variant}"


@dataclass
class FolderInfo:
    """A folder as read from its files: its `kind` (module docstring), `record` (results.json, or the
    model's config.json for a checkpoint), and `choices`, the models it offers (empty for kinds that hold
    none). `notes` are lines to show beside it (e.g. a fine-tuning run saved without its parameters)."""

    path: Path
    kind: str
    record: dict[str, Any]
    choices: list[ModelChoice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def split_key(key: str) -> tuple[str, str]:
    """(source, variant) of a picker key `source::variant`; AppInputError for anything else."""
    if not isinstance(key, str) or "::" not in key:
        raise AppInputError("pick a model first (the Models tab lists them)")
    source, variant = key.rsplit("::", 1)
    return source, variant


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; AppInputError naming the file when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AppInputError(f"{path} cannot be read as JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise AppInputError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def config_value(record: dict[str, Any], name: str, default: Any = None) -> Any:
    """A run setting from a record's `config`: the top-level field `name`, else the same name inside one
    nested section (`config.data.samples` when the settings are grouped), else `default`."""
    cfg = record.get("config")
    if not isinstance(cfg, dict):
        return default
    if name in cfg:
        return cfg[name]
    for section in cfg.values():
        if isinstance(section, dict) and name in section:
            return section[name]
    return default


def _fraction_label(f: float) -> str:
    return f"{100 * f:g}%"


def _is_hf_config(data: dict[str, Any]) -> bool:
    # A Hugging Face config names its architecture; `mft run`'s own config.json (its settings) does not.
    return isinstance(data.get("model_type"), str) or isinstance(data.get("architectures"), list)


def describe_folder(path: str | Path) -> FolderInfo:
    """Read what `path` is (see the module docstring) from results.json / config.json and list its models.

    Cost: one or two small JSON reads. Raises AppInputError for a missing path, a file, a folder that is
    neither a results folder nor a model folder, or an unreadable results.json.
    """
    p = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise AppInputError("no folder given; type the path of a results or model folder")
    if not p.exists():
        raise AppInputError(f"{p} does not exist")
    if not p.is_dir():
        raise AppInputError(f"{p} is a file, not a folder; give a results folder or a model folder")
    p = p.resolve()
    if (p / "results.json").is_file():
        record = read_json(p / "results.json")
        return _describe_results(p, record)
    if (p / "config.json").is_file():
        data = read_json(p / "config.json")
        if _is_hf_config(data):
            return FolderInfo(p, "checkpoint", data, [ModelChoice(str(p), "", _checkpoint_label(p))])
        if p.name.startswith(".") and p.name.endswith(".partial"):
            raise AppInputError(f"{p} is an unfinished run (a .partial folder); it has no results yet")
    raise AppInputError(f"{p} is neither a results folder (no results.json) nor a model folder (no config.json "
                        "naming a model_type)")


def _checkpoint_label(p: Path) -> str:
    # A --save-at checkpoint is named acc_<target> inside <run>/checkpoints/: show the run's name too.
    if p.parent.name == "checkpoints":
        return f"{p.parent.parent.name}/{p.name} · checkpoint"
    if (p / "mft_mask_info.json").is_file():
        return f"{p.name} · exported masked model"
    return f"{p.name} · model folder"


def _describe_results(p: Path, record: dict[str, Any]) -> FolderInfo:
    if isinstance(record.get("fractions"), list) and isinstance(record.get("counts"), dict):
        choices = [ModelChoice(str(p), "base", f"{p.name} · no mask (before)")]
        zeroed = record["counts"].get("zeroed", {})
        for f in record["fractions"]:
            frac = f.get("fraction") if isinstance(f, dict) else None
            if isinstance(frac, (int, float)) and not isinstance(frac, bool):
                k = f.get("k", zeroed.get(f"{frac:g}"))
                extra = f", {k:,} zeroed" if isinstance(k, int) else ""
                choices.append(ModelChoice(str(p), f"mask:{frac:g}", f"{p.name} · mask {_fraction_label(frac)}{extra}"))
        return FolderInfo(p, "run", record, choices)
    if isinstance(record.get("method"), str) and "trainable_params" in record:
        method = record["method"]
        info = FolderInfo(p, "finetune", record)
        if (p / "stored" / "method.json").is_file():
            if method in ADAPTER_METHODS:
                info.choices += [ModelChoice(str(p), "adapters", f"{p.name} · {method} adapters"),
                                 ModelChoice(str(p), "merged", f"{p.name} · {method} merged")]
            else:
                info.choices.append(ModelChoice(str(p), "stored", f"{p.name} · {method}"))
        else:
            info.notes.append(f"{p.name} was run with --no-save-model: its fine-tuned parameters were not stored")
        for ck in sorted((p / "checkpoints").glob("acc_*")) if (p / "checkpoints").is_dir() else []:
            if (ck / "config.json").is_file():
                info.choices.append(ModelChoice(str(ck), "", _checkpoint_label(ck)))
        return info
    if record.get("kind") == "compare":
        return FolderInfo(p, "compare", record)
    if isinstance(record.get("sweeps"), list) and "baselines" in record:
        return FolderInfo(p, "influence", record)
    if (p / "scorers.csv").is_file() or (p / "ground_truth.csv").is_file():
        return FolderInfo(p, "validate", record)
    return FolderInfo(p, "results", record)


def bundled_choice() -> ModelChoice:
    """The bundled classifier: MiniLM with the embedded SST-2 fine-tuning merged (`--model minilm-sst2`)."""
    return ModelChoice(BUNDLED, "", "minilm-sst2 · bundled (MiniLM fine-tuned on SST-2, embedded delta)")


def find_folders(root: str | Path, max_depth: int = 3, limit: int = 500) -> list[FolderInfo]:
    """Every results or model folder under `root` (itself included) down to `max_depth` levels, sorted by
    path; hidden folders (`.NAME.partial` runs in progress) and unreadable ones are skipped.

    Cost: a directory walk bounded by `max_depth` and `limit` folders, one small JSON read per candidate.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found: list[FolderInfo] = []
    base_depth = len(root.resolve().parts)
    for dirpath, dirnames, filenames in os.walk(root.resolve()):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("logs", "stored"))
        if len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        if "results.json" in filenames or "config.json" in filenames:
            try:
                info = describe_folder(here)
            except AppInputError:
                continue
            found.append(info)
            if info.kind == "finetune":
                dirnames[:] = []  # its checkpoints are already among its choices
            if len(found) >= limit:
                break
    return sorted(found, key=lambda i: str(i.path))
