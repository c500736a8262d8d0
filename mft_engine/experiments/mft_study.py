"""The BERT-MFT study as one pipeline: evaluate → collect → test → select → zero → evaluate, plus a control.

`run_study(config)` is what `mft run` calls; it writes results/mft_<timestamp>/ (see write_outputs) and
returns a StudyResult. Nothing is chosen from validation data here, so the whole split is reported.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..collect import Batch, GradientState, collect_gradients
from ..config import RunConfig
from ..data import (TaskData, fixed_batches, load_data, select_samples, split_by_length, token_budget_batches,
                    tokenize_split)
from ..errors import ResumeError
from ..evaluate import evaluate_model
from ..masking import eligible_parameters, random_mask, select_detrimental
from ..models import load_model
from ..report import ResultsFolder, machine_info, versions
from .outputs import write_outputs

log = logging.getLogger("mft_engine")


# Padding share above which a fixed batch is split into length-homogeneous parts (fewer padded FLOPs
# against smaller, less efficient matmuls).
PART_PAD_WASTE = 0.3
# mean reduction: the largest part (padded tokens) and the real tokens per accumulated batch.
MEAN_PART_TOKENS = 2048
MEAN_BATCH_TOKENS = 4096


class Progress:
    """What the pipeline reports while it runs; the CLI passes a rich-backed one, the API a silent one."""

    def phase(self, name: str, total: int | None = None) -> None:  # start a phase with `total` steps
        pass

    def advance(self, n: int = 1, **info: Any) -> None:
        pass

    def done(self) -> None:
        pass


@dataclass
class StudyResult:
    """Everything `mft run` reports; `record` is results.json."""

    out_dir: Path
    record: dict[str, Any]
    state: GradientState
    selections: list = field(default_factory=list)


def eval_batches(tokens, rows: list[int], labels, regression: bool, max_tokens: int):
    """(positions, HF batch) pairs over `rows` of a tokenized split, token-budget batched by length."""
    lengths = [tokens.lengths[r] for r in rows]
    for group in token_budget_batches(lengths, max_tokens):
        chosen = [rows[i] for i in group]
        yield group, tokens.batch(chosen, labels, regression)


def _evaluate(model, tokens, data: TaskData, cfg: RunConfig, progress: Progress, label: str) -> dict:
    progress.phase(f"evaluate {label}", len(data))
    rows = list(range(len(data)))
    metrics = evaluate_model(model, eval_batches(tokens, rows, data.labels, data.is_regression, cfg.eval_batch_tokens),
                             data.labels, data.num_labels, on_batch=lambda n: progress.advance(n))
    progress.done()
    return metrics


def gradient_batches(cfg: RunConfig, tokens, train: TaskData, rows: list[int]) -> list[Batch]:
    """The batches that define g. batch-sum: fixed batches in sample order (each split by length into
    parts, loss = batch mean); mean: token-budget batches, loss = Σ ℓ_i / N."""
    regression = train.is_regression
    if cfg.reduction == "batch-sum":
        out = []
        for b in fixed_batches(rows, cfg.batch_size, keep_last=cfg.keep_last):
            parts = split_by_length(b, tokens.lengths, max_pad_waste=PART_PAD_WASTE)
            out.append(Batch([tokens.batch(p, train.labels, regression) for p in parts], float(len(b))))
        return out
    # mean: g does not depend on batching, so sort by length into homogeneous parts and group parts into
    # batches of ~MEAN_BATCH_TOKENS real tokens: one accumulate_ per group amortises the per-batch cost.
    parts = split_by_length(rows, tokens.lengths, max_pad_waste=PART_PAD_WASTE / 3, max_tokens=MEAN_PART_TOKENS)
    out, group, real = [], [], 0
    for p in parts:
        group.append(tokens.batch(p, train.labels, regression))
        real += int(sum(tokens.lengths[r] for r in p))
        if real >= MEAN_BATCH_TOKENS:
            out.append(Batch(group, float(len(rows))))
            group, real = [], 0
    if group:
        out.append(Batch(group, float(len(rows))))
    return out


def _collect(cfg: RunConfig, model, batches: list[Batch], folder: ResultsFolder, progress: Progress,
             meta: dict, resume: bool) -> GradientState:
    ckpt_path = folder.path / "collect_checkpoint.safetensors"
    state, skip = None, 0
    if resume:
        if not ckpt_path.is_file():
            raise ResumeError(f"--resume {folder.path} holds no collection checkpoint (collect_checkpoint.safetensors)")
        state, extra = GradientState.load(ckpt_path, with_extra=True)
        if state.meta.get("collection_key") != meta["collection_key"]:
            raise ResumeError(f"--resume {folder.path} was collected with another configuration "
                              f"({state.meta.get('collection_key')} vs {meta['collection_key']})")
        state.check_matches([(n, p) for n, p in model.named_parameters() if p.requires_grad])
        skip = state.n_batches
        torch.set_rng_state(extra["rng"])
        log.info("resuming collection after %d of %d batches", skip, len(batches))
    else:
        torch.manual_seed(cfg.seed)

    def checkpoint(st: GradientState, done: int) -> None:
        st.save(ckpt_path, extra_tensors={"rng": torch.get_rng_state()})

    progress.phase("collect gradients", len(batches))
    progress.advance(skip)
    state = collect_gradients(
        model, batches, state=state, train_mode=not cfg.eval_mode, precision=cfg.precision, skip=skip,
        on_batch=lambda i, loss: progress.advance(1, loss=loss), checkpoint=checkpoint,
        checkpoint_every=cfg.checkpoint_every, meta=meta)
    progress.done()
    if ckpt_path.exists():
        ckpt_path.unlink()
    return state


def run_study(cfg: RunConfig, progress: Progress | None = None, resume: str | Path | None = None,
              on_folder: Callable[[Path], None] | None = None) -> StudyResult:
    """Run the BERT-MFT study described by `cfg`; write and return its results folder.

    Cost on the defaults (minilm, 1000 SST-2 samples): one forward+backward per sample, three
    evaluations of the validation split per fraction (before, after, control), and per fraction one
    sampled-bracket selection pass over θ and g.
    """
    progress = progress or Progress()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    folder_cm = ResultsFolder(cfg.out, "mft", resume=resume)
    with folder_cm as folder:
        if on_folder is not None:
            on_folder(folder.path)
        log.info("config: %s", cfg.to_dict())
        train, val = load_data(cfg, "train"), load_data(cfg, "validation")
        timings["load_data_s"] = time.perf_counter() - t0

        t = time.perf_counter()
        lm = load_model(cfg.model, train.num_labels, seed=cfg.seed,
                        problem_type="regression" if train.is_regression else None)
        model, tok = lm.model, lm.tokenizer
        timings["load_model_s"] = time.perf_counter() - t
        log.info("model: %s", lm.source)

        t = time.perf_counter()
        rows = select_samples(len(train), cfg.samples, order=cfg.sample_order, seed=cfg.seed)
        train_tokens = tokenize_split(tok, train, rows, max_length=cfg.max_length)
        val_tokens = tokenize_split(tok, val, None, max_length=cfg.max_length)
        timings["tokenize_s"] = time.perf_counter() - t

        t = time.perf_counter()
        before = _evaluate(model, val_tokens, val, cfg, progress, "before")
        timings["evaluate_before_s"] = time.perf_counter() - t

        batches = gradient_batches(cfg, train_tokens, train, rows)
        used_rows = [r for b in fixed_batches(rows, cfg.batch_size, keep_last=cfg.keep_last) for r in b] \
            if cfg.reduction == "batch-sum" else list(rows)
        meta = {"collection_key": cfg.collection_key(), "reduction": cfg.reduction,
                "train_mode": not cfg.eval_mode, "rows": [train.row_ids[r] for r in used_rows]}
        t = time.perf_counter()
        if cfg.state:
            state = GradientState.load(cfg.state)
            state.check_matches([(n, p) for n, p in model.named_parameters() if p.requires_grad])
        else:
            state = _collect(cfg, model, batches, folder, progress, meta, resume is not None)
        timings["collect_s"] = time.perf_counter() - t

        t = time.perf_counter()
        named_all = list(model.named_parameters())
        eligible = [(n, p) for n, p in eligible_parameters(named_all, cfg.exclude_patterns()) if n in state.grad_sum]
        if not eligible:
            from ..errors import ConfigError

            raise ConfigError(f"--exclude {cfg.exclude!r} leaves no eligible parameter")
        progress.phase("select", len(cfg.fraction))
        selections = select_detrimental(eligible, state.grad_sum, cfg.lr, cfg.fraction, cfg.rank_by, cfg.literal,
                                        seed=cfg.seed)
        progress.done()
        timings["select_s"] = time.perf_counter() - t
        # The study's headline count covers every parameter, the head included.
        from .. import ops

        all_named = [(n, p) for n, p in named_all if n in state.grad_sum]
        n_det_all = int(ops.detrimental_count([p.detach() for _, p in all_named], [state.grad_sum[n] for n, _ in all_named],
                                              cfg.lr, literal=cfg.literal, names=[n for n, _ in all_named]).sum())

        rows_out = []
        for sel in selections:
            t = time.perf_counter()
            sel.mask.apply(model)
            zero_s = time.perf_counter() - t
            after = _evaluate(model, val_tokens, val, cfg, progress, f"after {sel.fraction:g}")
            sel.mask.restore(model)
            entry = {**sel.to_dict(), "zero_s": zero_s, "after": after}
            if cfg.control:
                ctrl = random_mask(eligible, sel.k, seed=cfg.seed + 1)
                ctrl.apply(model)
                entry["control"] = _evaluate(model, val_tokens, val, cfg, progress, f"control {sel.fraction:g}")
                ctrl.restore(model)
                entry["control_mask"] = ctrl
            rows_out.append(entry)
        timings["zero_and_evaluate_s"] = sum(e["zero_s"] for e in rows_out)
        timings["total_s"] = time.perf_counter() - t0

        record = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "machine": machine_info(),
            "model": {"source": lm.source, "total_params": sum(p.numel() for _, p in named_all)},
            "data": {"train_source": train.source, "validation_source": val.source, "n_train_rows": len(train),
                     "n_validation": len(val), "samples_used": len(used_rows), "rows_used": meta["rows"]},
            "collection": {"reduction": cfg.reduction, "train_mode": not cfg.eval_mode, "precision": cfg.precision,
                           "lr": cfg.lr, "lr_fp32": cfg.lr32, "batch_sizes": state.batch_sizes,
                           # the hypothetical step θ − lr·g: its size tells batch-sum from mean (~N/32× smaller)
                           "step_l2_norm": cfg.lr32 * math.sqrt(sum(float(g.double().square().sum())
                                                                    for g in state.grad_sum.values())),
                           "n_batches": state.n_batches, "mean_batch_loss": (sum(state.batch_losses) / max(len(state.batch_losses), 1)),
                           "reused_state": cfg.state},
            "counts": {"total": sum(p.numel() for _, p in named_all),
                       "detrimental_total": n_det_all,
                       "eligible": selections[0].n_eligible,
                       "detrimental_eligible": selections[0].n_detrimental_eligible,
                       "zeroed": {f"{sel.fraction:g}": sel.k for sel in selections},
                       "excluded_patterns": list(cfg.exclude_patterns())},
            "before": before,
            "fractions": rows_out,
            "timings": timings,
        }
        out = write_outputs(folder, cfg, record, state, selections, eligible, named_all)
    return StudyResult(out, record, state, selections)
