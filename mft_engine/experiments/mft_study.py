"""The BERT-MFT study as one pipeline: evaluate → collect → test → select → zero → evaluate, plus a control.

`run_study(config)` is what `mft run` calls; it writes results/mft_<timestamp>/ (see write_outputs) and
returns a StudyResult. Nothing is chosen from validation data here, so the whole split is reported.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .. import ops
from ..bench.bounds import read_bandwidth
from ..collect import GradientState, collect_gradients
from ..collect.distributed import (DROPOUT_SEEDING, World, batch_cost, broadcast, check_resume_world,
                                   check_same_on_every_rank, init_from_env, rank_tag, reduce_state, shard_by_cost)
from ..collect.provenance import build_provenance, model_fingerprint, provenance_difference, split_sha256
from ..collect.state import StateError
from ..config import RunConfig
from ..data import Batch, TaskData, eval_batches, fixed_batches, gradient_batches
from ..device import MemoryPeaks, device_summary, resolve_device, synchronize
from ..errors import ConfigError, ResumeError
from ..evaluate import classification_metrics, evaluate_model, predict
from ..evaluate.bootstrap import bootstrap_ci
from ..masking import DetrimentalSelector, check_exclude_patterns, eligible_parameters, random_mask
from ..models import load_model
from ..report import ResultsFolder, machine_info, versions
from ..report.folder import PARTIAL_SUFFIX
from ..report.progress import Progress
from .outputs import write_outputs

log = logging.getLogger("mft_engine")


@dataclass
class StudyResult:
    """Everything `mft run` reports; `record` is results.json. On a torchrun rank other than 0, `out_dir`
    is None and `record` holds only the rank: rank 0 writes and reports."""

    out_dir: Path | None
    record: dict[str, Any]
    state: GradientState | None
    selections: list = field(default_factory=list)


def _evaluate(model, tokens, data: TaskData, cfg: RunConfig, progress: Progress, label: str) -> dict:
    """The task's metrics on the whole validation split; for classification also `accuracy_ci95`, the
    seeded percentile-bootstrap 95% interval of the accuracy over the rows (DEFAULT_RESAMPLES resamples)."""
    progress.phase(f"evaluate {label}", len(data))
    rows = list(range(len(data)))
    batches = eval_batches(tokens, rows, data.labels, data.is_regression, cfg.data.eval_batch_tokens)
    if data.num_labels == 1:
        metrics = evaluate_model(model, batches, data.labels, data.num_labels, on_batch=lambda n: progress.advance(n))
    else:
        logits = predict(model, batches, len(data.labels), on_batch=lambda n: progress.advance(n))
        pred = logits.argmax(-1)
        metrics = classification_metrics(data.labels, pred, data.num_labels)
        correct = (np.asarray(pred) == np.asarray(data.labels, dtype=np.int64)).astype(np.float64)
        ci = bootstrap_ci(correct, seed=cfg.data.seed)
        metrics["accuracy_ci95"] = [ci.low, ci.high]
    progress.done()
    return metrics


def chance_check(before: dict, labels) -> dict | None:
    """Whether the "before" classifier is at chance: its accuracy's bootstrap 95% interval reaches down to
    the majority-class rate of the split (or below it). Returns {"majority_rate", "majority_label",
    "at_chance", "note"} (note: one plain sentence when at chance, else None); None for regression."""
    if "accuracy_ci95" not in before:
        return None
    values, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    majority = float(counts.max() / counts.sum())
    low, high = before["accuracy_ci95"]
    at_chance = bool(low <= majority)
    note = None
    if at_chance:
        note = (f"the classifier is at chance: its accuracy before zeroing, {before['accuracy']:.4f} (95% CI "
                f"{low:.4f}-{high:.4f}), is not above the {majority:.4f} of always predicting the majority class. "
                "Zeroing parameters of a classifier that has learned nothing cannot show harm or help: the changes "
                "after zeroing and in the random control are noise around chance. For a meaningful study use a "
                "trained classifier (--model minilm-sst2, the default, or a fine-tuned checkpoint folder).")
    return {"majority_rate": majority, "majority_label": int(values[counts.argmax()]), "at_chance": at_chance,
            "note": note}


CHECKPOINT = "collect_checkpoint.safetensors"
#: the checkpoints of a run under torchrun: one per rank, named with the rank and the world size
RANK_CHECKPOINTS = "collect_checkpoint.rank*-of-*.safetensors"


def checkpoint_name(w: World) -> str:
    """The collection checkpoint this process writes: CHECKPOINT alone; under torchrun its own block's,
    `collect_checkpoint.rank<r>-of-<n>.safetensors` (a resume must use the same number of processes)."""
    return CHECKPOINT if not w.distributed else f"collect_checkpoint.{rank_tag(w)}.safetensors"


def _check_resume_world(path: Path, w: World) -> None:
    """ResumeError unless the checkpoints in `path` were written by as many processes as run now."""
    check_resume_world(path, path.glob(RANK_CHECKPOINTS), w, "collected", single=(path / CHECKPOINT).is_file())


@contextlib.contextmanager
def _phase(name: str, peaks: MemoryPeaks) -> Iterator[None]:
    """Log a phase's start and end (logs/run.log: the boundaries a killed run is resumed across) and
    record its peak device memory."""
    log.info("phase %s start", name)
    with peaks.phase(name):
        yield
    log.info("phase %s end", name)


def resume_config(resume: str | Path, given: dict[str, Any]) -> RunConfig:
    """The RunConfig of the interrupted run in `resume` (its `.mft_<stamp>.partial` folder) with the flags
    `given` now; refused (ResumeError, nothing touched) unless the folder is a resumable partial folder with
    its config.json and collection checkpoint, or when a given flag other than --fraction differs."""
    path = Path(resume)
    if not path.is_dir():
        raise ResumeError(f"--resume {path} is not a folder")
    if not (path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)):
        what = "a finished results folder" if (path / "results.json").is_file() else "not an interrupted run's folder"
        raise ResumeError(f"--resume {path} is {what}; only an interrupted run's .mft_<time>.partial folder can be resumed")
    saved = path / "config.json"
    try:
        base = json.loads(saved.read_text())
        if not isinstance(base, dict):
            raise ValueError
    except (OSError, ValueError):
        raise ResumeError(f"--resume {path} is not an interrupted mft run folder (no readable config.json in it)") from None
    conflicts = [k for k, v in given.items() if k in base and k != "fraction" and base[k] != v]
    if conflicts:
        what = ", ".join(f"--{k.replace('_', '-')}" for k in conflicts)
        raise ResumeError(f"--resume {path} was started with another configuration ({what} differ)")
    if not (path / CHECKPOINT).is_file() and not any(path.glob(RANK_CHECKPOINTS)):
        raise ResumeError(f"--resume {path} holds no collection checkpoint ({CHECKPOINT}): the run was started with "
                          "--checkpoint-every 0, so it cannot be resumed; start it again")
    return RunConfig.from_dict({**base, **given})


def _load_checkpoint(path: Path, meta: dict, model) -> tuple[GradientState, dict]:
    """The checkpoint of a resumed run, checked against this run's collection key and model."""
    state, extra = GradientState.load(path, with_extra=True)
    if state.meta.get("collection_key") != meta["collection_key"]:
        raise ResumeError(f"--resume {path.parent} was collected with another configuration "
                          f"({state.meta.get('collection_key')} vs {meta['collection_key']})")
    saved = state.meta.get("provenance")
    if saved is not None:
        diff = provenance_difference(saved, meta["provenance"])
        if diff is not None:
            raise ResumeError(f"--resume {path.parent} cannot continue: {diff}")
    state.check_matches([(n, p) for n, p in model.named_parameters() if p.requires_grad])
    return state, extra


def _collect(cfg: RunConfig, model, batches: list[Batch], ckpt_path: Path, progress: Progress,
             meta: dict, resumed: tuple[GradientState, dict] | None, w: World) -> GradientState:
    """g and its statistics over `batches`: this rank's contiguous block of them under torchrun (then
    reduced over every rank in rank order), all of them alone. Each batch's dropout is seeded from the
    run's seed and its index, so the ranks' split does not change a batch's gradient. With
    --checkpoint-every, each process saves its own partial sums to `ckpt_path`; `resumed` continues them."""
    if w.distributed:
        return _collect_block(cfg, model, batches, ckpt_path, progress, meta, resumed, w)
    state, skip = None, 0
    if resumed is not None:
        state, extra = resumed
        skip = state.n_batches
        torch.set_rng_state(extra["rng"])
        if skip >= len(batches):
            log.info("the checkpoint holds the whole collection (%d batches); not collecting again", skip)
        else:
            log.info("resuming collection after %d of %d batches", skip, len(batches))
    else:
        torch.manual_seed(cfg.data.seed)

    def checkpoint(st: GradientState, done: int) -> None:
        st.save(ckpt_path, extra_tensors={"rng": torch.get_rng_state()})

    progress.phase("collect gradients", len(batches))
    progress.advance(skip)
    if skip < len(batches):
        state = collect_gradients(
            model, batches, state=state, train_mode=not cfg.eval_mode, precision=cfg.precision, skip=skip,
            on_batch=lambda i, loss: progress.advance(1, loss=loss), checkpoint=checkpoint,
            checkpoint_every=cfg.checkpoint_every, meta=meta, dropout_seed=cfg.data.seed)
        if cfg.checkpoint_every and state.n_batches % cfg.checkpoint_every:
            # The whole collection, kept until commit: a kill after this point does not collect again.
            checkpoint(state, state.n_batches)
    progress.done()
    return state


def _collect_block(cfg: RunConfig, model, batches: list[Batch], ckpt_path: Path, progress: Progress, meta: dict,
                   resumed: tuple[GradientState, dict] | None, w: World) -> GradientState:
    """Under torchrun: this rank's block of `batches`, continued from its own checkpoint when resumed (no
    RNG state is needed: dropout is seeded per batch), then reduced over every rank."""
    block = shard_by_cost([batch_cost(b) for b in batches], w)
    # the block is part of what a checkpoint holds: another cut of the batches must not continue it
    meta = {**meta, "block": [block.start, block.stop]}
    state = resumed[0] if resumed is not None else None
    if state is not None and state.meta.get("block") != meta["block"]:
        raise ResumeError(f"--resume {ckpt_path.parent}: rank {w.rank}'s checkpoint holds a block of batches "
                          f"{state.meta.get('block')}, this run cuts {meta['block']} (another mft_engine version "
                          "shares the batches otherwise); start the run again")
    skip = state.n_batches if state is not None else 0
    if skip:
        log.info("rank %d: resuming its block after %d of %d batches", w.rank, skip, len(block))

    def checkpoint(st: GradientState, done: int) -> None:
        st.save(ckpt_path)

    progress.phase(f"collect gradients (rank {w.rank}/{w.size})", len(block))
    progress.advance(skip)
    if skip < len(block):
        state = collect_gradients(
            model, [batches[i] for i in block], state=state, skip=skip, train_mode=not cfg.eval_mode,
            precision=cfg.precision, on_batch=lambda i, loss: progress.advance(1, loss=loss),
            checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every, meta=meta, dropout_seed=cfg.data.seed,
            first_index=block.start)
        if cfg.checkpoint_every and state.n_batches % cfg.checkpoint_every:
            checkpoint(state, state.n_batches)  # the whole block: a kill after this does not collect it again
    progress.done()
    state = reduce_state(state, w)
    state.meta.pop("block", None)  # the reduced state holds every block
    return state


def _reuse_state(cfg: RunConfig, model, provenance: dict) -> tuple[GradientState, bool]:
    """The --state file, refused when it was built from another model, data, rows or collection settings;
    (state, whether its provenance was checked) — states written before provenance are accepted with a warning."""
    state = GradientState.load(cfg.state)
    state.check_matches([(n, p) for n, p in model.named_parameters() if p.requires_grad])
    saved = state.meta.get("provenance")
    if saved is None:
        warnings.warn(f"--state {cfg.state} records nothing of what it was built from (written before provenance "
                      "was recorded); it is used unchecked", stacklevel=2)
        log.warning("--state %s has no provenance; used unchecked", cfg.state)
        return state, False
    diff = provenance_difference(saved, provenance)
    if diff is not None:
        raise StateError(f"--state {cfg.state} does not fit this run: {diff}")
    return state, True


def _check_distributed(cfg: RunConfig, resume, w: World) -> None:
    """Refuse ranks started differently (one line)."""
    digest = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "out"}, sort_keys=True, default=str)
    check_same_on_every_rank("configuration", digest, w)


def _collect_on_worker(cfg: RunConfig, progress: Progress, w: World, device: torch.device, resume) -> StudyResult:
    """A rank other than 0: prepare the same data and model, collect its block of batches and join the
    reduction; rank 0 writes the results folder, so this rank writes nothing but its own collection
    checkpoint there (--checkpoint-every)."""
    folder = Path(broadcast(None, w))  # rank 0 has created (or reopened) the results folder
    splits = cfg.data.load_splits()
    train = splits.train
    lm = load_model(cfg.model, train.num_labels, seed=cfg.data.seed,
                    problem_type="regression" if train.is_regression else None, max_length=cfg.data.max_length)
    lm.model.to(device)
    prepared = cfg.data.prepare(splits, lm.tokenizer)
    check_same_on_every_rank("sample list", json.dumps(prepared.rows), w)
    if cfg.state:
        return StudyResult(None, {"rank": w.rank}, None)
    batches = gradient_batches(prepared.train_tokens, prepared.rows, train.labels, train.is_regression,
                               reduction=cfg.reduction, batch_size=cfg.batch_size, keep_last=cfg.keep_last)
    meta = {"collection_key": cfg.collection_key(), "rank": w.rank}
    ckpt = folder / checkpoint_name(w)
    resumed = _load_checkpoint(ckpt, meta, lm.model) if resume is not None and ckpt.is_file() else None
    state = _collect(cfg, lm.model, batches, ckpt, progress, meta, resumed, w)
    return StudyResult(None, {"rank": w.rank}, state)


def run_study(cfg: RunConfig, progress: Progress | None = None, resume: str | Path | None = None) -> StudyResult:
    """Run the BERT-MFT study described by `cfg`; write and return its results folder.

    `resume` names an interrupted run's `.mft_<stamp>.partial` folder (see `resume_config`): the run goes on
    from its collection checkpoint and ends with the results the uninterrupted run would have written.
    Phases, each logged at start and end: evaluate before → collect → select → evaluate (after, control) →
    write. Cost on the defaults (minilm, 1000 SST-2 samples): one forward+backward per sample, three
    evaluations of the validation split per fraction (before, after, control), per fraction one
    sampled-bracket selection pass over θ and g, and one sha256 pass over the weights (provenance).
    """
    progress = progress or Progress()
    w = init_from_env(cfg.dist_backend)
    # Resolved before anything is written: a device this machine lacks is one line and exit 2.
    device = resolve_device(cfg.device, w.local_rank if w.distributed else None)
    if resume is not None:
        _check_resume_world(Path(resume), w)
    peaks = MemoryPeaks(device)
    if w.distributed:
        _check_distributed(cfg, resume, w)
        if not w.is_main:
            return _collect_on_worker(cfg, progress, w, device, resume)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with ResultsFolder(cfg.out, "mft", resume=resume) as folder:
        if resume is None:
            folder.write_json("config.json", cfg.to_dict())
        if w.distributed:
            broadcast(str(folder.path), w)  # the other ranks write their checkpoints there
        if cfg.checkpoint_every:
            for r in range(w.size):
                folder.keep_on_failure(checkpoint_name(World(r, w.size, r)))
        log.info("config: %s", cfg.to_dict())
        splits = cfg.data.load_splits()
        train, val = splits.train, splits.val
        timings["load_data_s"] = time.perf_counter() - t0

        t = time.perf_counter()
        lm = load_model(cfg.model, train.num_labels, seed=cfg.data.seed,
                        problem_type="regression" if train.is_regression else None, max_length=cfg.data.max_length)
        model, tok = lm.model.to(device), lm.tokenizer
        timings["load_model_s"] = time.perf_counter() - t
        log.info("model: %s", lm.source)
        log.info("labels: %s", train.label_summary)
        named_all = list(model.named_parameters())
        check_exclude_patterns(named_all, cfg.selection.exclude)
        eligible_all = eligible_parameters(named_all, cfg.selection.exclude_patterns())
        if not eligible_all:
            raise ConfigError(f"--exclude {cfg.selection.exclude!r} leaves no eligible parameter")

        t = time.perf_counter()
        prepared = cfg.data.prepare(splits, tok)
        if w.distributed:
            check_same_on_every_rank("sample list", json.dumps(prepared.rows), w)
        rows, train_tokens, val_tokens = prepared.rows, prepared.train_tokens, prepared.val_tokens
        timings["tokenize_s"] = time.perf_counter() - t

        t = time.perf_counter()

        batches = gradient_batches(train_tokens, rows, train.labels, train.is_regression, reduction=cfg.reduction,
                                   batch_size=cfg.batch_size, keep_last=cfg.keep_last)
        used_rows = [r for b in fixed_batches(rows, cfg.batch_size, keep_last=cfg.keep_last) for r in b] \
            if cfg.reduction == "batch-sum" else list(rows)
        row_ids = [train.row_ids[r] for r in used_rows]
        provenance = build_provenance(
            model_fingerprint=model_fingerprint(model), rows=row_ids, data_files={"train": split_sha256(train)},
            reduction=cfg.reduction, batch_size=cfg.batch_size, train_mode=not cfg.eval_mode, seed=cfg.data.seed,
            precision=cfg.precision, max_length=cfg.data.max_length, dropout_seeding=DROPOUT_SEEDING)
        meta = {"collection_key": cfg.collection_key(), "reduction": cfg.reduction,
                "train_mode": not cfg.eval_mode, "rows": row_ids, "provenance": provenance}
        ckpt = folder.path / checkpoint_name(w)
        resumed = _load_checkpoint(ckpt, meta, model) if resume is not None and ckpt.is_file() else None
        provenance_checked = None
        reused = None
        if cfg.state:
            reused, provenance_checked = _reuse_state(cfg, model, provenance)
            reused = reused.to(device)
        folder.confirm()
        timings["prepare_s"] = time.perf_counter() - t  # batches, provenance (one sha256 of the weights), checks

        t = time.perf_counter()
        with _phase("evaluate-before", peaks):
            before = _evaluate(model, val_tokens, val, cfg, progress, "before")
        timings["evaluate_before_s"] = time.perf_counter() - t

        t = time.perf_counter()
        with _phase("collect", peaks):
            state = reused if reused is not None else _collect(cfg, model, batches, ckpt, progress, meta, resumed, w)
        timings["collect_s"] = time.perf_counter() - t

        t = time.perf_counter()
        eligible = [(n, p) for n, p in eligible_all if n in state.grad_sum]
        if not eligible:
            raise ConfigError(f"--exclude {cfg.selection.exclude!r} leaves no eligible parameter with a gradient")
        with _phase("select", peaks):
            progress.phase("select", 1)
            selector = DetrimentalSelector(eligible, state.grad_sum, cfg.selection.lr, cfg.selection.rank_by,
                                           cfg.selection.literal, seed=cfg.data.seed)
            progress.done()
            # The study's headline count covers every parameter, the head included.
            all_named = [(n, p) for n, p in named_all if n in state.grad_sum]
            n_det_all = int(ops.detrimental_count([p.detach() for _, p in all_named],
                                                  [state.grad_sum[n] for n, _ in all_named],
                                                  cfg.selection.lr, literal=cfg.selection.literal, names=[n for n, _ in all_named]).sum())
        timings["select_s"] = time.perf_counter() - t

        # The zeroing's own bound: the bytes of θ and g it must read at the read bandwidth measured now,
        # with the thread count the zeroing runs with.
        read_bytes = sum(p.numel() * p.element_size() + state.grad_sum[n].numel() * state.grad_sum[n].element_size()
                         for n, p in eligible)
        t = time.perf_counter()
        bandwidth = read_bandwidth(device=device)
        timings["read_bandwidth_s"] = time.perf_counter() - t
        rows_out, selections = [], []
        # Each part of the per-fraction loop in its own field, so the parts add up to the total: zeroing
        # (the call, its warm repeat, the restores, the control mask), and the evaluations after and of the control.
        zeroing = evaluating_after = evaluating_control = 0.0
        with _phase("evaluate-after", peaks):
            for fraction in cfg.selection.fractions:
                tz = time.perf_counter()
                sel = selector.select_and_zero_(fraction)  # mft::zero_topk_: select and zero in one pass
                synchronize(device)
                zero_s = time.perf_counter() - tz
                te = time.perf_counter()
                after = _evaluate(model, val_tokens, val, cfg, progress, f"after {fraction:g}")
                evaluating_after += time.perf_counter() - te
                tr = time.perf_counter()
                sel.mask.restore(model)
                tz = time.perf_counter()
                again = selector.select_and_zero_(fraction)  # the same call with its work buffers warm
                synchronize(device)
                zero_warm_s = time.perf_counter() - tz
                again.mask.restore(model)
                zeroing += zero_s + (time.perf_counter() - tr)
                entry = {**sel.to_dict(), "zero_s": zero_s, "zero_warm_s": zero_warm_s,
                         "read_bound_s": read_bytes / bandwidth, "zero_path": "zero_topk_" if selector.fused
                         else "select_topk+zero_masked_", "after": after}
                if cfg.control:
                    tr = time.perf_counter()
                    ctrl = random_mask(eligible, sel.k, seed=cfg.data.seed + 1)
                    ctrl.apply(model)
                    zeroing += time.perf_counter() - tr
                    te = time.perf_counter()
                    entry["control"] = _evaluate(model, val_tokens, val, cfg, progress, f"control {fraction:g}")
                    evaluating_control += time.perf_counter() - te
                    tr = time.perf_counter()
                    ctrl.restore(model)
                    zeroing += time.perf_counter() - tr
                    entry["control_mask"] = ctrl
                rows_out.append(entry)
                selections.append(sel)
        timings["zero_s"] = zeroing
        timings["evaluate_after_s"] = evaluating_after
        timings["evaluate_control_s"] = evaluating_control
        t_report = time.perf_counter()  # the record itself: chance check, versions, machine and device stamps
        chance = chance_check(before, val.labels)

        record = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "machine": machine_info(),
            "device": device_summary(device, peaks),
            "model": {"source": lm.source, "kind": lm.kind, "model_type": lm.model_type, "total_params": sum(p.numel() for _, p in named_all),
                      "fingerprint": provenance["model_fingerprint"], "tokenizer_source": lm.tokenizer_source,
                      "tokenizer_note": lm.tokenizer_note},
            "data": {"train_source": train.source, "labels": train.label_summary, "validation_source": val.source, "n_train_rows": len(train),
                     "n_validation": len(val), "samples_used": len(used_rows), "rows_used": row_ids},
            "collection": {"reduction": cfg.reduction, "train_mode": not cfg.eval_mode, "precision": cfg.precision,
                           "lr": cfg.selection.lr, "lr_fp32": cfg.selection.lr32, "batch_sizes": state.batch_sizes,
                           # the hypothetical step θ − lr·g: its size tells batch-sum from mean (~N/32× smaller)
                           "step_l2_norm": cfg.selection.lr32 * math.sqrt(sum(float(g.double().square().sum())
                                                                    for g in state.grad_sum.values())),
                           "n_batches": state.n_batches, "mean_batch_loss": (sum(state.batch_losses) / max(len(state.batch_losses), 1)),
                           "reused_state": cfg.state, "provenance_checked": provenance_checked,
                           "resumed": resume is not None},
            "read_bandwidth_bytes_per_s": bandwidth,
            "counts": {"total": sum(p.numel() for _, p in named_all),
                       "detrimental_total": n_det_all,
                       "eligible": selections[0].n_eligible,
                       "detrimental_eligible": selections[0].n_detrimental_eligible,
                       "zeroed": {f"{sel.fraction:g}": sel.k for sel in selections},
                       "excluded_patterns": list(cfg.selection.exclude_patterns())},
            "before": before,
            "chance": chance,
            "fractions": rows_out,
            "timings": timings,
        }
        timings["report_s"] = time.perf_counter() - t_report
        with _phase("write", peaks):
            # write_outputs adds write_s and total_s (from t0) just before it writes results.json.
            out = write_outputs(folder, cfg, record, state, selections, eligible, named_all, started=t0)
        log.info("committed %s", out)
    return StudyResult(out, record, state, selections)
