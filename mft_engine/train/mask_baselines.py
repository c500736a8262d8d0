"""Untrained controls for the learned mask, at the same keep ratio and on the same modules.

For each chosen weight tensor W (out × in) with k = ⌈keep_ratio · numel⌉ (exactly the learned mask's k):
- `magnitude`: the k largest |W| of the tensor (the learned mask's starting point under mask_init
  "magnitude"; ties: lower flat index);
- `random`: k positions drawn uniformly without replacement (seeded per tensor);
- `row-l1`: in each output row the largest |W| (row-wise L1 pruning): the k kept weights are spread over
  the rows as evenly as integers allow (⌊k / out⌋ each, one more for the first k mod out rows), so the
  tensor keeps exactly k like the others and each row keeps its share ±1; ties: lower column.
Plus `dense`: the model as loaded, no mask. Each is evaluated without training; the weights are masked
in place and restored exactly afterwards.
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .keep_mask import keep_count, top_k_mask

BASELINES = ("magnitude", "random", "row-l1")


def magnitude_keep_mask(weight: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Bool mask keeping the ⌈keep_ratio · numel⌉ largest |W| of the tensor. Cost: one selection pass."""
    return top_k_mask(weight, keep_count(keep_ratio, weight.numel()))


def random_keep_mask(weight: torch.Tensor, keep_ratio: float, seed: int) -> torch.Tensor:
    """Bool mask keeping ⌈keep_ratio · numel⌉ positions drawn uniformly without replacement (torch.randperm
    on a CPU generator seeded with `seed`). Cost: one permutation of numel int64."""
    n = weight.numel()
    k = keep_count(keep_ratio, n)
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=g)[:k]] = True
    return keep.view(weight.shape).to(weight.device)


def row_l1_keep_mask(weight: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Bool mask keeping, in each output row of a 2-D weight, its largest |W| (row-wise L1 pruning), with
    exactly ⌈keep_ratio · numel⌉ kept in the tensor: ⌊k / rows⌋ per row, +1 for the first k mod rows rows.
    Ties within a row: lower column. Cost: one stable sort per row (O(n log in))."""
    if weight.dim() != 2:
        raise ValueError(f"row-wise L1 needs a 2-D weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    k = keep_count(keep_ratio, weight.numel())
    base, extra = divmod(k, rows)
    per_row = torch.full((rows,), base, dtype=torch.int64, device=weight.device)
    per_row[:extra] += 1
    order = torch.sort(weight.detach().abs(), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cols, device=weight.device).expand(rows, cols).contiguous())
    return rank < per_row[:, None]


def baseline_masks(model: torch.nn.Module, paths: list[str], keep_ratio: float, seed: int = 0,
                   kinds: tuple[str, ...] = BASELINES) -> dict[str, dict[str, torch.Tensor]]:
    """kind → {`<module>.weight` → bool keep mask} for the modules in `paths` (a plain, unparametrized
    model). The random mask of each tensor uses seed (seed, crc32 of its name), so it does not depend on
    which other modules are masked."""
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in kinds}
    for path in paths:
        name = f"{path}.weight"
        w = model.get_submodule(path).weight.detach()
        for kind in kinds:
            if kind == "magnitude":
                m = magnitude_keep_mask(w, keep_ratio)
            elif kind == "random":
                m = random_keep_mask(w, keep_ratio, (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
            elif kind == "row-l1":
                m = row_l1_keep_mask(w, keep_ratio)
            else:
                raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")
            out[kind][name] = m
    return out


@contextlib.contextmanager
def masked_weights(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> Iterator[torch.nn.Module]:
    """Within the block the named weights hold W ⊙ m; afterwards exactly W again. Memory: one copy of the
    masked weights."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in masks}
    try:
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m.to(params[n].dtype))
        yield model
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)


def evaluate_baselines(model: torch.nn.Module, paths: list[str], keep_ratio: float,
                       evaluate: Callable[[torch.nn.Module], dict[str, Any]], seed: int = 0,
                       kinds: tuple[str, ...] = BASELINES, dense: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate each control mask (and, with `dense`, the unmasked model) without training.

    `evaluate(model)` returns a dict of metrics (e.g. {"metrics": {...}, "metrics_whole": {...}}); each
    entry of the result is that dict plus `keep_ratio` (kept / masked weights, over all chosen tensors),
    `kept` and `masked_weights`. The model's weights are the same before and after. Cost: one
    `evaluate` per kind, plus building the masks (a sort of each weight's rows for row-l1).
    """
    was_training = model.training
    model.eval()
    numel = sum(model.get_submodule(p).weight.numel() for p in paths)
    out: dict[str, dict[str, Any]] = {}
    if dense:
        out["dense"] = {**evaluate(model), "keep_ratio": 1.0, "kept": numel, "masked_weights": numel}
    for kind, masks in baseline_masks(model, paths, keep_ratio, seed, kinds).items():
        kept = sum(int(m.sum()) for m in masks.values())
        with masked_weights(model, masks):
            metrics = evaluate(model)
        out[kind] = {**metrics, "keep_ratio": kept / numel, "kept": kept, "masked_weights": numel}
    model.train(was_training)
    return out
