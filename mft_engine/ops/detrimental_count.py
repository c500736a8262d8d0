"""mft::detrimental_count — how many elements of each tensor are detrimental."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import check_backend, check_names, raise_nonfinite, round_lr, tensor_list


def detrimental_count(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float,
                      literal: bool = False, names: Sequence[str] | None = None) -> torch.Tensor:
    """Number of detrimental elements in each (thetas[i], grads[i]) pair (test as in detrimental_score).

    Shapes/dtypes: thetas[i] and grads[i] share a shape; each is float32, float16 or bfloat16. Returns
    int64 of shape [len(thetas)]. lr is rounded once to float32.
    Raises ConfigError for lr <= 0, NonFiniteError naming the parameter (names[i] when given) for NaN/Inf
    anywhere.
    Cost: one parallel pass over all thetas and grads, no concatenation; O(threads × len) extra memory.
    """
    lr32 = round_lr(lr)
    thetas = tensor_list(thetas, "thetas")
    grads = tensor_list(grads, "grads")
    names = check_names(names, len(thetas))
    if not thetas and not grads:
        return torch.zeros((0,), dtype=torch.int64)
    try:
        check_backend(thetas, grads)
        return torch.ops.mft.detrimental_count.default(thetas, grads, lr32, bool(literal))
    except RuntimeError as err:
        raise_nonfinite(err, names, thetas, grads)
