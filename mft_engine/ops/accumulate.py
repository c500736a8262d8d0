"""mft::accumulate_ — fused gradient accumulation with its statistics."""
from __future__ import annotations

import torch

from ._args import check_backend



def accumulate_(g_sum: torch.Tensor, sq_sum: torch.Tensor, pos_count: torch.Tensor, neg_count: torch.Tensor,
                grad: torch.Tensor) -> None:
    """Add one gradient into a parameter's running statistics, in place.

    With g = grad widened exactly to float32 (grad may be float32, float16 or bfloat16):
    ``g_sum += g``, ``sq_sum += g * g`` (float32 product, then float32 sum: two roundings, bit-identical
    to that PyTorch expression), ``pos_count += (g > 0)``, ``neg_count += (g < 0)``.

    Shapes: all five tensors have the same shape. dtypes: g_sum and sq_sum float32, pos_count and
    neg_count int32; the four accumulators must be contiguous (grad may be any layout). NaN in grad
    propagates into the sums and counts neither sign.

    Cost: one fused pass over the five arrays (PyTorch needs ~4 passes and temporaries); no extra memory
    unless grad is non-contiguous (then one contiguous copy).
    """
    check_backend(g_sum, sq_sum, pos_count, neg_count, grad)
    torch.ops.mft.accumulate_.default(g_sum, sq_sum, pos_count, neg_count, grad)
