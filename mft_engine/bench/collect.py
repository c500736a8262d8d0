"""`mft bench collect`: samples/s of the engine's collection against plain eager-PyTorch loops.

All loops compute the same outputs over the same sentences: g, Σ g_b², the positive/negative batch
counts for every parameter, and the activation statistics (the same hooks), in fp32.
- batch-sum (train mode, fixed batches of 32 in sample order): the original's loop pads every batch to
  128 tokens; the plain loop pads each batch to its longest sentence; the engine splits a batch into
  length-homogeneous parts.
- mean (eval mode): the plain loop is length-bucketed (batches of 32 sorted by length); the engine
  batches by a token budget. The original's loop is the same in both modes.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..collect import collect_gradients
from ..collect.collector import ActivationStats, batch_loss_sum
from ..config import RunConfig
from ..device import device_summary, resolve_device, synchronize, to_device
from ..data import fixed_batches, gradient_batches, load_task, select_samples, tokenize_split
from ..models import load_model
from .bounds import matmul_peak_gflops


def plain_loop(model, batches: list[dict], train_mode: bool, denominators: list[float]) -> dict:
    """The eager formulation: after each backward, g += grad, sq += grad², pos += grad > 0, neg += grad < 0."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    g = {n: torch.zeros_like(p) for n, p in named}
    sq = {n: torch.zeros_like(p) for n, p in named}
    pos = {n: torch.zeros(p.shape, dtype=torch.int32, device=p.device) for n, p in named}
    neg = {n: torch.zeros(p.shape, dtype=torch.int32, device=p.device) for n, p in named}
    act_sq: dict = {}
    act_n: dict = {}
    hooks = ActivationStats(model, act_sq, act_n)
    model.train(train_mode)
    try:
        for b, den in zip(batches, denominators):
            hooks.set_mask(b["attention_mask"])
            model.zero_grad(set_to_none=True)
            (batch_loss_sum(model, b) / den).backward()
            with torch.no_grad():
                for n, p in named:
                    g[n] += p.grad
                    sq[n] += p.grad * p.grad
                    pos[n] += p.grad > 0
                    neg[n] += p.grad < 0
    finally:
        hooks.remove()
        model.eval()
        model.zero_grad(set_to_none=True)
    return g


def _real_tokens(batches: list[dict]) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


def run(model: str = "minilm", task: str = "sst2", samples: int = 512, reduction: str = "batch-sum",
        precision: str = "fp32", repeats: int = 3, data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """All loops side by side in one process on `device` (the plain loops' batches are moved there once,
    before timing; the engine moves each part as `mft run` does); medians of `repeats` runs each, after the
    engine's first call, which is reported apart (`engine_first_call_s`: on CUDA it compiles the Triton
    kernels); returns the JSON object."""
    from ..masking import eligible_parameters, select_detrimental
    from ..config import EXCLUDE_PRESETS
    from ..report import machine_info

    train_mode = reduction == "batch-sum"
    cfg = RunConfig.of(model=model, task=task, samples=samples, reduction=reduction, eval_mode=not train_mode,
                       data_dir=data_dir, precision="fp32")
    data = load_task(task, "train", data_dir)
    dev = resolve_device(device)
    lm = load_model(model, data.num_labels, seed=0, max_length=128)
    m = lm.model.to(dev)
    rows = select_samples(len(data), samples, order="first", seed=0)
    tokens = tokenize_split(lm.tokenizer, data, rows, max_length=128)
    fixed = fixed_batches(rows, 32)
    n_used = sum(len(b) for b in fixed) if train_mode else len(rows)

    def padded_to_128(groups):
        out = []
        for g in groups:
            b = tokens.batch(g, data.labels)
            pad = 128 - b["input_ids"].shape[1]
            out.append({k: torch.nn.functional.pad(v, (0, pad), value=0) if v.dim() == 2 else v for k, v in b.items()})
        return out

    if train_mode:
        plain = [tokens.batch(b, data.labels) for b in fixed]
        plain_den = [32.0] * len(plain)
        padded128 = padded_to_128(fixed)
        orig_den = [32.0] * len(padded128)
    else:  # g = ∇ mean loss over all samples: every loop divides by N and covers every sample
        lengths = [tokens.lengths[r] for r in rows]
        order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
        plain = [tokens.batch([rows[i] for i in order[j:j + 32]], data.labels) for j in range(0, len(rows), 32)]
        plain_den = [float(len(rows))] * len(plain)
        padded128 = padded_to_128(fixed_batches(rows, 32, keep_last=True))
        orig_den = [float(len(rows))] * len(padded128)
    plain = [to_device(b, dev) for b in plain]
    padded128 = [to_device(b, dev) for b in padded128]
    engine_batches = gradient_batches(tokens, rows, data.labels, data.is_regression, reduction=cfg.reduction,
                                      batch_size=cfg.batch_size, keep_last=cfg.keep_last)

    def engine(prec: str = "fp32"):
        torch.manual_seed(0)
        return collect_gradients(m, engine_batches, train_mode=train_mode, precision=prec)

    def timed(fn) -> tuple[float, Any]:
        times, res = [], None
        for _ in range(repeats):
            torch.manual_seed(0)
            synchronize(dev)
            t = time.perf_counter()
            res = fn()
            synchronize(dev)
            times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2], res

    out: dict[str, Any] = {"model": model, "task": task, "samples": n_used, "reduction": reduction,
                           "train_mode": train_mode, "threads": torch.get_num_threads(), "machine": machine_info(),
                           "device": device_summary(dev)}
    synchronize(dev)
    t = time.perf_counter()
    engine()  # warm-up (allocator, thread pool; on CUDA the Triton kernels' compilation), timed apart
    synchronize(dev)
    out["engine_first_call_s"] = time.perf_counter() - t
    t_engine, state = timed(engine)
    t_plain, _ = timed(lambda: plain_loop(m, plain, train_mode, plain_den))
    t_orig, _ = timed(lambda: plain_loop(m, padded128, train_mode, orig_den))
    out["samples_per_s"] = n_used / t_engine
    out["torch_samples_per_s"] = n_used / t_plain
    out["original_loop_samples_per_s"] = n_used / t_orig
    out["speedup_vs_torch"] = t_plain / t_engine
    out["speedup_vs_original"] = t_orig / t_engine
    real = sum(_real_tokens(b.parts) for b in engine_batches)
    non_embedding = sum(p.numel() for n, p in m.named_parameters() if "embeddings" not in n)
    out["real_tokens"] = real
    out["padded_tokens"] = {"engine": int(sum(p["input_ids"].numel() for b in engine_batches for p in b.parts)),
                            "torch": int(sum(b["input_ids"].numel() for b in plain)),
                            "original": int(sum(b["input_ids"].numel() for b in padded128))}
    out["gflops_real_tokens"] = 6 * non_embedding * real / t_engine / 1e9
    out["matmul_peak_gflops"] = matmul_peak_gflops(device=dev)
    out["share_of_matmul_peak"] = out["gflops_real_tokens"] / out["matmul_peak_gflops"]
    if precision == "bf16":
        t_bf16, st16 = timed(lambda: engine("bf16"))
        out["bf16_samples_per_s"] = n_used / t_bf16
        named = eligible_parameters(m, EXCLUDE_PRESETS["original"])
        a = set(select_detrimental(named, state.grad_sum, 2e-5, 0.1)[0].mask.indices.tolist())
        b = set(select_detrimental(named, st16.grad_sum, 2e-5, 0.1)[0].mask.indices.tolist())
        out["bf16_mask_jaccard"] = len(a & b) / max(len(a | b), 1)
    return out


def profile(model: str = "minilm", samples: int = 128, reduction: str = "batch-sum") -> str:
    """A torch.profiler table of one engine collection (where the time goes), top 25 ops by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    data = load_task("sst2", "train")
    lm = load_model(model, 2, seed=0, max_length=128)
    cfg = RunConfig.of(model=model, samples=samples, reduction=reduction, eval_mode=reduction == "mean")
    rows = select_samples(len(data), samples)
    tokens = tokenize_split(lm.tokenizer, data, rows)
    batches = gradient_batches(tokens, rows, data.labels, data.is_regression, reduction=cfg.reduction,
                               batch_size=cfg.batch_size, keep_last=cfg.keep_last)
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        collect_gradients(lm.model, batches, train_mode=reduction == "batch-sum")
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)

