"""Triton implementation of mft::detrimental_count (the CUDA kernel of that schema).

One launch for the whole list: a table of tensor addresses (_common.TensorTable) gives every program a
tile of one tensor; each program writes its tile's detrimental count and Inf/NaN flag (no atomics),
and per-tensor counts are differences of one prefix sum over the tiles, which follow flat order.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import _common as c


@triton.jit
def count_kernel(table, tiles, lr, counts, bad, LITERAL: tl.constexpr, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """counts[pid] = detrimental elements of this program's tile; bad[pid] = any Inf/NaN in it."""
    pid = tl.program_id(0)
    th_addr, g_addr, th_code, g_code, start, end, _flat = c.tile_of(table, tiles, pid, BLOCK, STEPS)
    n_det = tl.full((BLOCK,), 0, tl.int32)
    n_bad = tl.full((BLOCK,), 0, tl.int32)
    for base in range(start, end, BLOCK):  # runtime bounds: a short tensor's tile costs one step
        offs = base + tl.arange(0, BLOCK)
        mask = offs < end
        th = c.load_f32(th_addr, th_code, offs, mask)
        g = c.load_f32(g_addr, g_code, offs, mask)
        # the count is rank_by-independent: "shrink" and "update" share the detrimental test
        n_det += (c.score_f64(th, g, lr, True, LITERAL) > 0.0).to(tl.int32)
        n_bad |= c.nonfinite(th) | c.nonfinite(g)
    tl.store(counts + pid, c.total(n_det))
    tl.store(bad + pid, c.total(n_bad))


def detrimental_count(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float,
                      literal: bool, *, steps: int = c.TILE_STEPS, block: int = c.BLOCK) -> torch.Tensor:
    """mft::detrimental_count on the tensors' device: int64 [len(thetas)], the detrimental elements of
    each (theta, grad) pair, equal to the CPU kernel's.

    Each pair: one shape, float32/float16/bfloat16 each (dtypes may differ across the list), any layout.
    `steps` and `block` set the tile (block * steps elements per program; block a power of two); the
    result does not depend on them. Raises ValueError/TypeError as the CPU kernel, RuntimeError naming
    the first Inf/NaN. Cost: one launch over all elements, one small prefix sum, one device sync.
    """
    lr32, _ = c.score_spec(lr, "shrink")
    thetas, grads = list(thetas), list(grads)
    device = c.check_pairs(thetas, grads)
    if device is None:
        return torch.zeros((0,), dtype=torch.int64)
    tt = c.tensor_table(thetas, grads, device, steps, block)
    out = torch.zeros((len(thetas),), dtype=torch.int64, device=device)
    if tt.n_tiles == 0:
        return out
    counts = torch.empty(tt.n_tiles, dtype=torch.int32, device=device)
    bad = torch.empty(tt.n_tiles, dtype=torch.int32, device=device)
    with c.device_guard(device):
        count_kernel[(tt.n_tiles,)](tt.table, tt.tiles, lr32, counts, bad, LITERAL=bool(literal), BLOCK=block,
                                    STEPS=steps, enable_fp_fusion=False)
    if bool(bad.any()):
        c.raise_first_nonfinite(thetas, grads, single=False)
    # Tiles of one tensor are consecutive: its count is the prefix sum at its last tile minus the one
    # before its first tile (integer sums, so the same on every run).
    last_tile = [i for i in range(tt.n_tiles) if i + 1 == tt.n_tiles or tt.tile_rows[i + 1] != tt.tile_rows[i]]
    ends = torch.cumsum(counts, 0)[torch.tensor(last_tile, device=device)]
    per_row = torch.diff(ends, prepend=torch.zeros(1, dtype=ends.dtype, device=device))
    out[torch.tensor(tt.tensor_of_row, device=device)] = per_row
    return out
