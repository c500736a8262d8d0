"""What the Triton kernels of mft_engine.ops.triton share: argument checks with the C++ kernels' messages
and exception types, the per-tensor table that lets one launch cover a whole list of tensors, the score
every scoring kernel computes, and the launch conventions (device guard, no FP contraction).

Importing this module imports triton; it is only imported by the kernel modules, which the package
imports lazily (see mft_engine/ops/triton/__init__.py).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# The largest finite float32, as the C++ check writes it (FLT_MAX * (1 + 2^-25) still rounds to it).
_FLT_MAX = 3.4028234663852886e38
_FLOAT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

# Elements one program handles per inner step; a power of two (tl.arange) large enough to fill a GPU
# block, small enough that the interpreter (numpy per step) stays quick.
BLOCK = 1024
# Inner steps per program for the list kernels: one program covers a tile of BLOCK * TILE_STEPS
# elements of one tensor, so per-program outputs (histogram rows, counts) stay a few MB at 10^8 elements.
TILE_STEPS = 8

# Column layout of the per-tensor table (int64 rows; see TensorTable).
COL_THETA, COL_GRAD, COL_THETA_CODE, COL_GRAD_CODE, COL_NUMEL, COL_FLAT = range(6)
N_COLS = 6


def device_guard(device: torch.device):
    """Context manager making `device` current for the launches inside it (Triton and torch launch on
    the current device's current stream). CPU tensors only occur under TRITON_INTERPRET, where there is
    nothing to guard."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def score_spec(lr: float, rank_by: str) -> tuple[float, bool]:
    """(lr rounded once to float32, rank_by == "shrink"), or ValueError worded as make_score_spec's."""
    lr = float(lr)
    if not (lr > 0.0) or not (lr <= _FLT_MAX * (1.0 + 2.0 ** -25)):
        raise ValueError(f"lr={lr:.17g} must be a finite number > 0")
    lr32 = torch.tensor(lr, dtype=torch.float64).to(torch.float32).item()
    if not (lr32 > 0.0) or math.isinf(lr32):
        raise ValueError(f"lr={lr:.17g} must stay finite and > 0 when rounded to float32")
    if rank_by not in ("shrink", "update"):
        raise ValueError(f"rank_by='{rank_by}' must be 'shrink' or 'update'")
    return lr32, rank_by == "shrink"


def float_code(t: torch.Tensor, name: str) -> int:
    """0, 1, 2 for float32, float16, bfloat16 (how the list kernels widen a tensor); TypeError otherwise."""
    code = _FLOAT_CODES.get(t.dtype)
    if code is None:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    return code


def check_device(t: torch.Tensor, name: str, device: torch.device) -> None:
    """RuntimeError unless `t` is on `device` (every argument of one call must be on one device)."""
    if t.device != device:
        raise RuntimeError(f"{name} is on {t.device} but the call runs on {device}; "
                           "every tensor argument must be on one device")


def check_same_shape(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """ValueError unless b has a's shape."""
    if a.shape != b.shape:
        raise ValueError(f"{b_name} must have the shape of {a_name} {list(a.shape)}, got {list(b.shape)}")


def check_contiguous(t: torch.Tensor, name: str) -> None:
    """ValueError unless t is contiguous (tensors written in place are not copied)."""
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (it is written in place)")


def check_written_list(tensors: Sequence[torch.Tensor], name: str, device: torch.device | None = None) -> torch.dtype:
    """The one float dtype of a list a kernel writes in place (float32 for an empty list): each tensor on
    `device` (when given), float32/16/bf16, all one dtype, contiguous; TypeError / ValueError worded as
    the CPU kernel's, naming `name[i]`."""
    dtype = tensors[0].dtype if tensors else torch.float32
    for i, t in enumerate(tensors):
        if device is not None:
            check_device(t, f"{name}[{i}]", device)
        float_code(t, f"{name}[{i}]")
        if t.dtype != dtype:
            raise TypeError(f"{name}[{i}] has dtype {t.dtype} but {name}[0] has {dtype}; all {name} must share "
                            "one dtype")
        check_contiguous(t, f"{name}[{i}]")
    return dtype


def count_message(k: int, n_det: int) -> str:
    """The C++ kernels' message for k above the detrimental count."""
    return f"k={k} exceeds the number of detrimental elements ({n_det}); k must be in [0, {n_det}]"


def raise_first_nonfinite(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], single: bool) -> None:
    """RuntimeError naming the first NaN/Inf in flat order (theta before grad at one element), worded as
    the C++ NonFiniteError. Runs only after a kernel flagged one, so its extra reads cost nothing when
    all is well; the op wrappers turn it into NonFiniteError by reading the tensors themselves."""
    for i, (theta, grad) in enumerate(zip(thetas, grads)):
        bad_t = ~torch.isfinite(theta.reshape(-1))
        bad_g = ~torch.isfinite(grad.reshape(-1))
        bad = (bad_t | bad_g).nonzero()
        if bad.numel():
            j = int(bad[0, 0])
            kind = "theta" if bool(bad_t[j]) else "grad"
            where = kind if single else f"{kind}s[{i}]"
            raise RuntimeError(f"non-finite value in {where} at element {j} "
                               "(NaN or Inf; parameters and gradients must be finite)")
    raise RuntimeError("a kernel flagged a non-finite input that a second read did not find")


@dataclass
class TensorTable:
    """A list of (theta, grad) pairs as the list kernels read them, without concatenating anything.

    `table` int64 [n_nonempty, N_COLS] on the device: theta address, grad address, theta dtype code,
    grad dtype code, numel, flat offset (position of the tensor's first element in the concatenation
    of all tensors, empty ones included). `tiles` int64 [n_tiles, 2]: (table row, first local element)
    of each program's tile of BLOCK * steps elements; tiles follow flat order, so prefix sums over
    per-tile results are prefix sums over the flat index. `keep` holds the contiguous copies the
    addresses point into. `tensor_of_row` maps table rows back to list positions.
    """

    table: torch.Tensor
    tiles: torch.Tensor
    keep: list[torch.Tensor]
    tensor_of_row: list[int]
    tile_rows: list[int]
    total: int
    n_tiles: int


def check_pairs(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.device | None:
    """The checks every list op makes on (thetas, grads), in the C++ order and wording; returns the
    device of the call (None for empty lists)."""
    if len(thetas) != len(grads):
        raise ValueError(f"thetas and grads must have the same length, got {len(thetas)} and {len(grads)}")
    device = thetas[0].device if thetas else None
    for i, (t, g) in enumerate(zip(thetas, grads)):
        check_device(t, f"thetas[{i}]", device)
        check_device(g, f"grads[{i}]", device)
        float_code(t, f"thetas[{i}]")
        float_code(g, f"grads[{i}]")
        check_same_shape(t, f"thetas[{i}]", g, f"grads[{i}]")
    return device


def tensor_table(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], device: torch.device,
                 steps: int = TILE_STEPS, block: int = BLOCK) -> TensorTable:
    """The TensorTable of checked (thetas, grads) on `device`, tiles of block * steps elements.

    Cost: a contiguous copy of each non-contiguous input (as the C++ kernels make) and one small
    host-to-device copy of the table; nothing proportional to the data otherwise.
    """
    tile = block * steps
    rows, tiles, keep, tensor_of_row, tile_rows = [], [], [], [], []
    flat = 0
    for i, (t, g) in enumerate(zip(thetas, grads)):
        n = t.numel()
        if n:
            tc, gc = t.contiguous(), g.contiguous()
            keep += [tc, gc]
            row = len(rows)
            rows.append([tc.data_ptr(), gc.data_ptr(), _FLOAT_CODES[tc.dtype], _FLOAT_CODES[gc.dtype], n, flat])
            tensor_of_row.append(i)
            for start in range(0, n, tile):
                tiles.append([row, start])
                tile_rows.append(row)
        flat += n
    table = torch.tensor(rows, dtype=torch.int64).reshape(-1, N_COLS).to(device)
    tiles_t = torch.tensor(tiles, dtype=torch.int64).reshape(-1, 2).to(device)
    return TensorTable(table, tiles_t, keep, tensor_of_row, tile_rows, flat, len(tiles))


# ---- device code shared by the kernels --------------------------------------------------------------------


@triton.jit
def half_bits_to_f32(h):
    """IEEE binary16 bits (uint16) to the float32 of the same value, exactly, as csrc's half_to_float:
    exponent and mantissa shifted into a float are the value times 2^-112 (subnormal halves land on
    float32 subnormals, which the kernels never flush), and 2^112 rescales exactly; Inf/NaN keep
    their mantissa bits."""
    w = h.to(tl.uint32)
    sign = (w & 0x8000) << 16
    em = w & 0x7FFF
    scaled = ((em << 13).to(tl.float32, bitcast=True) * 5.192296858534828e33).to(tl.uint32, bitcast=True)
    special = 0x7F800000 | (em << 13)
    return (tl.where(em >= 0x7C00, special, scaled) | sign).to(tl.float32, bitcast=True)


@triton.jit
def load_f32(addr, code, offs, mask):
    """The elements at `offs` of the tensor at address `addr` with dtype code `code` (0 float32,
    1 float16, 2 bfloat16), widened exactly to float32; 0.0 where not `mask`. One branch per program
    (every lane reads the same tensor), so the choice costs nothing per element."""
    if code == 0:
        p32 = addr.to(tl.pointer_type(tl.float32))
        x = tl.load(p32 + offs, mask=mask, other=0.0)
    else:
        p16 = addr.to(tl.pointer_type(tl.uint16))
        h = tl.load(p16 + offs, mask=mask, other=0)
        if code == 1:
            x = half_bits_to_f32(h)
        else:
            # bfloat16 is the upper half of a float32
            x = (h.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x


@triton.jit
def widen(x):
    """x (float32, float16 or bfloat16) widened exactly to float32. The half types go through their
    bits: the interpreter's own bfloat16 conversion flushes subnormals to zero, and its float16 one
    changes NaN bits, where the CPU kernel keeps them."""
    if x.dtype == tl.bfloat16:
        y = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    elif x.dtype == tl.float16:
        y = half_bits_to_f32(x.to(tl.uint16, bitcast=True))
    else:
        y = x.to(tl.float32)
    return y


# The kernels use only builtins of triton.language, never its @triton.jit helpers (tl.sum, tl.cumsum,
# tl.max, tl.zeros, ...): those are decorated when triton is imported, so they are interpreted only if
# TRITON_INTERPRET was set before that, which the tests cannot promise (mft_engine.ops imports triton).
# Sums go through tl.reduce / tl.associative_scan with Triton's own addition, which the interpreter
# recognises and runs with numpy; the compiled code is what tl.sum / tl.cumsum produce; zeros are
# tl.full(shape, 0, dtype).
@triton.jit
def total(x):
    """The sum of the 1-D block x, in x's dtype."""
    return tl.reduce(x, 0, tl.standard._sum_combine)


@triton.jit
def running_total(x):
    """The inclusive prefix sums of the 1-D block x, in x's dtype."""
    return tl.associative_scan(x, 0, tl.standard._sum_combine)


@triton.jit
def nonfinite(x):
    """1 where the float32 x is Inf or NaN (exponent bits all ones), else 0, as int32 (summed per
    program into a flag: nonzero means some input was not finite)."""
    e = x.to(tl.int32, bitcast=True) & 0x7F800000
    return (e == 0x7F800000).to(tl.int32)


@triton.jit
def score_f64(th, g, lr, SHRINK: tl.constexpr, LITERAL: tl.constexpr):
    """The float64 detrimental score of float32 theta/grad values (csrc/detrimental.h, score_one), +0.0
    where not detrimental.

    Algebraic: in float64, t = lr·|g| is exact (two 24-bit mantissas) and 2|θ| too, so the one rounding
    is 2|θ| − t; contraction could not change it either. Literal: float32 u = lr·g, n = θ − u, which
    must not become one fused multiply-add: every launch passes enable_fp_fusion=False. `lr` is the
    float32 scalar argument (the interpreter passes it as a Python float, hence the cast)."""
    lr = tl.cast(lr, tl.float32)
    if LITERAL:
        u = lr * g
        n = th - u
        an = tl.abs(n)
        at = tl.abs(th)
        if SHRINK:
            s = at - an
        else:
            s = tl.abs(u)
        out = tl.where(an < at, s, 0.0).to(tl.float64)
    else:
        td = th.to(tl.float64)
        gd = g.to(tl.float64)
        t = lr.to(tl.float64) * tl.abs(gd)
        two = 2.0 * tl.abs(td)
        # θ·g > 0 in float64 is exact for float32 inputs (no underflow): same sign, both nonzero.
        det = (td * gd > 0.0) & (t < two)
        if SHRINK:
            alt = two - t
            s = tl.where(alt < t, alt, t)
        else:
            s = t
        out = tl.where(det, s, 0.0)
    return out


@triton.jit
def tile_of(table, tiles, pid, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """(theta address, grad address, theta code, grad code, first local element, end of the tile,
    flat offset of the tensor) for program `pid` of a TensorTable launch."""
    row = tl.load(tiles + 2 * pid)
    start = tl.load(tiles + 2 * pid + 1)
    base = table + row * 6
    th_addr = tl.load(base + 0)
    g_addr = tl.load(base + 1)
    th_code = tl.load(base + 2)
    g_code = tl.load(base + 3)
    numel = tl.load(base + 4)
    flat = tl.load(base + 5)
    end = tl.minimum(start + BLOCK * STEPS, numel)
    return th_addr, g_addr, th_code, g_code, start, end, flat
