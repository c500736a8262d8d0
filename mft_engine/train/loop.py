"""The training loop shared by every method: AdamW, linear warm-up then linear decay, seeded
length-bucketed batches, optional bf16 autocast, gradient clipping, validation on the scoring half
(early stopping, checkpoints at target accuracy).

Honest evaluation (DESIGN.md): every choice made from validation data (early stopping, when to save a
checkpoint) reads only the seeded scoring half; reported figures come from the evaluation half.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batching import length_bucketed_batches
from ..device import graph_boundary
from ..errors import NonFiniteError
from ..evaluate.validation import ValidationSets
from ..report.progress import Progress
from .checkpoints import CheckpointTargets, TargetRecord
from .method import Method, Prepared

log = logging.getLogger("mft_engine")


def build_optimizer(param_groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the method's groups, each split into a decayed part (matrices) and an undecayed part
    (biases, LayerNorm weights: tensors with fewer than 2 dimensions). A group's own `lr` is kept."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        extra = {k: v for k, v in g.items() if k not in ("params", "name")}
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for part, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, " (no decay)")):
            if part:
                groups.append({"params": part, "weight_decay": wd, "name": g.get("name", "") + suffix, **extra})
    return torch.optim.AdamW(groups, lr=lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """LambdaLR: factor rises linearly 0 → 1 over `warmup_steps`, then falls linearly to 0 at `total_steps`.
    Every group's own lr follows the same factor."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainLog:
    """What the loop did: per-step loss and learning rate, validations, stopping and timings."""

    total_steps: int
    steps: int = 0
    epochs_started: int = 0
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    stopped_when_saved: bool = False
    best_step: int | None = None
    best_metric: float | None = None
    train_s: float = 0.0
    validation_s: float = 0.0
    checkpoint_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("total_steps", "steps", "epochs_started", "stopped_early",
                                              "stopped_when_saved", "best_step",
                                              "best_metric", "train_s", "validation_s", "checkpoint_s")}


def plan_steps(n_rows: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps of a run: max_steps when > 0, else epochs × ⌈n_rows / batch_size⌉."""
    return max_steps if max_steps > 0 else epochs * math.ceil(n_rows / batch_size)


def train_model(
    prepared: Prepared,
    method: Method,
    config,
    train_tokens,
    train_rows: Sequence[int],
    validation: ValidationSets,
    metric: str,
    targets: CheckpointTargets | None = None,
    on_reached: Callable[[list[TargetRecord], int], None] | None = None,
    progress: Progress | None = None,
) -> TrainLog:
    """Train `prepared.model` in place on `train_rows` of `train_tokens` as `config` says.

    Each step: forward (bf16 autocast when config.precision == "bf16") on a length-bucketed batch of
    config.batch_size rows, the model's mean loss, backward, the method's own clipping, the global clip
    at config.max_grad_norm, an AdamW step, a scheduler step. Validation on the scoring half runs every
    step while `targets.dense()`, at each pending save step, every config.eval_every steps while targets
    remain or early stopping is on, and never otherwise; `on_reached(records, step)` saves the checkpoints
    of targets reached and steps saved; config.stop_when_saved ends the run when none remains pending.
    Early stopping (config.early_stopping_patience > 0) restores the trainable state of the best
    validation on `metric`. Memory: the model, its gradients and AdamW's two moments for the trainable
    parameters (plus one copy of them under early stopping). Raises NonFiniteError on a NaN/Inf loss.
    """
    progress = progress or Progress()
    model = prepared.model
    device = next(model.parameters()).device
    total = plan_steps(len(train_rows), config.batch_size, config.epochs, config.max_steps)
    optimizer = build_optimizer(prepared.param_groups, config.lr, config.weight_decay)
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * total), total)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    patience = config.early_stopping_patience
    tlog = TrainLog(total_steps=total)
    best_state: dict[str, torch.Tensor] | None = None
    bad_validations = 0
    bf16 = config.precision == "bf16"

    torch.manual_seed(config.data.seed)  # dropout
    model.train()
    progress.phase(f"train {config.method}", total)
    t_start = time.perf_counter()
    epoch = 0
    while tlog.steps < total:
        batches = length_bucketed_batches(train_rows, train_tokens.lengths, config.batch_size, config.data.seed, epoch)
        tlog.epochs_started = epoch + 1
        epoch += 1
        for rows in batches:
            if tlog.steps >= total:
                break
            batch = {k: v.to(device) for k, v in train_tokens.batch(rows).items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteError(f"the training loss became {value} at step {tlog.steps + 1}; "
                                     f"lower --lr {config.lr:g} or use --precision fp32")
            loss.backward()
            method.clip_gradients(model, config)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in trainable], config.max_grad_norm)
            tlog.lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
            graph_boundary(device)
            optimizer.zero_grad(set_to_none=True)
            tlog.steps += 1
            tlog.losses.append(value)
            info: dict[str, Any] = {"loss": value}

            step = tlog.steps
            due = step % config.eval_every == 0 or step == total
            want_targets = targets is not None and targets.pending and (targets.dense() or due or targets.saves_at(step))
            want_es = patience > 0 and due
            if want_targets or want_es:
                t = time.perf_counter()
                scoring = validation.metrics(model, "scoring")
                model.train()
                tlog.validation_s += time.perf_counter() - t
                value_m = float(scoring[metric])
                tlog.validations.append({"step": step, metric: value_m, "accuracy": scoring.get("accuracy")})
                info["val"] = value_m
                if want_targets:
                    accuracy = scoring.get("accuracy")
                    reached = targets.observe(step, None if accuracy is None else float(accuracy))
                    if reached and on_reached is not None:
                        t = time.perf_counter()
                        on_reached(reached, step)
                        model.train()
                        tlog.checkpoint_s += time.perf_counter() - t
                    if config.stop_when_saved and not targets.pending:
                        tlog.stopped_when_saved = True
                if patience > 0 and due:
                    if tlog.best_metric is None or value_m > tlog.best_metric:
                        tlog.best_metric, tlog.best_step, bad_validations = value_m, step, 0
                        best_state = {n: p.detach().clone() for n, p in trainable}
                    else:
                        bad_validations += 1
                        if bad_validations >= patience:
                            tlog.stopped_early = True
            progress.advance(1, **info)
            if tlog.stopped_early or tlog.stopped_when_saved:
                break
        if tlog.stopped_when_saved:
            log.info("every checkpoint saved: stopping at step %d of %d (--stop-when-saved)", tlog.steps, total)
            break
        if tlog.stopped_early:
            log.info("early stopping at step %d (best %s %.4f at step %s)", tlog.steps, metric,
                     tlog.best_metric, tlog.best_step)
            break
    progress.done()
    if best_state is not None and tlog.best_step != tlog.steps:
        with torch.no_grad():
            for n, p in trainable:
                p.copy_(best_state[n])
        log.info("restored the trainable state of step %s (best scoring-half %s)", tlog.best_step, metric)
    tlog.train_s = time.perf_counter() - t_start - tlog.validation_s - tlog.checkpoint_s
    model.eval()
    return tlog
