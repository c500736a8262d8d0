"""mft::zero_masked_ / mft::restore_ — zero chosen elements in place and undo it exactly."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import check_backend, tensor_list


def _check_empty(indices: torch.Tensor) -> None:
    if indices.numel() != 0:
        raise IndexError(f"indices[0]={int(indices.reshape(-1)[0])} is out of range for 0 elements "
                         "(the params list is empty)")


def zero_masked_(params: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """Set the elements at flat `indices` of the params list to zero, in place; return their old values.

    Flat index = position in the concatenation of the params in list order, each row-major. indices:
    int64, 1-D, strictly increasing (sorted, no duplicates) and in [0, total numel) — ValueError /
    IndexError otherwise. params: contiguous CPU tensors sharing one dtype (float32, float16 or
    bfloat16). Returns a 1-D tensor [len(indices)] of that dtype with the values before zeroing
    (float32 and empty when params is empty).
    Cost: one pass over indices with random access into params; the output is the only extra memory.
    """
    params = tensor_list(params, "params")
    if not params:
        _check_empty(indices)
        return torch.empty((0,), dtype=torch.float32)
    check_backend(params, indices)
    return torch.ops.mft.zero_masked_.default(params, indices)


def restore_(params: Sequence[torch.Tensor], indices: torch.Tensor, values: torch.Tensor) -> None:
    """Write `values` back at flat `indices` of the params list, in place, bit for bit (undoes zero_masked_).

    indices as for zero_masked_; values 1-D with one entry per index, in the params' dtype.
    Cost: one pass over indices and values with random access into params; no extra memory.
    """
    params = tensor_list(params, "params")
    if not params:
        _check_empty(indices)
        return
    check_backend(params, indices, values)
    torch.ops.mft.restore_.default(params, indices, values)
