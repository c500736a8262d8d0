"""`mft bench hvp`: Gauss-Newton-vector products, many vectors per pass against one at a time.

The pinned formulation is `gnvp` looped over the vectors (per batch: jvp of the logits, H_z, vjp, for each
vector). `batched_gnvp` as "auto" picks it (`batched_*`: the per-example factor form for 8 vectors), and
its "vmap" form (each batch's forward and pullback shared, the tangents vmapped) is timed beside it
(`vmap_*`). All compute G v over every parameter of the model on the first `samples` training sentences
in fp32, eval mode; the gradient over the same sentences is timed for scale, and every batched result is
compared with the loop's (`max_rel_diff`, `vmap_max_rel_diff`).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..data import fixed_batches, load_task, select_samples, tokenize_split
from ..device import device_summary, resolve_device, synchronize
from ..models import load_model
from .bounds import matmul_peak_gflops
from ..report.progress import Progress
from ..scoring.curvature.hvp import auto_gnvp_method, batched_gnvp, flatten, gnvp, random_like
from ..scoring.objective import eval_objective


def run(model: str = "minilm", samples: int = 32, vectors: int = 8, repeats: int = 3, task: str = "sst2",
        data_dir: str | None = None, progress: Progress | None = None, device: str = "auto") -> dict[str, Any]:
    """Loop vs batched G v over `vectors` random vectors; medians of `repeats` timed runs after one warm-up,
    the two formulations alternating within each repeat.

    Returns the JSON object of `mft bench hvp`: loop_per_vector_s, batched_per_vector_s, speedup
    (loop / batched), gradient_s, and the setting (model, samples, tokens, parameters, vectors, machine).
    `progress` is the CLI's phase/advance/done reporter (None: silent).
    """
    from ..report import machine_info

    progress = progress or Progress()
    data = load_task(task, "train", data_dir)
    dev = resolve_device(device)
    lm = load_model(model, data.num_labels, seed=0, max_length=128)
    lm.model.to(dev)
    rows = select_samples(len(data), samples, order="first", seed=0)
    tokens = tokenize_split(lm.tokenizer, data, rows, max_length=128)
    batches = [tokens.batch(g, data.labels) for g in fixed_batches(rows, 32, keep_last=True)]
    objective = eval_objective(lm.model, batches, dtype=torch.float32)
    params = objective.params()
    gen = torch.Generator().manual_seed(0)
    vs = [random_like(params, gen) for _ in range(vectors)]
    method = auto_gnvp_method(objective, vectors)

    def timed(fns: dict[str, Callable[[], Any]], phase: str) -> tuple[dict[str, float], dict[str, Any]]:
        # The formulations alternate within each repeat, so a load change on a shared machine hits all.
        progress.phase(phase, len(fns) * (repeats + 1))
        times: dict[str, list[float]] = {k: [] for k in fns}
        results = {k: fn() for k, fn in fns.items()}  # warm-up: allocator, thread pool, first vmap
        progress.advance(len(fns))
        for _ in range(repeats):
            for k, fn in fns.items():
                synchronize(dev)
                t = time.perf_counter()
                results[k] = fn()
                synchronize(dev)
                times[k].append(time.perf_counter() - t)
                progress.advance()
        progress.done()
        return {k: statistics.median(v) for k, v in times.items()}, results

    with torch.enable_grad():
        t_grad = timed({"gradient": objective.gradient}, "gradient")[0]["gradient"]
        t, res = timed({"loop": lambda: [gnvp(objective, v) for v in vs],
                        "batched": lambda: batched_gnvp(objective, vs, method=method),
                        "vmap": lambda: batched_gnvp(objective, vs, method="vmap")}, "gnvp loop / batched")
    t_loop, t_batched, loop = t["loop"], t["batched"], res["loop"]

    def max_rel_diff(other: list) -> float:
        return max(float((flatten(a) - flatten(b)).norm() / flatten(a).norm().clamp_min(1e-30))
                   for a, b in zip(loop, other))
    return {
        "model": model, "task": task, "samples": objective.n,
        "real_tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
        "padded_tokens": int(sum(b["input_ids"].numel() for b in batches)),
        "parameters": int(sum(p.numel() for p in params.values())),
        "product": "gauss-newton", "dtype": "fp32", "vectors": vectors, "repeats": repeats,
        "gradient_s": t_grad,
        "loop_s": t_loop, "batched_s": t_batched,
        "loop_per_vector_s": t_loop / vectors, "batched_per_vector_s": t_batched / vectors,
        "speedup": t_loop / t_batched, "batched_method": method,
        "gradients_per_batched_vector": t_batched / vectors / t_grad,
        "vmap_per_vector_s": t["vmap"] / vectors, "vmap_speedup": t_loop / t["vmap"],
        "max_rel_diff": max_rel_diff(res["batched"]), "vmap_max_rel_diff": max_rel_diff(res["vmap"]),
        "threads": torch.get_num_threads(), "machine": machine_info(), "device": device_summary(dev),
        "matmul_peak_gflops": matmul_peak_gflops(device=dev),
    }
