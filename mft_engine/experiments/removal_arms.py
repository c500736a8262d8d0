"""What one cell of `mft influence` measures, on which rows, and where finished cells are kept.

A cell is (checkpoint, scorer, arm, N). The arms change the same model three ways and are each compared
with the unmasked model on the same examples (paired; evaluate/paired.py):

- `zero`: the N lowest-scored eligible parameters set to 0 (the study's removal);
- `matched`: a sparse gradient step on the same N parameters with the same Euclidean norm as the
  zeroing's change, θ_S ← θ_S − η g_S with η = ‖θ_S‖ / ‖g_S‖ (zeroing θ_i whose sign matches g_i is
  itself a descent step: this control asks whether the removal does more than such a step would);
- `random`: N eligible parameters drawn uniformly (seeded) and zeroed — one per N, shared by the scorers.

Evaluation sets: `heldout` (rows of the training split the checkpoint and g never saw, when asked for),
`evaluation` (the seeded evaluation half of the validation split) — both tested — and `scoring` (the half
the scores were fitted on and N is chosen on; reported without tests, it is in-sample).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import TokenizedSplit, eval_batches, select_samples, tokenize_split
from ..errors import ConfigError, ResumeError
from ..evaluate.paired import example_losses, mcnemar, paired_bootstrap
from ..evaluate.predict import predict
from ..masking import Mask

ARMS = ("zero", "matched", "random")
MATCHED_GRADIENTS = ("scoring", "train")
#: the file in an influence folder that says which configuration its cells belong to
STATE_FILE = "sweep_state.json"
CELLS_DIR = "cells"
#: config keys that may differ on a resume: where the folder is, and where the arithmetic runs
RESUME_FREE_KEYS = ("out", "name", "resume", "device")


def parse_row_range(flag: str, value: str, n_rows: int) -> list[int]:
    """Row positions of `value`: "A:B" (rows A..B−1, 0-based) or "last:N" (the last N rows) of n_rows.

    Raises ConfigError naming `flag` for another syntax, an empty range or one outside [0, n_rows).
    """
    text = value.strip()
    m_last = re.fullmatch(r"last:(\d+)", text)
    m_range = re.fullmatch(r"(\d+):(\d+)", text)
    if m_last:
        count = int(m_last.group(1))
        start, stop = n_rows - count, n_rows
    elif m_range:
        start, stop = int(m_range.group(1)), int(m_range.group(2))
    else:
        raise ConfigError(f"{flag} {value!r} is not START:STOP or last:N (row positions of the training split)")
    if not 0 <= start < stop <= n_rows:
        raise ConfigError(f"{flag} {value!r} is not a non-empty range of the training split's {n_rows:,} rows")
    return list(range(start, stop))


def finetune_config(model_path: str) -> dict[str, Any] | None:
    """The config of the `mft finetune` run that saved the checkpoint folder `model_path` (its results.json
    two levels up: <run>/checkpoints/acc_<target>/), or None when there is none (a Hub id, a bare folder)."""
    p = Path(model_path).expanduser()
    rec = p.parent.parent / "results.json"
    if not (p.is_dir() and rec.is_file()):
        return None
    try:
        cfg = json.loads(rec.read_text()).get("config")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return cfg if isinstance(cfg, dict) and "samples" in cfg else None


def check_heldout_against_finetune(model_path: str, task: str, heldout: list[int], n_train: int) -> dict[str, Any]:
    """Whether the held-out rows were among the rows `model_path` was fine-tuned on, as far as its folder says.

    Returns {"known": bool, "note": str, "finetune_rows": "first N" | "seeded N" | None}; raises ConfigError
    when the recorded fine-tuning rows overlap `heldout`. Cost: reading one JSON file; a seeded draw of the
    fine-tuning rows (O(n_train)) when they were drawn.
    """
    cfg = finetune_config(model_path)
    if cfg is None:
        return {"known": False, "finetune_rows": None,
                "note": "the checkpoint does not record its fine-tuning rows (not an mft finetune --save-at folder)"}
    if str(cfg.get("task")) != task:
        return {"known": False, "finetune_rows": None,
                "note": f"the checkpoint was fine-tuned on task {cfg.get('task')!r}, not {task!r}"}
    samples, order = cfg.get("samples"), cfg.get("sample_order", "first")
    rows = select_samples(n_train, samples, order=order, seed=int(cfg.get("seed", 0))) if samples else None
    what = f"{order} {samples}" if samples else "all"
    used = set(range(n_train)) if rows is None else set(rows)
    overlap = used.intersection(heldout)
    if overlap:
        raise ConfigError(f"--heldout-rows: {len(overlap):,} of the held-out rows (e.g. row {min(overlap)}) were "
                          f"among the rows {model_path} was fine-tuned on ({what}); hold out rows it never saw")
    return {"known": True, "finetune_rows": what, "note": "no held-out row was among the fine-tuning rows"}


@dataclass
class EvalSet:
    """Rows of one split that every cell is evaluated on, with their labels in `rows` order.

    `tokens` index the split's rows; `split_labels` are the split's labels (by row position); `tested`:
    paired tests and the Holm family include this set (False for the scoring half, which N is chosen on).
    """

    name: str
    split: str
    tokens: TokenizedSplit
    rows: list[int]
    split_labels: list
    tested: bool
    rows_text: str

    @property
    def labels(self) -> np.ndarray:
        """The labels of `rows`, int64 [n], in `rows` order."""
        return np.asarray([self.split_labels[r] for r in self.rows], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """What results.json records of the set: split, row count, which rows, tested or not."""
        return {"split": self.split, "n": len(self.rows), "rows": self.rows_text, "tested": self.tested}

    def outcomes(self, model: torch.nn.Module, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """(correct bool [n], per-example cross-entropy float64 [n]) of `model` on the rows, in `rows` order.
        Cost: one eval-mode forward over the rows (evaluate.predict), O(n · C) after."""
        batches = eval_batches(self.tokens, self.rows, self.split_labels, False, max_tokens)
        return example_losses(predict(model, batches, len(self.rows)), self.labels)


def heldout_set(tokenizer, train, rows: list[int], max_length: int, text: str) -> EvalSet:
    """The held-out training rows as an EvalSet (tokenized here: the scorer bench tokenizes only g's rows).
    Cost: one tokenizer call over the rows."""
    tokens = tokenize_split(tokenizer, train, rows, max_length=max_length)
    return EvalSet("heldout", "train", tokens, rows, list(train.labels), True, text)


def rows_text(rows: list[int]) -> str:
    """A short record of sorted row positions: "A:B" when contiguous, else the positions comma-separated."""
    if rows and rows == list(range(rows[0], rows[-1] + 1)):
        return f"{rows[0]}:{rows[-1] + 1}"
    return ",".join(str(r) for r in rows)


def paired_figures(prefix: str, base: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
                   resamples: int, seed: int, tested: bool) -> dict[str, Any]:
    """The figures of one arm against the unmasked model on one set, keys prefixed by the set's name.

    Always: accuracy, mean loss, Δaccuracy and Δloss (after − before). Tested sets add the paired 95% CIs
    of both deltas (one paired bootstrap, the same resampled rows for both), McNemar's b, c and exact /
    mid-p p-values, and the bootstrap p-value of Δloss. Cost: O(resamples · n) for tested sets.
    """
    (c0, l0), (c1, l1) = base, after
    dc = c1.astype(np.float64) - c0.astype(np.float64)
    dl = l1 - l0
    out: dict[str, Any] = {f"{prefix}_accuracy": float(c1.mean()), f"{prefix}_loss": float(l1.mean()),
                           f"{prefix}_delta_accuracy": float(dc.mean()), f"{prefix}_delta_loss": float(dl.mean())}
    if not tested:
        return out
    acc = paired_bootstrap(dc, resamples=resamples, seed=seed)
    loss = paired_bootstrap(dl, resamples=resamples, seed=seed)
    mc = mcnemar(c0, c1)
    out.update({f"{prefix}_delta_accuracy_ci_low": acc.low, f"{prefix}_delta_accuracy_ci_high": acc.high,
                f"{prefix}_delta_loss_ci_low": loss.low, f"{prefix}_delta_loss_ci_high": loss.high,
                f"{prefix}_mcnemar_b": mc.b, f"{prefix}_mcnemar_c": mc.c,
                f"{prefix}_p_accuracy_exact": mc.p_exact, f"{prefix}_p_accuracy_mid": mc.p_mid,
                f"{prefix}_p_loss": loss.p_value})
    return out


def gather_flat(tensors: list[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """The values at flat `indices` (int64, ascending) over `tensors` concatenated, float64 CPU [k], without
    concatenating them. Cost: O(k + number of tensors)."""
    out = torch.empty(indices.numel(), dtype=torch.float64)
    start = 0
    for t in tensors:
        lo, hi = torch.searchsorted(indices, torch.tensor([start, start + t.numel()])).tolist()
        if hi > lo:
            out[lo:hi] = t.detach().reshape(-1)[(indices[lo:hi] - start).to(t.device)].to("cpu", torch.float64)
        start += t.numel()
    return out


def apply_matched_step(model: torch.nn.Module, names: list[str], shapes: list[tuple[int, ...]], indices: torch.Tensor,
                       gradient: dict[str, torch.Tensor]) -> tuple[Mask, dict[str, float]]:
    """θ_S ← θ_S − η g_S on the support S = `indices` (flat over `names`, ascending), η = ‖θ_S‖ / ‖g_S‖: a
    gradient step with the zeroing's norm. Returns (a Mask holding the original values: `restore(model)`
    undoes the step exactly, info: zeroed_norm ‖θ_S‖, gradient_norm ‖g_S‖, step_norm, cosine of the zeroing's
    change −θ_S with the descent direction −g_S, and the first-order changes of the gradient's loss,
    first_order_zero = −g_S·θ_S and first_order_step = −‖θ_S‖‖g_S‖: a step far outside the linear regime
    shows as an actual change far from its first-order one). ‖g_S‖ = 0 leaves θ unchanged (step_norm 0).
    Cost: O(k) gathers and writes, computed in float64 and written in the parameters' dtype.
    """
    own = dict(model.named_parameters())
    params = [own[n] for n in names]
    mask = Mask(names, shapes, indices).apply(model)
    theta = mask.values.to("cpu", torch.float64)
    g = gather_flat([gradient[n] for n in names], indices)
    t_norm, g_norm = float(theta.norm()), float(g.norm())
    eta = t_norm / g_norm if g_norm > 0 else 0.0
    new = theta - eta * g
    start = 0
    with torch.no_grad():
        for p in params:
            lo, hi = torch.searchsorted(indices, torch.tensor([start, start + p.numel()])).tolist()
            if hi > lo:
                if not p.is_contiguous():
                    raise ConfigError(f"parameter {names[params.index(p)]} is not contiguous; cannot step it in place")
                local = (indices[lo:hi] - start).to(p.device)
                p.data.view(-1)[local] = new[lo:hi].to(p.device, p.dtype)
            start += p.numel()
    cos = float(theta @ g) / (t_norm * g_norm) if t_norm > 0 and g_norm > 0 else 0.0
    step_norm = eta * g_norm
    return mask, {"zeroed_norm": t_norm, "gradient_norm": g_norm, "step_norm": step_norm,
                  "cosine_zeroing_descent": cos, "first_order_zero": -float(theta @ g),
                  "first_order_step": -step_norm * g_norm}


def safe_label(label: str) -> str:
    """A checkpoint label as a folder name (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label) or "checkpoint"


class CellStore:
    """Finished cells of one influence folder: `cells/<checkpoint>/<scorer>__<arm>__n<N>.json`, each written
    whole when the cell finishes (ResultsFolder.write_json), plus per checkpoint `checkpoint.json` (baseline,
    checks, fit) and `order_<scorer>.npy` (the scorer's lowest-first flat indices, so a resume need not
    score again). The folder keeps them through a failure (keep_on_failure), so a rerun skips them."""

    def __init__(self, folder):
        self.folder = folder
        self.root = folder.path / CELLS_DIR

    def _cell(self, label: str, scorer: str, arm: str, n: int) -> str:
        return f"{CELLS_DIR}/{safe_label(label)}/{scorer}__{arm}__n{n}.json"

    def _mark(self) -> None:
        self.folder.keep_on_failure(STATE_FILE, delete_after_commit=False)
        self.folder.keep_on_failure(CELLS_DIR, delete_after_commit=False)

    def get(self, label: str, scorer: str, arm: str, n: int) -> dict | None:
        """The finished cell's row, or None."""
        p = self.folder.path / self._cell(label, scorer, arm, n)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, label: str, scorer: str, arm: str, n: int, row: dict) -> None:
        """Write a finished cell (complete or absent: temporary file and rename)."""
        self.folder.write_json(self._cell(label, scorer, arm, n), row)
        self._mark()

    def checkpoint(self, label: str) -> dict | None:
        """The stored record of checkpoint `label` (baseline, checks, fit, disagreement), or None."""
        p = self.root / safe_label(label) / "checkpoint.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def put_checkpoint(self, label: str, record: dict) -> None:
        """Write (or replace) the record of checkpoint `label`."""
        self.folder.write_json(f"{CELLS_DIR}/{safe_label(label)}/checkpoint.json", record)
        self._mark()

    def order(self, label: str, scorer: str) -> torch.Tensor | None:
        """The saved lowest-first flat indices of `scorer` at this checkpoint (int64), or None."""
        p = self.root / safe_label(label) / f"order_{scorer}.npy"
        return torch.from_numpy(np.load(p)) if p.is_file() else None

    def put_order(self, label: str, scorer: str, order: torch.Tensor) -> None:
        """Save `scorer`'s lowest-first flat indices at `label` (int64 .npy, 8 bytes per index)."""
        with self.folder.writing(f"{CELLS_DIR}/{safe_label(label)}/order_{scorer}.npy") as p, open(p, "wb") as f:
            np.save(f, order.cpu().numpy().astype(np.int64))
        self._mark()


def resume_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config that must match for a resume (everything but RESUME_FREE_KEYS)."""
    return {k: v for k, v in config.items() if k not in RESUME_FREE_KEYS}


def check_resume(folder: Path, config: dict[str, Any]) -> None:
    """ResumeError unless `folder` holds an influence state written by the same configuration (naming the
    first differing settings). Reads STATE_FILE only; touches nothing."""
    p = folder / STATE_FILE
    try:
        stored = json.loads(p.read_text())["config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise ResumeError(f"{folder} is not an influence folder (no readable {STATE_FILE} in it)") from None
    mine, theirs = resume_identity(config), resume_identity(stored)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in differ[:4])
        raise ResumeError(f"{folder} was started with other settings ({what} differ); resume it with the same "
                          "flags or start another --name")


def holm_threshold_note(resamples: int, family: int, alpha: float) -> str | None:
    """A warning when the bootstrap's smallest p-value, 2 / (resamples + 1), cannot pass Holm's first step
    α / family: then no Δloss test can be significant, whatever the data."""
    if family and 2.0 / (resamples + 1) > alpha / family:
        need = math.ceil(2.0 * family / alpha)
        return (f"--resamples {resamples} cannot resolve Holm's threshold {alpha:g}/{family} for the Δloss tests; "
                f"use at least {need}")
    return None
