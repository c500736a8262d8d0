"""Fake (meta) implementations of the mft ops: output shapes and dtypes without computing anything,
so FakeTensor tracing and torch.compile can go through them. Every output size is static (it depends
on argument shapes and the int k, never on tensor values)."""
from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("mft::accumulate_")
def _accumulate_fake(g_sum, sq_sum, pos_count, neg_count, grad):
    return None


@register_fake("mft::detrimental_score")
def _detrimental_score_fake(theta, grad, lr, rank_by, literal):
    return theta.new_empty(theta.shape, dtype=torch.float64)


@register_fake("mft::detrimental_count")
def _detrimental_count_fake(thetas, grads, lr, literal):
    if not thetas:
        return torch.empty((0,), dtype=torch.int64)
    return thetas[0].new_empty((len(thetas),), dtype=torch.int64)


@register_fake("mft::select_topk")
def _select_topk_fake(thetas, grads, lr, k, rank_by, literal, seed=0):
    like = thetas[0] if thetas else torch.empty((0,))
    return (like.new_empty((k,), dtype=torch.int64), like.new_empty((), dtype=torch.float64),
            like.new_empty((), dtype=torch.int64))


@register_fake("mft::zero_topk_")
def _zero_topk_fake(thetas, grads, lr, k, rank_by, literal, seed=0):
    like = thetas[0] if thetas else torch.empty((0,))
    return (like.new_empty((k,), dtype=torch.int64), like.new_empty((k,), dtype=like.dtype),
            like.new_empty((), dtype=torch.float64), like.new_empty((), dtype=torch.int64))


@register_fake("mft::zero_masked_")
def _zero_masked_fake(params, indices):
    dtype = params[0].dtype if params else torch.float32
    return indices.new_empty((indices.shape[0],), dtype=dtype)


@register_fake("mft::restore_")
def _restore_fake(params, indices, values):
    return None
