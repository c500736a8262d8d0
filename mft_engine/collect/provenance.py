"""What a GradientState was built from, so a reused state (`mft run --state`) can be refused when it does
not fit the run: the model's weights, the data, the rows, and the collection settings.

A provenance is a plain JSON-able dict stored in the state's metadata. `provenance_difference` compares a
saved one with the current run's and names the first difference in words.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

#: rows shown in messages; the full list is compared through its sha256
FIRST_ROWS = 5
_CHUNK = 1 << 20
_HEX_SHOWN = 12


def _update(h: Any, data: bytes) -> None:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike.
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (hex) over every named parameter's name, shape, dtype and raw bytes, in named_parameters
    order (frozen parameters included, tied ones once).

    Two models have the same fingerprint exactly when their parameters are bit-identical and identically
    named and typed. Cost: one pass over the weights (a CPU copy of one tensor at a time when a tensor is
    on another device or not contiguous).
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        _update(h, name.encode())
        _update(h, json.dumps([list(t.shape), str(t.dtype)]).encode())
        # A 1-byte view reads every dtype's raw bytes, bf16 and fp8 included, which numpy cannot hold.
        raw = t.reshape(-1).view(torch.uint8).numpy()
        _update(h, memoryview(raw).cast("B"))
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (memory stays flat). Cost: one read of the
    file. Raises OSError when it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def split_sha256(data) -> str:
    """sha256 (hex) of a split's content as loaded: its texts, text pairs, labels and row ids, in row order
    (the same for a file, the embedded copy or the Hub). Cost: one pass over the split."""
    return hashlib.sha256(json.dumps([data.texts, data.text_pairs, data.labels, data.row_ids]).encode()).hexdigest()


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy and torch scalars
        return x.item()
    raise TypeError(f"row id {x!r} ({type(x).__name__}) is not JSON-able")


def rows_sha256(rows: list) -> str:
    """sha256 (hex) of the rows' compact JSON; order matters. Cost: one pass over the rows."""
    return hashlib.sha256(json.dumps(list(rows), separators=(",", ":"), default=_plain).encode()).hexdigest()


def build_provenance(*, model_fingerprint: str, rows: list, data_files: dict[str, str], reduction: str,
                     batch_size: int, train_mode: bool, seed: int, precision: str, max_length: int,
                     dropout_seeding: str | None = None, version: int = 1) -> dict[str, Any]:
    """What a collection was built from, as a plain JSON-able dict.

    `rows` (the row ids used, in order; 67k long for all of SST-2) is kept as their count, the sha256 of
    their JSON, and the first FIRST_ROWS for readable messages. `data_files` maps a role ("train") to the
    sha256 of that file or split. `dropout_seeding` names how train mode seeded its dropout masks
    (collect.distributed.DROPOUT_SEEDING; None: one seed for the whole pass, as before per-batch seeds).
    Cost: one pass over `rows`.
    """
    first = json.loads(json.dumps(list(rows[:FIRST_ROWS]), default=_plain))
    return {
        "version": int(version),
        "model_fingerprint": str(model_fingerprint),
        "data_files": {str(k): str(v) for k, v in data_files.items()},
        "rows": {"count": len(rows), "sha256": rows_sha256(rows), "first": first},
        "reduction": str(reduction),
        "batch_size": int(batch_size),
        "train_mode": bool(train_mode),
        "seed": int(seed),
        "precision": str(precision),
        "max_length": int(max_length),
        "dropout_seeding": dropout_seeding if train_mode else None,
    }


def _short(digest: Any) -> str:
    text = str(digest)
    return text[:_HEX_SHOWN] + "…" if len(text) > _HEX_SHOWN else text


def _rows_text(rows: dict[str, Any], other: str = "") -> str:
    count, first = rows.get("count"), list(rows.get("first") or [])
    if not first:
        return f"{count} {other}rows"
    listed = ", ".join(str(r) for r in first)
    return f"{count} {other}rows ({'first ' if isinstance(count, int) and count > len(first) else ''}{listed})"


def _mapping(x: Any) -> dict:
    # A hand-edited state may hold anything here; it then differs rather than raising.
    return x if isinstance(x, dict) else {}


def _mode(train_mode: Any) -> str:
    return "train mode (dropout on)" if train_mode else "eval mode (dropout off)"


def provenance_difference(saved: dict | None, current: dict) -> str | None:
    """None when the saved provenance and the current run's agree; else one phrase naming the first
    difference, checked in this order: version, model, data files, rows, reduction, batch size,
    train/eval mode, seed, precision, max length.

    E.g. "it was collected on 32 rows (first 0, 1, 2, 3, 4) and this run uses 64 rows (first 0, 1, 2, 3,
    4)" or "the model differs (fingerprint 3fa2c1d0e4b5… vs 91bc44e1a0ff…)" (saved first). A missing
    `saved` (a state written before provenance) or a field it lacks is a difference too; callers that accept
    such states check for None first. Cost: comparisons of short strings only.
    """
    if not isinstance(saved, dict):
        return "it records nothing of what it was built from"
    if saved.get("version") != current.get("version"):
        return (f"its provenance is version {saved.get('version')} and this run records version "
                f"{current.get('version')}")

    a, b = saved.get("model_fingerprint"), current.get("model_fingerprint")
    if a != b:
        return f"the model differs (fingerprint {_short(a)} vs {_short(b)})"

    fa, fb = _mapping(saved.get("data_files")), _mapping(current.get("data_files"))
    if sorted(fa) != sorted(fb):
        return (f"it was collected with data files {', '.join(sorted(fa)) or '(none)'} and this run has data "
                f"files {', '.join(sorted(fb)) or '(none)'}")
    for role in sorted(fb):
        if fa[role] != fb[role]:
            return f"the {role} data differs (sha256 {_short(fa[role])} vs {_short(fb[role])})"

    ra, rb = _mapping(saved.get("rows")), _mapping(current.get("rows"))
    if ra.get("count") != rb.get("count") or ra.get("sha256") != rb.get("sha256"):
        if ra.get("count") == rb.get("count") and ra.get("first") == rb.get("first"):
            # The shown rows agree: say the difference lies further on rather than print two equal lists.
            shown = ", ".join(str(r) for r in rb.get("first") or [])
            return (f"it was collected on {ra.get('count')} rows and this run uses {rb.get('count')} different "
                    f"rows" + (f" (both start {shown})" if shown else ""))
        same_count = ra.get("count") == rb.get("count")
        return (f"it was collected on {_rows_text(ra)} and this run uses "
                f"{_rows_text(rb, 'other ' if same_count else '')}")

    for key, flag in (("reduction", "--reduction"), ("batch_size", "--batch-size")):
        if saved.get(key) != current.get(key):
            return f"it was collected with {flag} {saved.get(key)} and this run uses {current.get(key)}"
    if saved.get("train_mode") != current.get("train_mode"):
        return (f"it was collected in {_mode(saved.get('train_mode'))} and this run collects in "
                f"{_mode(current.get('train_mode'))}")
    for key, flag in (("seed", "--seed"), ("precision", "--precision"), ("max_length", "--max-length")):
        if saved.get(key) != current.get(key):
            return f"it was collected with {flag} {saved.get(key)} and this run uses {current.get(key)}"
    if current.get("train_mode") and saved.get("dropout_seeding") != current.get("dropout_seeding"):
        return (f"its dropout masks were drawn with seeding {saved.get('dropout_seeding') or 'one seed per pass'} "
                f"and this run draws them with {current.get('dropout_seeding') or 'one seed per pass'} "
                "(collect again)")
    return None
