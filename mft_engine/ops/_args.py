"""Argument handling shared by the op wrappers: lr rounding, names, and mapping kernel errors."""
from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import NoReturn

import torch

from ..errors import ConfigError, NonFiniteError

RANK_BY = ("shrink", "update")

_NONFINITE = re.compile(r"non-finite value in (thetas|grads|theta|grad)(?:\[(\d+)\])? at element (\d+)")


def round_lr(lr: float) -> float:
    """lr rounded once to float32 (returned as a Python float, exactly representable in float32).

    Raises ConfigError unless lr is a finite number > 0 that stays finite and > 0 in float32.
    """
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"lr={lr!r} must be a finite number > 0") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ConfigError(f"lr={lr!r} must be a finite number > 0")
    try:
        lr32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        raise ConfigError(f"lr={lr!r} overflows float32; it must be a finite number > 0") from None
    if lr32 <= 0.0 or not math.isfinite(lr32):
        raise ConfigError(f"lr={lr!r} rounds to {lr32!r} in float32; it must stay finite and > 0")
    return lr32


def check_rank_by(rank_by: str) -> str:
    """rank_by itself, or ConfigError if it is not 'shrink' or 'update'."""
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by={rank_by!r} must be one of {', '.join(map(repr, RANK_BY))}")
    return rank_by


def tensor_list(tensors: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    """The sequence as a list of tensors (TypeError naming `what` otherwise)."""
    out = list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return out


def check_names(names: Sequence[str] | None, n: int) -> list[str] | None:
    """names as a list, checked to have one entry per tensor."""
    if names is None:
        return None
    out = [str(x) for x in names]
    if len(out) != n:
        raise ValueError(f"names has {len(out)} entries but there are {n} tensors; give one name per tensor")
    return out


def raise_nonfinite(err: RuntimeError, names: Sequence[str] | None) -> NoReturn:
    """Re-raises the kernel's "non-finite value in grads[3] at element 17" as NonFiniteError naming the
    parameter (names[3] when given); re-raises `err` itself when it is another error."""
    m = _NONFINITE.search(str(err))
    if m is None:
        raise err
    kind, pos, element = m.group(1), m.group(2), m.group(3)
    where = kind if pos is None else f"{kind}[{pos}]"
    i = int(pos) if pos is not None else 0
    label = f"{names[i]!r} ({where})" if names is not None and i < len(names) else where
    part = "value" if kind.startswith("theta") else "gradient"
    raise NonFiniteError(
        f"non-finite {part} (NaN or Inf) of parameter {label} at element {element}; "
        "parameters and gradients must be finite") from err
