"""Triton implementation of mft::detrimental_score (the CUDA kernel of that schema).

One launch: each program scores BLOCK consecutive elements in float64 (see _common.score_f64) and
flags Inf/NaN in its block; the flags are read once after the launch (one device sync) to raise.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as c


@triton.jit
def score_kernel(theta, grad, out, bad, n, lr, SHRINK: tl.constexpr, LITERAL: tl.constexpr,
                 BLOCK: tl.constexpr):
    """out[i] = score(theta[i], grad[i]) for this program's BLOCK elements; bad[pid] = any Inf/NaN."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    th = c.widen(tl.load(theta + offs, mask=mask, other=0.0))
    g = c.widen(tl.load(grad + offs, mask=mask, other=0.0))
    tl.store(out + offs, c.score_f64(th, g, lr, SHRINK, LITERAL), mask=mask)
    tl.store(bad + pid, c.total(c.nonfinite(th) | c.nonfinite(g)))


def detrimental_score(theta: torch.Tensor, grad: torch.Tensor, lr: float, rank_by: str,
                      literal: bool) -> torch.Tensor:
    """mft::detrimental_score on theta's device: float64 tensor of theta's shape, the score of every
    element (0.0 where not detrimental), bit-identical to the CPU kernel and ops.reference.

    theta, grad: one shape, float32/float16/bfloat16 each, any layout (non-contiguous ones are copied
    contiguous first). Raises ValueError for a bad lr/rank_by or shapes, TypeError for a dtype,
    RuntimeError naming the first Inf/NaN. Cost: one pass over theta and grad plus the float64 output;
    one device sync (the Inf/NaN flags).
    """
    lr32, shrink = c.score_spec(lr, rank_by)
    device = theta.device
    c.check_device(grad, "grad", device)
    c.float_code(theta, "theta")
    c.float_code(grad, "grad")
    c.check_same_shape(theta, "theta", grad, "grad")
    th, g = theta.contiguous(), grad.contiguous()
    n = th.numel()
    out = torch.empty(theta.shape, dtype=torch.float64, device=device)
    if n == 0:
        return out
    n_blocks = triton.cdiv(n, c.BLOCK)
    bad = torch.empty(n_blocks, dtype=torch.int32, device=device)
    with c.device_guard(device):
        score_kernel[(n_blocks,)](th, g, out, bad, n, lr32, SHRINK=shrink, LITERAL=bool(literal), BLOCK=c.BLOCK,
                                  enable_fp_fusion=False)
    if bool(bad.any()):
        c.raise_first_nonfinite([theta], [grad], single=True)
    return out
