"""Triton implementation of mft::accumulate_ (the CUDA kernel of that schema).

One launch, one fused pass: each program updates BLOCK consecutive elements of the four accumulators.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as c


@triton.jit
def accumulate_kernel(g_sum, sq_sum, pos_count, neg_count, grad, n, BLOCK: tl.constexpr):
    """g = grad widened to float32; g_sum += g; sq_sum += g * g; pos_count += g > 0; neg_count += g < 0."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = c.widen(tl.load(grad + offs, mask=mask, other=0.0))
    # g * g is rounded to float32 before the sum (two roundings, as the CPU kernel and the PyTorch
    # expression): the launch disables FP contraction so this cannot become one fused multiply-add.
    sq = g * g
    tl.store(g_sum + offs, tl.load(g_sum + offs, mask=mask) + g, mask=mask)
    tl.store(sq_sum + offs, tl.load(sq_sum + offs, mask=mask) + sq, mask=mask)
    tl.store(pos_count + offs, tl.load(pos_count + offs, mask=mask) + (g > 0.0).to(tl.int32), mask=mask)
    tl.store(neg_count + offs, tl.load(neg_count + offs, mask=mask) + (g < 0.0).to(tl.int32), mask=mask)


def accumulate_(g_sum: torch.Tensor, sq_sum: torch.Tensor, pos_count: torch.Tensor, neg_count: torch.Tensor,
                grad: torch.Tensor) -> None:
    """mft::accumulate_ on g_sum's device, in place: the four running statistics of one gradient,
    bit-identical to the CPU kernel (NaN propagates into the sums and counts neither sign).

    All five tensors share a shape; g_sum, sq_sum float32 and pos_count, neg_count int32, contiguous;
    grad float32/float16/bfloat16, any layout (a non-contiguous one is copied contiguous first).
    Raises TypeError for a dtype, ValueError for a shape or a non-contiguous accumulator.
    Cost: one pass over the five arrays; no device sync.
    """
    device = g_sum.device
    named = (("g_sum", g_sum), ("sq_sum", sq_sum), ("pos_count", pos_count), ("neg_count", neg_count),
             ("grad", grad))
    for name, t in named:
        c.check_device(t, name, device)
    for name, t, dtype in (("g_sum", g_sum, torch.float32), ("sq_sum", sq_sum, torch.float32),
                           ("pos_count", pos_count, torch.int32), ("neg_count", neg_count, torch.int32)):
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    c.float_code(grad, "grad")
    for name, t in named[1:]:
        c.check_same_shape(g_sum, "g_sum", t, name)
    for name, t in named[:4]:
        c.check_contiguous(t, name)
    g = grad.contiguous()
    n = g.numel()
    if n == 0:
        return
    with c.device_guard(device):
        accumulate_kernel[(triton.cdiv(n, c.BLOCK),)](g_sum, sq_sum, pos_count, neg_count, g, n, BLOCK=c.BLOCK,
                                                      enable_fp_fusion=False)
