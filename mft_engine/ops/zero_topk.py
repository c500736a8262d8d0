"""mft::zero_topk_ — select the k most detrimental elements and zero them in place, in one pass."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import check_backend, check_names, check_rank_by, raise_nonfinite, round_lr, tensor_list


def zero_topk_(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int,
               rank_by: str = "shrink", literal: bool = False, names: Sequence[str] | None = None,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """select_topk, then zero_masked_ on its indices, fused: the same result in one streaming pass.

    Returns (indices, values, threshold, n_tied): indices, threshold and n_tied exactly as select_topk
    (int64 [k] ascending flat indices; float64 0-dim k-th largest score, +inf when k == 0; int64 0-dim
    ties at it); values [k] in the thetas' dtype, the elements' values before they were set to +0.0 in
    place (`restore_(thetas, indices, values)` undoes it bit for bit).
    dtypes: thetas contiguous CPU tensors sharing one dtype (float32, float16 or bfloat16), written in
    place, sharing memory with no other theta and no grad (ValueError otherwise); grads any of those
    dtypes, grads[i] of thetas[i]'s shape. lr is rounded once to float32. Requires 0 <= k <= number of
    detrimental elements (ValueError naming both). Raises ConfigError for lr <= 0 or a bad rank_by,
    NonFiniteError naming the parameter for NaN/Inf. On any error the thetas are left unchanged.

    Cost: about one pass over thetas and grads (select_topk's), plus the writes of the zeros: the
    elements certain from the sampled bracket are zeroed while the pass has their cache lines, so
    there is no second walk over thetas as with select_topk + zero_masked_. Extra memory as select_topk
    plus 4 bytes per selected element until the output is assembled.
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
        return (torch.empty((0,), dtype=torch.int64), torch.empty((0,), dtype=torch.float32),
                torch.tensor(float("inf"), dtype=torch.float64), torch.tensor(0, dtype=torch.int64))
    try:
        check_backend(thetas, grads)
        return torch.ops.mft.zero_topk_.default(thetas, grads, lr32, k, rank_by, bool(literal), int(seed))
    except RuntimeError as err:
        raise_nonfinite(err, names, thetas, grads)
