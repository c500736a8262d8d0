"""mft::select_topk — the k most detrimental elements over a list of tensors, exactly."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import check_backend, check_names, check_rank_by, raise_nonfinite, round_lr, tensor_list


def select_topk(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
                rank_by: str = "shrink", literal: bool = False, names: Sequence[str] | None = None,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k detrimental elements with the largest scores (see detrimental_score) over all tensors.

    Flat index = position in the concatenation of the tensors in list order, each row-major (also for
    non-contiguous tensors). Exactly the set obtained by scoring everything, keeping score > 0, sorting
    by (score descending, flat index ascending) and taking the first k.

    Returns (indices, threshold, n_tied): indices int64 [k], sorted ascending; threshold float64 0-dim,
    the k-th largest score (the smallest selected one; +inf when k == 0); n_tied int64 0-dim, the number
    of detrimental elements (selected or not) whose score equals the threshold.
    dtypes: each tensor float32, float16 or bfloat16; thetas[i] and grads[i] share a shape. lr is rounded
    once to float32. Requires 0 <= k <= number of detrimental elements (ValueError naming both).
    Raises ConfigError for lr <= 0 or a bad rank_by, NonFiniteError naming the parameter for NaN/Inf.
    `seed` drives the sample that brackets the threshold: it changes the speed, never the result.

    Cost: about one pass over thetas and grads (a sampled threshold bracket, then one streaming pass
    that keeps only indices above the bracket and candidates inside it); nothing is concatenated and
    no score array is built; extra memory O(k + candidates), ~16 bytes × a few % of k typically.
    """
    lr32 = round_lr(lr)
    check_rank_by(rank_by)
    thetas = tensor_list(thetas, "thetas")
    grads = tensor_list(grads, "grads")
    names = check_names(names, len(thetas))
    k = int(k)
    if not thetas and not grads:
        if k != 0:
            raise ValueError(f"k={k} exceeds the number of detrimental elements (0); k must be in [0, 0]")
        return (torch.empty((0,), dtype=torch.int64), torch.tensor(float("inf"), dtype=torch.float64),
                torch.tensor(0, dtype=torch.int64))
    try:
        check_backend(thetas, grads)
        return torch.ops.mft.select_topk.default(thetas, grads, lr32, k, rank_by, bool(literal), int(seed))
    except RuntimeError as err:
        raise_nonfinite(err, names, thetas, grads)
