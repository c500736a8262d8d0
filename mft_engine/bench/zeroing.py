"""`mft bench zeroing`: test + select + zero on bert-base shapes, against plain-PyTorch formulations.

θ comes from the model's initialisation, g ~ N(0, 0.01²) drawn with seed 0; eligible parameters follow
the `original` exclusion; k = ceil(fraction × detrimental eligible). Every formulation zeroes the same
k parameters in place; the model is restored between repetitions (untimed).
"""
from __future__ import annotations

import heapq
import math
import time
from typing import Any

import torch

from .. import ops
from ..config import EXCLUDE_PRESETS, round_lr_fp32
from ..masking import eligible_parameters
from ..masking.selection import k_for
from ..models.loading import RANDOM_SHAPES
from ..ops import reference as ref
from ..device import device_summary, resolve_device, synchronize
from .bounds import median_time, read_bandwidth


def random_bert(name: str):
    """A randomly initialised BertForSequenceClassification of the shapes RANDOM_SHAPES[name] (seed 0, eval
    mode): the model `mft bench zeroing` and the pytest benchmarks measure."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if name not in RANDOM_SHAPES:
        raise ValueError(f"bench zeroing takes {', '.join(RANDOM_SHAPES)}")
    return BertForSequenceClassification(BertConfig(**RANDOM_SHAPES[name], num_labels=2)).eval()


def fused_zero(thetas, grads, lr, fraction, rank_by="shrink"):
    """The engine: mft::detrimental_count, then mft::zero_topk_ (select_topk and zero_masked_ fused into
    one streaming pass; saves the values for undo)."""
    n_det = int(ops.detrimental_count(thetas, grads, lr).sum())
    k = k_for(fraction, n_det)
    idx, saved, _, _ = ops.zero_topk_(thetas, grads, lr, k, rank_by=rank_by)
    return idx, saved


def _saved_and_zeroed(pristine, thetas, idx, saved) -> bool:
    """The saved values are the pristine ones at idx, and thetas are pristine except zeros there."""
    start, ok = 0, True
    for p, t in zip(pristine, thetas):
        inside = (idx >= start) & (idx < start + p.numel())
        local = idx[inside] - start
        expect = p.reshape(-1).clone()
        ok &= torch.equal(saved[inside], expect[local])
        expect[local] = 0.0
        ok &= torch.equal(t.reshape(-1), expect)
        start += p.numel()
    return bool(ok)


def torch_score(theta: torch.Tensor, g: torch.Tensor, lr32: float) -> torch.Tensor:
    """The shrink score of the detrimental test in plain PyTorch (0 where the test fails), float64: the
    pinned baseline the fused kernels are timed against."""
    # The same fp64 arithmetic as the kernel: lr·|g| exact, one rounding in 2|θ| − lr|g|.
    t = theta.double()
    gd = g.double()
    u = lr32 * gd.abs()
    det = (torch.sign(t) == torch.sign(gd)) & (gd != 0) & (u < 2 * t.abs())
    return torch.where(det, torch.minimum(u, 2 * t.abs() - u), torch.zeros_like(u))


def torch_topk_zero(thetas, grads, lr, fraction):
    """Pinned plain PyTorch: per-tensor test and score, torch.cat, torch.topk, scatter of zeros."""
    lr32 = round_lr_fp32(lr)
    scores = torch.cat([torch_score(t, g, lr32).reshape(-1) for t, g in zip(thetas, grads)])
    n_det = int((scores > 0).sum())
    k = k_for(fraction, n_det)
    idx = torch.topk(scores, k, sorted=False).indices
    flat = torch.cat([t.reshape(-1) for t in thetas])  # the concatenated copy torch's global pruning also makes
    saved = flat[idx].clone()
    offsets = [0]
    for t in thetas:
        offsets.append(offsets[-1] + t.numel())
    bounds = torch.tensor(offsets, device=idx.device)
    which = torch.bucketize(idx, bounds[1:], right=True)
    for i, t in enumerate(thetas):
        sel = idx[which == i] - offsets[i]
        t.view(-1).index_fill_(0, sel, 0.0)
    return idx, saved


_compiled: dict[str, Any] = {}


def _compiled_fns():
    if not _compiled:
        _compiled["score"] = torch.compile(torch_score, dynamic=True)

        def zero_where(t, s, thr):
            return t.masked_fill_(s >= thr, 0.0)

        _compiled["zero"] = torch.compile(zero_where, dynamic=True)
    return _compiled["score"], _compiled["zero"]


def torch_compiled_zero(thetas, grads, lr, fraction):
    """Pinned compiled PyTorch: compiled per-tensor score, one threshold over the concatenated detrimental
    scores (kthvalue on CPU, the k-th of torch.topk on CUDA), a compiled masked zeroing (zeroes every score
    ≥ threshold: ties may add extras)."""
    score, zero = _compiled_fns()
    lr32 = round_lr_fp32(lr)
    per = [score(t, g, lr32) for t, g in zip(thetas, grads)]
    det = torch.cat([s[s > 0] for s in per])
    k = k_for(fraction, det.numel())
    if not k:
        thr = torch.tensor(math.inf, dtype=torch.float64, device=det.device)
    elif det.is_cuda:  # CUDA's kthvalue sorts per slice: topk is the strong formulation there
        thr = torch.topk(det, k, sorted=False).values.min()
    else:
        thr = torch.kthvalue(det, det.numel() - k + 1).values
    for t, s in zip(thetas, per):
        zero(t, s, thr)
    return thr


def heap_zero(thetas, grads, lr, fraction, subset: int = 100) -> tuple[float, int]:
    """The original's approach on 1/subset of every tensor: a Python heap of the k largest scores, fed one
    detrimental parameter at a time; returns (seconds, elements visited) for extrapolation."""
    lr32 = round_lr_fp32(lr)
    parts = [(t.reshape(-1)[: max(1, t.numel() // subset)], g.reshape(-1)[: max(1, g.numel() // subset)])
             for t, g in zip(thetas, grads)]
    n_det = sum(int((torch_score(t, g, lr32) > 0).sum()) for t, g in parts)
    k = k_for(fraction, n_det)
    start = time.perf_counter()
    heap: list[tuple[float, int, int]] = []
    for ti, (t, g) in enumerate(parts):
        tl, gl = t.tolist(), g.tolist()
        for j, (th, gr) in enumerate(zip(tl, gl)):
            new = th - lr32 * gr
            if abs(new) < abs(th):
                item = (abs(th) - abs(new), ti, j)
                if len(heap) < k:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
    for _, ti, j in heap:
        parts[ti][0][j] = 0.0
    return time.perf_counter() - start, sum(t.numel() for t, _ in parts)


def run(model: str = "bert-base-random", fraction: float = 0.1, lr: float = 2e-5, repeats: int = 3,
        compiled: bool = True, heap: bool = True, device: str = "auto") -> dict[str, Any]:
    """All formulations side by side in one process on `device` (θ and g drawn on the CPU with seed 0,
    then moved: the same inputs on every device); medians of `repeats`; returns the JSON object. The first
    fused call (on CUDA: Triton's compilation) is timed apart from the runs (`fused_first_call_s`)."""
    from ..report import machine_info

    dev = resolve_device(device)
    m = random_bert(model).to(dev)
    thetas = [p.detach() for _, p in eligible_parameters(m, EXCLUDE_PRESETS["original"])]
    gen = torch.Generator().manual_seed(0)
    grads = [(torch.randn(t.shape, generator=gen) * 0.01).to(dev) for t in thetas]
    pristine = [t.clone() for t in thetas]

    def restore():
        for t, p in zip(thetas, pristine):
            t.copy_(p)

    n = sum(t.numel() for t in thetas)
    bytes_read = 2 * 4 * n
    bw = read_bandwidth(device=dev)
    out: dict[str, Any] = {"model": model, "eligible_params": n, "fraction": fraction, "lr": lr,
                           "threads": torch.get_num_threads(), "machine": machine_info(),
                           "device": device_summary(dev)}

    # Exactness first: the fused mask against the reference selection (on CPU copies).
    cpu_pristine, cpu_grads = [p.cpu() for p in pristine], [g.cpu() for g in grads]
    idx_ref, _, _ = ref.reference_select_topk(cpu_pristine, cpu_grads, lr, k_for(fraction, int(sum(
        int(ref.reference_detrimental_count([t], [g], lr).sum()) for t, g in zip(cpu_pristine, cpu_grads)))))
    del cpu_pristine, cpu_grads
    restore()
    synchronize(dev)
    t = time.perf_counter()
    idx_fused, saved = fused_zero(thetas, grads, lr, fraction)
    synchronize(dev)
    out["fused_first_call_s"] = time.perf_counter() - t
    out["k"] = int(idx_fused.numel())
    out["identical"] = bool(torch.equal(idx_fused.cpu(), idx_ref))
    out["values_saved"] = _saved_and_zeroed(pristine, thetas, idx_fused, saved)
    del idx_ref, saved

    out["fused_s"] = median_time(lambda: fused_zero(thetas, grads, lr, fraction), repeats, setup=restore, device=dev)
    out["torch_topk_s"] = median_time(lambda: torch_topk_zero(thetas, grads, lr, fraction), repeats, setup=restore,
                                      device=dev)
    if compiled:
        restore()
        synchronize(dev)
        t = time.perf_counter()
        torch_compiled_zero(thetas, grads, lr, fraction)  # compile outside the timing
        synchronize(dev)
        out["torch_compiled_first_call_s"] = time.perf_counter() - t
        out["torch_compiled_s"] = median_time(lambda: torch_compiled_zero(thetas, grads, lr, fraction), repeats,
                                              setup=restore, device=dev)
    if heap:
        restore()
        secs, visited = heap_zero(thetas, grads, lr, fraction)
        out["heap_s_extrapolated"] = secs * n / visited
    restore()
    out["bytes_read"] = bytes_read
    out["read_bandwidth_gb_s"] = bw / 1e9
    out["read_bound_s"] = bytes_read / bw
    out["fused_over_read_bound"] = out["fused_s"] / out["read_bound_s"]
    for key in ("torch_topk_s", "torch_compiled_s", "heap_s_extrapolated"):
        if key in out:
            out[f"speedup_vs_{key[:-2]}"] = out[key] / out["fused_s"]
    return out
