"""Pure-PyTorch oracles of the mft ops: simple, obviously correct, slow, and no C++.

Each function has the wrapper's signature with a `reference_` prefix. The tests compare the kernels
with these bit for bit. They may concatenate, sort everything and use O(N) memory: they are the
definition, not the implementation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import NonFiniteError
from ._args import check_names, check_rank_by, round_lr

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def reference_accumulate_(g_sum: torch.Tensor, sq_sum: torch.Tensor, pos_count: torch.Tensor,
                          neg_count: torch.Tensor, grad: torch.Tensor) -> None:
    """g_sum += g; sq_sum += g * g; pos_count += g > 0; neg_count += g < 0 with g = grad.float()."""
    g = grad.float()
    g_sum += g
    sq_sum += g * g
    pos_count += (g > 0).to(torch.int32)
    neg_count += (g < 0).to(torch.int32)


def _check_finite(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                  names: Sequence[str] | None, single: bool = False) -> None:
    """NonFiniteError at the first NaN/Inf in flat order (theta before grad at the same element)."""
    for i, (t, g) in enumerate(zip(thetas, grads)):
        bad_t = ~torch.isfinite(t.reshape(-1))
        bad_g = ~torch.isfinite(g.reshape(-1))
        bad = bad_t | bad_g
        if bool(bad.any()):
            j = int(bad.nonzero()[0, 0])
            kind = ("theta" if single else "thetas") if bool(bad_t[j]) else ("grad" if single else "grads")
            where = kind if single else f"{kind}[{i}]"
            label = f"{names[i]!r} ({where})" if names is not None else where
            part = "value" if kind.startswith("theta") else "gradient"
            raise NonFiniteError(f"non-finite {part} (NaN or Inf) of parameter {label} at element {j}; "
                                 "parameters and gradients must be finite")


def _detrimental(theta: torch.Tensor, grad: torch.Tensor, lr32: float, rank_by: str,
                 literal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(detrimental mask, float64 score of every element, before masking)."""
    if theta.dtype not in _FLOAT_DTYPES or grad.dtype not in _FLOAT_DTYPES:
        raise TypeError("theta and grad must be float32, float16 or bfloat16")
    if theta.shape != grad.shape:
        raise ValueError(f"grad must have the shape of theta {tuple(theta.shape)}, got {tuple(grad.shape)}")
    if not literal:
        th = theta.double()
        g = grad.double()
        t = lr32 * g.abs()  # exact: two 24-bit mantissas
        two = 2.0 * th.abs()
        det = (torch.sign(th) == torch.sign(g)) & (th != 0) & (g != 0) & (t < two)
        score = torch.minimum(t, two - t) if rank_by == "shrink" else t
    else:
        th = theta.float()
        g = grad.float()
        u = torch.tensor(lr32, dtype=torch.float32) * g  # two eager ops: no fused multiply-add
        n = th - u
        det = n.abs() < th.abs()
        score = (th.abs() - n.abs()).double() if rank_by == "shrink" else u.abs().double()
    return det, score


def reference_detrimental_score(theta: torch.Tensor, grad: torch.Tensor, lr: float, rank_by: str = "shrink",
                                literal: bool = False, name: str | None = None) -> torch.Tensor:
    """float64 score per element, 0.0 where not detrimental (see ops.detrimental_score)."""
    lr32 = round_lr(lr)
    check_rank_by(rank_by)
    _check_finite([theta], [grad], None if name is None else [name], single=True)
    det, score = _detrimental(theta, grad, lr32, rank_by, literal)
    return torch.where(det, score, torch.zeros((), dtype=torch.float64)).contiguous()


def reference_detrimental_count(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float,
                                literal: bool = False, names: Sequence[str] | None = None) -> torch.Tensor:
    """int64 [len(thetas)]: detrimental elements per tensor."""
    lr32 = round_lr(lr)
    thetas, grads = list(thetas), list(grads)
    if len(thetas) != len(grads):
        raise ValueError("thetas and grads must have the same length")
    names = check_names(names, len(thetas))
    _check_finite(thetas, grads, names)
    counts = [int(_detrimental(t, g, lr32, "shrink", literal)[0].sum()) for t, g in zip(thetas, grads)]
    return torch.tensor(counts, dtype=torch.int64)


def reference_scores(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float,
                     rank_by: str = "shrink", literal: bool = False) -> torch.Tensor:
    """All scores, float64, concatenated in flat-index order (0.0 where not detrimental)."""
    parts = [reference_detrimental_score(t, g, lr, rank_by, literal).reshape(-1) for t, g in zip(thetas, grads)]
    return torch.cat(parts) if parts else torch.zeros((0,), dtype=torch.float64)


def reference_select_topk(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
                          rank_by: str = "shrink", literal: bool = False, names: Sequence[str] | None = None,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score everything, keep score > 0, sort by (score desc, flat index asc), take k; see ops.select_topk."""
    lr32 = round_lr(lr)
    check_rank_by(rank_by)
    thetas, grads = list(thetas), list(grads)
    names = check_names(names, len(thetas))
    _check_finite(thetas, grads, names)
    scores = reference_scores(thetas, grads, lr32, rank_by, literal)
    n_det = int((scores > 0).sum())
    if not 0 <= k <= n_det:
        raise ValueError(f"k={k} exceeds the number of detrimental elements ({n_det}); k must be in [0, {n_det}]")
    # A stable sort keeps equal scores in index order, so the lower flat index comes first.
    order = torch.sort(scores, descending=True, stable=True).indices
    chosen = order[:k]
    indices = torch.sort(chosen).values
    if k == 0:
        threshold = torch.tensor(float("inf"), dtype=torch.float64)
    else:
        threshold = scores[chosen].min()
    n_tied = ((scores == threshold) & (scores > 0)).sum().to(torch.int64)
    return indices, threshold, n_tied


def reference_zero_topk_(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
                         rank_by: str = "shrink", literal: bool = False, names: Sequence[str] | None = None,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """reference_select_topk, then reference_zero_masked_ on its indices: (indices, values, threshold, n_tied)."""
    thetas = list(thetas)
    indices, threshold, n_tied = reference_select_topk(thetas, grads, lr, k, rank_by, literal, names, seed)
    values = reference_zero_masked_(thetas, indices)
    return indices, values, threshold, n_tied


def _flat_locations(params: Sequence[torch.Tensor], indices: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Per param: (param position, positions in `indices`, local flat indices)."""
    if indices.dtype != torch.int64 or indices.dim() != 1:
        raise TypeError("indices must be a 1-D int64 tensor")
    total = sum(p.numel() for p in params)
    if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
        raise ValueError("indices must be strictly increasing (sorted ascending, no duplicates)")
    if indices.numel() and (int(indices[0]) < 0 or int(indices[-1]) >= total):
        raise IndexError(f"indices must be in [0, {total})")
    out, start = [], 0
    for i, p in enumerate(params):
        inside = (indices >= start) & (indices < start + p.numel())
        out.append((i, inside.nonzero().reshape(-1), indices[inside] - start))
        start += p.numel()
    return out


def reference_zero_masked_(params: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """Previous values at the flat indices (params' dtype), which are then set to 0 in place."""
    params = list(params)
    dtype = params[0].dtype if params else torch.float32
    saved = torch.empty((indices.numel(),), dtype=dtype)
    for i, where, local in _flat_locations(params, indices):
        flat = params[i].view(-1)
        saved[where] = flat[local]
        flat[local] = 0
    return saved


def reference_restore_(params: Sequence[torch.Tensor], indices: torch.Tensor, values: torch.Tensor) -> None:
    """Writes values back at the flat indices, in place."""
    params = list(params)
    for i, where, local in _flat_locations(params, indices):
        params[i].view(-1)[local] = values[where]
