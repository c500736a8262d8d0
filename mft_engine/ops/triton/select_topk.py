"""Triton implementation of mft::select_topk (the CUDA kernel of that schema), and the selection that
mft::zero_topk_ shares.

Exact radix select over the bits of the float64 score, without storing scores or concatenating tensors:
every pass recomputes the scores of all tensors in ONE launch (a table of tensor addresses,
_common.TensorTable; every program takes one tile of one tensor).

  1. Eight histogram passes, one per byte of the 64-bit key (the score's bits: positive doubles order
     like their bits; non-detrimental elements score +0.0 and never enter). Each program writes its
     256-bin histogram row (no atomics); the rows are summed and a one-program kernel picks the byte
     holding the k-th largest key and narrows the key range, all on the device. The first pass also
     flags Inf/NaN and yields the detrimental count: one device sync there raises for Inf/NaN or a k
     above the count. After the eighth pass the k-th largest key T is known exactly, with `need`, the
     number of elements equal to T that the top k take.
  2. A count pass: per tile, the elements with key > T and key == T.
  3. A write pass: with exclusive prefix sums of those counts over the tiles (which follow flat order),
     each program knows how many selected elements precede its tile, and a prefix scan inside the tile
     gives every selected element its output position. Elements equal to T are taken lowest flat index
     first. So the indices come out ascending and the result is the same on every run (no atomic
     counters). zero_topk_ also saves each selected theta's bits and writes +0.0 in this pass.

Cost: ten passes over thetas and grads (no bracketing of the threshold yet, so no early exit) plus
256 int32 per program per histogram pass; extra memory O(k + number of programs).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import _common as c

RADIX = 256
# Byte positions of the 64-bit key, most significant first.
_SHIFTS = (56, 48, 40, 32, 24, 16, 8, 0)
_INT64_MAX = 2 ** 63 - 1
# state (int64 [4], on the device): smallest and largest key of the current range, elements still to
# take from it, and the key bits fixed so far (after the last pass: the threshold key T).
_LO, _HI, _NEED, _PREFIX = range(4)


@triton.jit(do_not_specialize=["shift"])
def hist_kernel(table, tiles, lr, state, shift, hist, bad, SHRINK: tl.constexpr, LITERAL: tl.constexpr,
                BLOCK: tl.constexpr, STEPS: tl.constexpr, RADIX: tl.constexpr):
    """hist[pid, d] = elements of this tile whose key lies in [state lo, state hi] and whose byte at
    `shift` is d; bad[pid] = any Inf/NaN in the tile."""
    pid = tl.program_id(0)
    th_addr, g_addr, th_code, g_code, start, end, _flat = c.tile_of(table, tiles, pid, BLOCK, STEPS)
    lo = tl.load(state + 0)
    hi = tl.load(state + 1)
    bins = tl.arange(0, RADIX)
    h = tl.full((RADIX,), 0, tl.int32)
    n_bad = tl.full((BLOCK,), 0, tl.int32)
    for base in range(start, end, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        mask = offs < end
        th = c.load_f32(th_addr, th_code, offs, mask)
        g = c.load_f32(g_addr, g_code, offs, mask)
        key = c.score_f64(th, g, lr, SHRINK, LITERAL).to(tl.int64, bitcast=True)
        inside = mask & (key >= lo) & (key <= hi)
        digit = ((key >> shift) & (RADIX - 1)).to(tl.int32)
        # Elements outside the range go to bin 0 and are taken out again (a histogram mask argument
        # is not available in every Triton version this must run on).
        h += tl.histogram(tl.where(inside, digit, 0), RADIX)
        h -= tl.where(bins == 0, BLOCK - c.total(inside.to(tl.int32)), 0)
        n_bad |= c.nonfinite(th) | c.nonfinite(g)
    tl.store(hist + pid.to(tl.int64) * RADIX + bins, h)
    tl.store(bad + pid, c.total(n_bad))


@triton.jit(do_not_specialize=["shift"])
def choose_kernel(hist_sum, state, shift, RADIX: tl.constexpr):
    """One program: from the summed histogram of the byte at `shift`, the byte d of the state's
    `need`-th largest key; fixes d in the prefix, narrows lo/hi to it and subtracts from `need` the
    elements above it."""
    bins = tl.arange(0, RADIX)
    h = tl.load(hist_sum + bins)
    need = tl.load(state + 2)
    prefix = tl.load(state + 3)
    # from_top[d] = elements with byte >= d: non-increasing in d, so the count of bins where it
    # reaches `need` is one past the chosen byte.
    from_top = c.total(h) - c.running_total(h) + h
    d = c.total((from_top >= need).to(tl.int64)) - 1
    above = c.total(tl.where(bins > d, h, 0))
    prefix = prefix | (d << shift)
    low_bits = (tl.full((), 1, tl.int64) << shift) - 1
    tl.store(state + 0, tl.maximum(prefix, 1))
    tl.store(state + 1, prefix | low_bits)
    tl.store(state + 2, need - above)
    tl.store(state + 3, prefix)


@triton.jit
def count_kernel(table, tiles, lr, state, n_gt, n_eq, SHRINK: tl.constexpr, LITERAL: tl.constexpr,
                 BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """n_gt[pid], n_eq[pid] = elements of this tile with key > T, key == T (T = state's prefix)."""
    pid = tl.program_id(0)
    th_addr, g_addr, th_code, g_code, start, end, _flat = c.tile_of(table, tiles, pid, BLOCK, STEPS)
    thr = tl.load(state + 3)
    gt = tl.full((BLOCK,), 0, tl.int32)
    eq = tl.full((BLOCK,), 0, tl.int32)
    for base in range(start, end, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        mask = offs < end
        th = c.load_f32(th_addr, th_code, offs, mask)
        g = c.load_f32(g_addr, g_code, offs, mask)
        key = c.score_f64(th, g, lr, SHRINK, LITERAL).to(tl.int64, bitcast=True)
        gt += (mask & (key > thr)).to(tl.int32)
        eq += (mask & (key == thr)).to(tl.int32)
    tl.store(n_gt + pid, c.total(gt).to(tl.int64))
    tl.store(n_eq + pid, c.total(eq).to(tl.int64))


@triton.jit
def write_kernel(table, tiles, lr, state, gt_before, eq_before, indices, values, SHRINK: tl.constexpr,
                 LITERAL: tl.constexpr, ZERO: tl.constexpr, THETA_BYTES: tl.constexpr, BLOCK: tl.constexpr,
                 STEPS: tl.constexpr):
    """Writes the flat index of every selected element of this tile at its output position: key > T, or
    key == T among the first `need` such elements in flat order. With ZERO, also saves the element's
    theta bits to `values` at the same position and sets it to +0.0 (THETA_BYTES: 4 or 2)."""
    pid = tl.program_id(0)
    th_addr, g_addr, th_code, g_code, start, end, flat = c.tile_of(table, tiles, pid, BLOCK, STEPS)
    thr = tl.load(state + 3)
    need = tl.load(state + 2)
    ties_before = tl.load(eq_before + pid)  # elements == T in earlier tiles
    # selected elements in earlier tiles: all those above T, and the ties they took
    placed = tl.load(gt_before + pid) + tl.minimum(ties_before, need)
    for base in range(start, end, BLOCK):
        offs = base + tl.arange(0, BLOCK)
        mask = offs < end
        th = c.load_f32(th_addr, th_code, offs, mask)
        g = c.load_f32(g_addr, g_code, offs, mask)
        key = c.score_f64(th, g, lr, SHRINK, LITERAL).to(tl.int64, bitcast=True)
        is_eq = mask & (key == thr)
        tie_rank = ties_before + c.running_total(is_eq.to(tl.int32)) - 1
        take = (mask & (key > thr)) | (is_eq & (tie_rank < need))
        pos = placed + c.running_total(take.to(tl.int32)) - 1
        tl.store(indices + pos, flat + offs, mask=take)
        if ZERO:
            # bits, not values: the saved copy restores NaN payloads and -0.0 exactly
            if THETA_BYTES == 4:
                p32 = th_addr.to(tl.pointer_type(tl.int32))
                tl.store(values + pos, tl.load(p32 + offs, mask=take), mask=take)
                tl.store(p32 + offs, tl.full((BLOCK,), 0, tl.int32), mask=take)
            else:
                p16 = th_addr.to(tl.pointer_type(tl.int16))
                tl.store(values + pos, tl.load(p16 + offs, mask=take), mask=take)
                tl.store(p16 + offs, tl.full((BLOCK,), 0, tl.int16), mask=take)
        ties_before += c.total(is_eq.to(tl.int64))
        placed += c.total(take.to(tl.int64))


def select(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int, rank_by: str,
           literal: bool, zero: bool, steps: int = c.TILE_STEPS,
           block: int = c.BLOCK) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The selection of select_topk / zero_topk_ on the tensors' device: (indices int64 [k] ascending,
    values [k] in the thetas' dtype or None when not `zero`, threshold float64 0-dim, n_tied int64 0-dim).

    With `zero`, the thetas must be contiguous, of one dtype, and share memory with no other theta and
    no grad; they are written only after every check passed, so on any error they are unchanged.
    `steps` and `block` set the tile (block * steps elements per program); the result does not depend
    on them. Cost: see the module docstring; one device sync (after the first pass).
    """
    lr32, shrink = c.score_spec(lr, rank_by)
    k = int(k)
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    thetas, grads = list(thetas), list(grads)
    if zero:
        theta_dtype = _check_zero_targets(thetas, grads)
    device = c.check_pairs(thetas, grads)
    if device is None:
        device = torch.device("cpu")
    if zero:
        _check_no_theta_overlap(thetas, grads)
    values = torch.empty((k,), dtype=theta_dtype, device=device) if zero else None
    indices = torch.empty((k,), dtype=torch.int64, device=device)
    tt = c.tensor_table(thetas, grads, device, steps, block)
    consts = {"SHRINK": shrink, "LITERAL": bool(literal), "BLOCK": block, "STEPS": steps}
    state = torch.tensor([1, _INT64_MAX, k, 0], dtype=torch.int64).to(device)
    hist = torch.empty((max(tt.n_tiles, 1), RADIX), dtype=torch.int32, device=device)
    bad = torch.zeros((max(tt.n_tiles, 1),), dtype=torch.int32, device=device)
    with c.device_guard(device):
        for i, shift in enumerate(_SHIFTS):
            if tt.n_tiles:
                hist_kernel[(tt.n_tiles,)](tt.table, tt.tiles, lr32, state, shift, hist, bad, RADIX=RADIX,
                                           enable_fp_fusion=False, **consts)
            else:
                hist.zero_()
            hist_sum = hist.sum(0)
            if i == 0:
                # the one sync: Inf/NaN and the detrimental count decide whether to go on
                any_bad, n_det = torch.stack([bad.any().to(torch.int64), hist_sum.sum()]).tolist()
                if any_bad:
                    c.raise_first_nonfinite(thetas, grads, single=False)
                if k > n_det:
                    raise ValueError(c.count_message(k, n_det))
                if k == 0:
                    return (indices, values, torch.full((), float("inf"), dtype=torch.float64, device=device),
                            torch.zeros((), dtype=torch.int64, device=device))
            choose_kernel[(1,)](hist_sum, state, shift, RADIX=RADIX, enable_fp_fusion=False)
        n_gt = torch.empty((tt.n_tiles,), dtype=torch.int64, device=device)
        n_eq = torch.empty((tt.n_tiles,), dtype=torch.int64, device=device)
        count_kernel[(tt.n_tiles,)](tt.table, tt.tiles, lr32, state, n_gt, n_eq, enable_fp_fusion=False, **consts)
        # exclusive prefix sums over the tiles, i.e. over flat order
        gt_before = torch.cumsum(n_gt, 0) - n_gt
        eq_before = torch.cumsum(n_eq, 0) - n_eq
        if zero:
            bits = values.view(torch.int32 if values.element_size() == 4 else torch.int16)
            write_kernel[(tt.n_tiles,)](tt.table, tt.tiles, lr32, state, gt_before, eq_before, indices, bits,
                                        ZERO=True, THETA_BYTES=values.element_size(), enable_fp_fusion=False,
                                        **consts)
        else:
            write_kernel[(tt.n_tiles,)](tt.table, tt.tiles, lr32, state, gt_before, eq_before, indices, indices,
                                        ZERO=False, THETA_BYTES=4, enable_fp_fusion=False, **consts)
    threshold = state[_PREFIX:_PREFIX + 1].view(torch.float64).reshape(()).clone()
    return indices, values, threshold, n_eq.sum()


def _check_zero_targets(thetas: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.dtype:
    """zero_topk_'s checks on the written thetas, worded as the CPU kernel's: one float dtype (returned;
    float32 for an empty list), contiguous."""
    if len(thetas) != len(grads):
        raise ValueError(f"thetas and grads must have the same length, got {len(thetas)} and {len(grads)}")
    return c.check_written_list(thetas, "thetas")


def _check_no_theta_overlap(thetas: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """ValueError when a theta shares memory with another theta or with a contiguous grad: zeroing while
    other tiles still read would change their scores. A non-contiguous grad is read from its contiguous
    copy (made before any write), so it cannot be affected; grads may overlap each other."""
    ranges = []
    for name, items in (("thetas", thetas), ("grads", grads)):
        for i, t in enumerate(items):
            if t.numel() > 0 and (name == "thetas" or t.is_contiguous()):
                lo = t.data_ptr()
                ranges.append((lo, lo + t.numel() * t.element_size(), name == "thetas", f"{name}[{i}]"))
    # Sorted by start, a sweep keeps the range reaching furthest and the theta range reaching furthest.
    ranges.sort(key=lambda r: r[0])
    reach_any = reach_theta = None
    for r in ranges:
        clash = None
        if r[2] and reach_any and reach_any[1] > r[0]:
            clash = reach_any
        if not r[2] and reach_theta and reach_theta[1] > r[0]:
            clash = reach_theta
        if clash:
            raise ValueError(f"{clash[3]} and {r[3]} share memory; each theta is written in place and must not "
                             "overlap another theta or a grad")
        if reach_any is None or r[1] > reach_any[1]:
            reach_any = r
        if r[2] and (reach_theta is None or r[1] > reach_theta[1]):
            reach_theta = r


def select_topk(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
                rank_by: str, literal: bool, seed: int = 0, *, steps: int = c.TILE_STEPS,
                block: int = c.BLOCK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mft::select_topk on the tensors' device: (indices int64 [k] ascending, threshold float64 0-dim,
    n_tied int64 0-dim), identical to the CPU kernel: the k largest scores over all tensors, ties to the
    lower flat index (flat index = position in the row-major concatenation of the list).

    Dtypes may differ across the list; any layout. `seed` is accepted for the schema and unused (the
    radix select samples nothing). Raises ValueError for a bad lr/rank_by/shape or k outside
    [0, detrimental count], TypeError for a dtype, RuntimeError naming the first Inf/NaN.
    Cost: ten passes over thetas and grads, one device sync (module docstring).
    """
    indices, _, threshold, n_tied = select(thetas, grads, lr, k, rank_by, literal, zero=False, steps=steps,
                                           block=block)
    return indices, threshold, n_tied
