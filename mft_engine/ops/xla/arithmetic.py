"""The detrimental test and score on XLA devices, written as torch operations that torch_xla lowers to HLO,
in two arithmetics that both reproduce ops.reference exactly where stated.

Why not simply the reference's torch code: XLA's compilers break its bit-exactness in two ways, both
measured on PJRT_DEVICE=CPU with torch_xla 2.9:
  * the CPU backend contracts a multiply feeding an add into one fused multiply-add unconditionally
    (`c + a*b` differed from eager PyTorch in 23% of random fp32 elements), which changes every fp32
    expression with two roundings (`sq_sum + g*g`, the literal `θ − lr·g`);
  * it flushes subnormal inputs and results to zero (`1e-40 > 0` is False on the device, `1e-40 * 1.5`
    is 0, in fp32 and fp64 alike), and TPUs do the same.
Storage, conversions from fp16/bf16, integer operations and bitcasts keep subnormals intact.

"f64" (CPU and GPU XLA devices): the reference's float64 arithmetic on exact float64 copies of the fp32
values, built from their bits so that a subnormal θ or g keeps its value; fp32 operations of the
reference (`--literal`, accumulate_) are emulated as one exact or innocuous float64 operation followed by
a rounding to fp32 built from integers where the result is subnormal. Bit-identical to the reference for
every finite input, subnormals included.

"f32" (TPU): TPUs emulate fp64 and have no f64<->s64 bitcast, so this arithmetic uses only fp32 and
int32 (f32<->s32 bitcasts, which TPUs have). The algebraic score is carried as an unevaluated pair
(hi, lo) of fp32 numbers whose sum is the exact score: lr·|g| by Dekker's product with the operands split
by rounding their bit patterns (every partial product is exact, so FMA contraction cannot change it),
2|θ| − lr·|g| by Sterbenz's lemma and one TwoSum. Pairs are normalized (hi = fl(hi + lo)), so comparing
(hi, lo) lexicographically compares the exact scores. Literal mode is fp32 arithmetic itself. Subnormal
θ and g are flushed to zero first, as the TPU would, so the CPU run of this arithmetic is the TPU's.

What "f32" guarantees (tests/xla/test_tpu_arithmetic.py checks both statements on CPU):
  * Exact — the same test, the same scores (as hi + lo) and the same selection as the reference — when
    every element with θ ≠ 0 and g ≠ 0 has |θ| and |g| in the normal fp32 range [2^-126, 2^127) and
    lr·|g| ≥ 2^-78 (then hi, lo and every intermediate are multiples of 2^-126: nothing underflows).
    For lr = 2e-5 that is |g| ≥ 1.7e-19 (about 2^-62.4). Literal mode needs no subnormal θ, g, lr·g,
    θ − lr·g or |θ| − |n|.
  * Otherwise each score (algebraic or literal) is within eps = 2^-125·max(1, lr) of the exact one (a
    flushed θ or g makes an element non-detrimental; its exact score was below eps), so the selection
    differs from the reference's only among elements whose exact scores lie within 2·eps of the
    reference's threshold, and the detrimental count only by elements whose exact score is below eps.
    (Tested on the shared sample inputs, whose "edge" kind holds subnormals; not proven for literal.)
"""
from __future__ import annotations

import struct

import torch

ARITHMETICS = ("auto", "f64", "f32")

_F32_EXP = 0x7F800000
_F32_MANT = 0x007FFFFF
_TINY32 = 2.0 ** -126  # smallest normal fp32
_SUB32 = 2.0 ** -149   # fp32 subnormal spacing


def _c(like: torch.Tensor, value: int) -> torch.Tensor:
    """An integer constant as a 0-d tensor on like's device (torch_xla refuses a Python int in bitwise ops)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


_bitcast_op: list = []


def bitcast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x's bits read as `dtype` (same width): one HLO BitcastConvert on XLA tensors (torch_xla 2.9 has no
    lowering for Tensor.view(dtype): it falls back to the CPU, cutting the graph), Tensor.view elsewhere."""
    if x.device.type != "xla":
        return x.view(dtype)
    if not _bitcast_op:
        import torch_xla.core.xla_builder as xb
        import torch_xla.core.xla_op_registry as xor

        _bitcast_op.append((xor.Op("mft_bitcast", lambda t, to_type: t.bitcast(to_type)), xb.Op.from_torch_type))
    op, xla_type = _bitcast_op[0]
    return op(x, to_type=xla_type(dtype))


def barrier(x: torch.Tensor) -> torch.Tensor:
    """x itself (NaN aside: any NaN comes out as the default NaN), behind a select the compiler cannot drop:
    a product passed through it is rounded before it is added, so no fused multiply-add replaces the two
    roundings the reference performs (measured: without it XLA CPU fused 23% of `c + a*b` differently)."""
    return torch.where(x == x, x, torch.full((), float("nan"), dtype=x.dtype, device=x.device))  # noqa: PLR0124


def to_f32(x: torch.Tensor) -> torch.Tensor:
    """x (fp32, fp16 or bf16) as fp32, exactly, subnormals kept (bf16 is a shift; fp16 subnormals are
    rebuilt from their integer mantissa, a conversion no device flushes)."""
    if x.dtype == torch.float32:
        return x
    if x.dtype == torch.float16:
        bits = bitcast(x, torch.int16).to(torch.int32)
        sub = (bits & _c(bits, 0x7C00)) == 0
        mag = (bits & _c(bits, 0x03FF)).to(torch.float32) * 2.0 ** -24  # integer × power of two: exact, normal in fp32
        sub_value = torch.where((bits & _c(bits, 0x8000)) != 0, -mag, mag)
        return torch.where(sub, sub_value, x.to(torch.float32))
    if x.dtype == torch.bfloat16:
        return x.to(torch.float32)
    raise TypeError("theta and grad must be float32, float16 or bfloat16")


def exact_f64(x: torch.Tensor) -> torch.Tensor:
    """x (fp32, fp16 or bf16) as float64, exactly, fp32 subnormals included (a converted subnormal would
    be read as zero on XLA CPU): the integer mantissa times 2^-149, a normal float64."""
    x32 = to_f32(x)
    bits = bitcast(x32, torch.int32)
    sub = (bits & _c(bits, _F32_EXP)) == 0
    mag = (bits & _c(bits, _F32_MANT)).to(torch.float64) * _SUB32
    return torch.where(sub, torch.where(bits < 0, -mag, mag), x32.to(torch.float64))


def round_f32_as_f64(x: torch.Tensor) -> torch.Tensor:
    """The fp32 number nearest to float64 x (ties to even), as float64: the value an fp32 operation whose
    exact or float64-rounded result is x would return. Results in the subnormal range are rounded on the
    2^-149 grid with integers, where a conversion would flush them; overflow gives ±inf."""
    tiny = x.abs() < _TINY32
    sub = torch.round(x * 2.0 ** 149) * _SUB32  # exact scaling; round() is half-to-even
    return torch.where(tiny, sub, x.to(torch.float32).to(torch.float64))


def f64_to_f32_storage(x: torch.Tensor) -> torch.Tensor:
    """float64 x, whose values are fp32 numbers, as an fp32 tensor bit for bit (subnormals built from
    their bits, zeros keep their sign)."""
    tiny = (x.abs() < _TINY32) & (x != 0)
    mant = (x.abs() * 2.0 ** 149).to(torch.int32)
    sub_bits = torch.where(x < 0, mant | _c(mant, torch.iinfo(torch.int32).min), mant)
    return torch.where(tiny, bitcast(sub_bits, torch.float32), x.to(torch.float32))


def flush_subnormal_f32(x: torch.Tensor) -> torch.Tensor:
    """fp32 x with subnormals replaced by +0, as a TPU reads them (done explicitly so the CPU run of the
    "f32" arithmetic is the TPU's whatever the CPU's own flushing)."""
    bits = bitcast(x, torch.int32)
    return torch.where((bits & _c(bits, _F32_EXP)) == 0, torch.zeros_like(x), x)


def split_host(a: float) -> tuple[float, float]:
    """(hi, lo) with hi + lo = a exactly, hi the fp32 value a rounded to 12 significant bits: the host half
    of Dekker's split for lr (a positive fp32 number)."""
    bits = struct.unpack("<i", struct.pack("<f", a))[0]
    hi = struct.unpack("<f", struct.pack("<i", (bits + 0x800) & ~0xFFF))[0]
    return hi, a - hi


def split_f32(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) with hi + lo = b exactly for fp32 b ≥ 0 below 2^127: hi is b rounded to 12 significant
    bits by an integer add on its bit pattern (no multiply the compiler could fuse), lo = b − hi exact."""
    bits = bitcast(b, torch.int32)
    hi = bitcast((bits + _c(bits, 0x800)) & _c(bits, -4096), torch.float32)
    return hi, b - hi


def two_product(a: float, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dekker's exact product of the fp32 number a (> 0, a Python float) and fp32 b ≥ 0: (hi, lo) with
    hi = fl(a·b) and hi + lo = a·b exactly (no underflow assumed). Each partial product has at most 24
    bits, so contraction into FMA leaves them unchanged; hi passes the barrier before it is subtracted."""
    ah, al = split_host(a)
    bh, bl = split_f32(b)
    hi = barrier(b * a)
    lo = ((bh * ah - hi) + bl * ah + bh * al) + bl * al
    return hi, lo


def two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Knuth's TwoSum: (s, e) with s = fl(a + b) and s + e = a + b exactly; additions only."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _same_sign_nonzero(th_bits: torch.Tensor, g_bits: torch.Tensor) -> torch.Tensor:
    """sign(θ) = sign(g), θ ≠ 0, g ≠ 0 (±0 counts as 0), from fp32 bit patterns."""
    magnitude = _c(th_bits, 0x7FFFFFFF)
    nonzero = ((th_bits & magnitude) != 0) & ((g_bits & magnitude) != 0)
    return nonzero & ((th_bits < 0) == (g_bits < 0))


def detrimental_f64(theta: torch.Tensor, grad: torch.Tensor, lr32: float, rank_by: str,
                    literal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(detrimental mask, float64 score before masking), bit-identical to the reference's _detrimental.

    Cost: a few elementwise passes in float64 over the tensor (fused by XLA)."""
    th = exact_f64(theta)
    g = exact_f64(grad)
    if not literal:
        t = lr32 * g.abs()  # exact: two 24-bit mantissas, far inside float64's normal range
        two = 2.0 * th.abs()
        det = _same_sign_nonzero(bitcast(to_f32(theta), torch.int32), bitcast(to_f32(grad), torch.int32)) & (t < two)
        score = torch.minimum(t, two - t) if rank_by == "shrink" else t
        return det, score
    # The reference's fp32 u = fl(lr·g), n = fl(θ − u): the product is exact in float64 and the difference's
    # float64 rounding is innocuous before the fp32 one (53 ≥ 2·24 + 2).
    u = round_f32_as_f64(lr32 * g)
    n = round_f32_as_f64(th - u)
    det = n.abs() < th.abs()
    score = round_f32_as_f64(th.abs() - n.abs()) if rank_by == "shrink" else u.abs()
    return det, score


def detrimental_f32(theta: torch.Tensor, grad: torch.Tensor, lr32: float, rank_by: str,
                    literal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(detrimental mask, hi, lo) in fp32/int32 only (the TPU arithmetic; see the module docstring for
    what it guarantees): the exact score of a detrimental element is hi + lo, a normalized pair with
    lo ≠ −0; non-detrimental elements get (0, 0).

    Cost: about 30 fp32/int32 elementwise operations per element, fused by XLA; no float64."""
    th = flush_subnormal_f32(to_f32(theta))
    g = flush_subnormal_f32(to_f32(grad))
    zero = torch.zeros_like(th)
    if literal:
        u = barrier(g * lr32)
        n = th - u
        det = n.abs() < th.abs()
        hi = th.abs() - n.abs() if rank_by == "shrink" else u.abs()
        lo = zero
    else:
        t_hi, t_lo = two_product(lr32, g.abs())
        a_th = th.abs()
        two = 2.0 * a_th  # exact (power-of-two scaling, no overflow below 2^127)
        below_two = (t_hi < two) | ((t_hi == two) & (t_lo < 0))
        det = _same_sign_nonzero(bitcast(th, torch.int32), bitcast(g, torch.int32)) & below_two
        if rank_by == "shrink":
            # t ≤ |θ| keeps t; else 2|θ| − t with t in (|θ|, 2|θ|): two − t_hi is exact (Sterbenz), and one
            # TwoSum adds −t_lo and normalizes the pair.
            keep_t = (t_hi < a_th) | ((t_hi == a_th) & (t_lo <= 0))
            d_hi, d_lo = two_sum(two - t_hi, -t_lo)
            hi = torch.where(keep_t, t_hi, d_hi)
            lo = torch.where(keep_t, t_lo, d_lo)
        else:
            hi, lo = t_hi, t_lo
    hi = torch.where(det, hi, zero)
    lo = torch.where(det & (lo != 0), lo, zero)  # −0 and +0 are one value: one key
    return det, hi, lo
