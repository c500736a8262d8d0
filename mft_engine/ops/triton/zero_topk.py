"""Triton implementation of mft::zero_topk_ (the CUDA kernel of that schema).

The selection of select_topk.select (one launch per pass over the whole list, positions from prefix
sums), whose final write pass also saves each selected theta's bits and writes +0.0 in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _common as c
from .select_topk import select


def zero_topk_(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
               rank_by: str, literal: bool, seed: int = 0, *, steps: int = c.TILE_STEPS,
               block: int = c.BLOCK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mft::zero_topk_ on the tensors' device: select_topk's (indices, threshold, n_tied) with `values`,
    the selected elements' previous values [k] in the thetas' dtype; those elements become +0.0 in place.
    Identical to the CPU kernel; `restore_(thetas, indices, values)` undoes it bit for bit.

    thetas: contiguous, one float dtype, sharing memory with no other theta and no grad (ValueError /
    TypeError otherwise); grads: any float dtype and layout. `seed` is accepted for the schema and
    unused. Every check (Inf/NaN, k) happens before the first write, so on error nothing has changed.
    Cost: select_topk's ten passes; the zeros are written by the last one. One device sync.
    """
    indices, values, threshold, n_tied = select(thetas, grads, lr, k, rank_by, literal, zero=True, steps=steps,
                                                block=block)
    return indices, values, threshold, n_tied
