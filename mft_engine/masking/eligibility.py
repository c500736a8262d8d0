"""Exclusion rules: which named parameters may be selected."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch

from ..errors import ConfigError
from ..selection_spec import EXCLUDE_PRESETS, exclude_patterns


def _matches(name: str, pat: str) -> bool:
    # A glob when the pattern holds glob characters, else a substring of the dotted name.
    if any(c in pat for c in "*?["):
        return fnmatch.fnmatchcase(name, pat)
    return pat in name


def is_excluded(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when `name` matches a pattern: a glob (`*`, `?`, `[`) or else a dotted-name component/substring."""
    return any(_matches(name, pat) for pat in patterns)


def eligible_parameters(model_or_named, patterns) -> list[tuple[str, torch.Tensor]]:
    """The (name, parameter) pairs in `named_parameters()` order that no pattern excludes."""
    named = model_or_named.named_parameters() if isinstance(model_or_named, torch.nn.Module) else model_or_named
    return [(n, p) for n, p in named if not is_excluded(n, patterns)]


def _names(model_or_names) -> list[str]:
    if isinstance(model_or_names, torch.nn.Module):
        return [n for n, _ in model_or_names.named_parameters()]
    return [x[0] if isinstance(x, tuple) else str(x) for x in model_or_names]


def check_exclude_patterns(model_or_names, exclude: str | Sequence[str], flag: str = "--exclude") -> None:
    """Raise ConfigError when a pattern the user gave matches no parameter name.

    `model_or_names`: a module, parameter names, or (name, tensor) pairs. `exclude`: the user's value as
    typed — a preset name (original, influence, none), which is never checked since a preset names
    tensors some architectures lack (RoBERTa has no pooler), or comma-separated patterns; or a sequence
    of patterns, each checked. The message names every unmatched pattern and a few real parameter names.
    Cost: one pass over the names per pattern.
    """
    if isinstance(exclude, str) and exclude.strip() in EXCLUDE_PRESETS:
        return
    patterns = [str(p).strip() for p in exclude_patterns(exclude) if str(p).strip()]
    names = _names(model_or_names)
    unmatched = [p for p in patterns if not any(_matches(n, p) for n in names)]
    if not unmatched:
        return
    shown = ", ".join(repr(p) for p in unmatched)
    plural = "s" if len(unmatched) > 1 else ""
    raise ConfigError(f"{flag} pattern{plural} {shown} match{'' if plural else 'es'} no parameter of this model "
                      f"(names look like {', '.join(_examples(names))}; a pattern is a glob with * ? [ or a "
                      "substring of the name)")


def _examples(names: Iterable[str], k: int = 4) -> list[str]:
    # Spread over the model (first, middle, last) so the user sees each naming scheme: embeddings,
    # encoder layers, head.
    names = list(names)
    if len(names) <= k:
        return names
    picks = sorted({round(i * (len(names) - 1) / (k - 1)) for i in range(k)})
    return [names[i] for i in picks]
