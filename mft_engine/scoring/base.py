"""The Scorer interface and the registry of scorers by name.

A scorer turns `ScoringInputs` into one float64 CPU tensor per eligible parameter, shaped like it.
Sign convention (DESIGN.md, Scorer conventions):
- signed scorers (`signed = True`) return the predicted change of the scoring-half loss when the
  parameter is set to zero: negative means removal helps;
- unsigned scorers (`signed = False`) return a predicted harm ≥ 0 of setting it to zero (larger: keep).
A scorer may return NaN for parameters it does not score (wanda and ria on biases); downstream code
(selection, judging against ground truth) treats NaN as "not scored", never as a value.

Adding a scorer is one file with a `@register_scorer` class (its settings, if any, as an `options`
dataclass) plus one import line in scoring/registry.py.
"""
from __future__ import annotations

import abc
import dataclasses
import re
from typing import ClassVar

import torch

from ..errors import ConfigError
from .inputs import ScoringInputs

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_REGISTRY: dict[str, type[Scorer]] = {}


class Scorer(abc.ABC):
    """Base of every scorer: `name` (unique, lowercase), `signed`, a one-line `description`, and `score`.

    Scorers hold no statistics themselves: whatever they compute that another scorer could reuse goes
    through `inputs.cached`, so one ScoringInputs shared by several scorers pays for it once.
    """

    name: ClassVar[str]
    signed: ClassVar[bool]
    description: ClassVar[str]
    #: the scorer's settings: a dataclass (fields declared with fields.help_field, checked in its
    #: __post_init__) that `score` reads with `inputs.settings(type(self).options)`; None: no settings
    options: ClassVar[type | None] = None

    @abc.abstractmethod
    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        """One tensor per name in `inputs.names`: the parameter's shape, float64, on CPU.

        Signed scorers: predicted change of the scoring-half loss when the element is zeroed (negative:
        removal helps). Unsigned: predicted harm ≥ 0 of zeroing it; NaN where not scored.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, signed={self.signed})"


def as_scores(t: torch.Tensor) -> torch.Tensor:
    """`t` detached as a contiguous float64 CPU tensor (a copy only when dtype or device differ)."""
    return t.detach().to(device="cpu", dtype=torch.float64).contiguous()


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: register `cls` under `cls.name` and return it unchanged.

    Checks that `cls` subclasses Scorer, that `name` is lowercase letters/digits joined by '-' or '_',
    that `signed` is a bool (TypeError otherwise) and `description` a non-empty string. Registering a
    second class under a name already taken raises ValueError (the very same class again is a no-op).
    """
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"register_scorer expects a Scorer subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"scorer {cls.__qualname__} has name {name!r}; expected a lowercase name such as "
                         "'taylor' or 'fisher-taylor'")
    if not isinstance(getattr(cls, "signed", None), bool):
        raise TypeError(f"scorer {name!r} must set the class attribute signed to True or False")
    if not isinstance(getattr(cls, "description", None), str) or not cls.description.strip():
        raise ValueError(f"scorer {name!r} must set a non-empty class attribute description")
    if cls.options is not None and not dataclasses.is_dataclass(cls.options):
        raise TypeError(f"scorer {name!r}: options must be a dataclass, got {cls.options!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"a scorer named {name!r} is already registered ({existing.__module__}."
                         f"{existing.__qualname__}); scorer names must be unique")
    _REGISTRY[name] = cls
    return cls


def _load_builtin() -> None:
    # Importing the registry module imports every built-in scorer file, which registers it; done lazily
    # because the scorer files themselves import this module.
    from . import registry  # noqa: F401


def option_classes() -> list[type]:
    """The options dataclasses of the registered scorers (each once), in registration order."""
    _load_builtin()
    return list(dict.fromkeys(c.options for c in _REGISTRY.values() if c.options is not None))


def scorer_names() -> list[str]:
    """The registered scorer names, sorted (the built-in ones are always loaded first)."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_scorer(name: str) -> Scorer:
    """A new instance of the scorer registered as `name` (case-insensitive).

    Raises ConfigError, listing the known names, when no scorer has that name.
    """
    _load_builtin()
    key = str(name).strip().lower()
    cls = _REGISTRY.get(key)
    if cls is None:
        raise ConfigError(f"unknown scorer {name!r}; expected one of {', '.join(sorted(_REGISTRY))}")
    return cls()
