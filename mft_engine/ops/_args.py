"""Argument handling shared by the op wrappers: lr rounding, names, and mapping kernel errors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import torch

from ._cpu_env import check_cpu_path_environment

from ..errors import NonFiniteError
from ..selection_spec import check_rank_by as _check_rank_by, round_lr_fp32

def round_lr(lr: float) -> float:
    """lr rounded once to float32 (selection_spec.round_lr_fp32, the one implementation); ConfigError
    unless lr is a finite number > 0 that stays finite and > 0 in float32."""
    return round_lr_fp32(lr, flag="lr=")


def check_rank_by(rank_by: str) -> str:
    """rank_by itself, or ConfigError if it is not 'shrink' or 'update' (selection_spec.check_rank_by)."""
    return _check_rank_by(rank_by, flag="rank_by=")


def tensor_list(tensors: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    """The sequence as a list of tensors (TypeError naming `what` otherwise)."""
    out = list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return out


def check_backend(*tensors: torch.Tensor | Sequence[torch.Tensor]) -> None:
    """Before a kernel call: every tensor given (tensors or lists of them) on one device — ValueError
    naming the two devices otherwise, before the dispatcher's longer error — and, for CPU tensors, the
    MFT_CPU_PATH check (CpuPathError). Cost: one device comparison per tensor."""
    flat = [t for x in tensors for t in ((x,) if isinstance(x, torch.Tensor) else x)]
    if not flat:
        return
    first = flat[0].device
    for t in flat[1:]:
        if t.device != first:
            raise ValueError(f"tensors on two devices, {first} and {t.device}: every tensor an mft op takes must be "
                             "on one device")
    if first.type == "cpu":
        check_cpu_path_environment()


def check_names(names: Sequence[str] | None, n: int) -> list[str] | None:
    """names as a list, checked to have one entry per tensor."""
    if names is None:
        return None
    out = [str(x) for x in names]
    if len(out) != n:
        raise ValueError(f"names has {len(out)} entries but there are {n} tensors; give one name per tensor")
    return out


def raise_nonfinite(err: RuntimeError, names: Sequence[str] | None, thetas: Sequence[torch.Tensor],
                    grads: Sequence[torch.Tensor], single: bool = False) -> NoReturn:
    """After a kernel failed with `err`: NonFiniteError naming the first parameter (list order; its value
    before its gradient) holding NaN or Inf and the element's row-major index, or `err` itself when every
    value is finite (another error). The tensors are read, never the kernel's message text; this runs
    only on the error path, so the one extra pass costs nothing when all is well."""
    for i, (theta, grad) in enumerate(zip(thetas, grads)):
        for kind, x in (("theta", theta), ("grad", grad)):
            flat = x.detach().reshape(-1)
            bad = torch.nonzero(~torch.isfinite(flat))
            if bad.numel() == 0:
                continue
            where = kind if single else f"{kind}s[{i}]"
            label = f"{names[i]!r} ({where})" if names is not None and i < len(names) else where
            part = "value" if kind == "theta" else "gradient"
            raise NonFiniteError(
                f"non-finite {part} (NaN or Inf) of parameter {label} at element {int(bad[0, 0])}; "
                "parameters and gradients must be finite") from err
    raise err
