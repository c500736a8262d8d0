"""Exclusion rules: which named parameters may be selected."""
from __future__ import annotations

import fnmatch

import torch


def is_excluded(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when `name` matches a pattern: a glob (`*`, `?`, `[`) or else a dotted-name component/substring."""
    for pat in patterns:
        if any(c in pat for c in "*?["):
            if fnmatch.fnmatchcase(name, pat):
                return True
        elif pat in name:
            return True
    return False


def eligible_parameters(model_or_named, patterns) -> list[tuple[str, torch.Tensor]]:
    """The (name, parameter) pairs in `named_parameters()` order that no pattern excludes."""
    named = model_or_named.named_parameters() if isinstance(model_or_named, torch.nn.Module) else model_or_named
    return [(n, p) for n, p in named if not is_excluded(n, patterns)]
