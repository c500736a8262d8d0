"""What to select: the one description of a detrimental selection, and the one place it is validated.

`SelectionSpec` holds the learning rate of the hypothetical step (rounded once to fp32), the ranking
score, the literal/algebraic test, the fractions and the exclusions. `mft run`'s RunConfig composes it;
`detrimental_mask`, the prune method, the Trainer callback and the op wrappers validate through it. The
C++ kernels keep their own checks as the last guard; Python never reads their messages.
"""
from __future__ import annotations

import math
import struct
from dataclasses import InitVar, dataclass, field
from typing import Any

from .errors import ConfigError
from .fields import help_field

RANK_BY = ("shrink", "update")
EXCLUDE_PRESETS: dict[str, tuple[str, ...]] = {
    # The original BERT-MFT code left the head out: classifier and pooler.
    "original": ("classifier", "pooler"),
    # The influence follow-up also left out LayerNorm and the embeddings.
    "influence": ("classifier", "pooler", "LayerNorm", "embeddings"),
    "none": (),
}


def _named(flag: str, value: Any) -> str:
    # "--lr 0.0" for a CLI flag, "lr=0.0" for a keyword argument (flag "lr=").
    return f"{flag}{value!r}" if flag.endswith("=") else f"{flag} {value!r}"


CLI_FLAGS = {"lr": "--lr", "fractions": "--fraction", "rank_by": "--rank-by", "exclude": "--exclude"}


def round_lr_fp32(lr: float, flag: str = "--lr") -> float:
    """lr rounded once to fp32, as the original's fp32 `param - lr * grad` saw it (a Python float that
    fp32 holds exactly). ConfigError naming `flag` unless lr is a finite number > 0 that stays finite and
    > 0 in fp32."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"{_named(flag, lr)} must be a finite number > 0") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ConfigError(f"{_named(flag, lr)} must be a finite number > 0")
    try:
        lr32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        raise ConfigError(f"{_named(flag, lr)} overflows fp32; it must be a finite number > 0") from None
    if lr32 <= 0.0 or not math.isfinite(lr32):
        raise ConfigError(f"{_named(flag, lr)} rounds to {lr32!r} in fp32; it must stay finite and > 0")
    return lr32


def check_rank_by(rank_by: str, flag: str = "--rank-by") -> str:
    """rank_by itself, or ConfigError naming `flag` unless it is one of RANK_BY."""
    if rank_by not in RANK_BY:
        raise ConfigError(f"{_named(flag, rank_by)} is not one of {', '.join(RANK_BY)}")
    return rank_by


def parse_unit_list(value: str | float | list[float] | tuple[float, ...], flag: str, what: str,
                    example: str) -> list[float]:
    """'a,b,c' or a number or a list -> sorted unique numbers, each in (0, 1]; ConfigError names `flag`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [float(value)]
    elif isinstance(value, str):
        try:
            items = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{flag} {value!r} is not a comma-separated list of {what}") from None
    else:
        try:
            items = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} {value!r} is not a list of {what}") from None
    for f in items:
        if math.isnan(f) or not 0.0 < f <= 1.0:
            raise ConfigError(f"{flag} {f:g} is outside (0, 1]; expected {what} such as {example}")
    return sorted(set(items))


def parse_fractions(value: str | float | list[float] | tuple[float, ...], flag: str = "--fraction") -> list[float]:
    """'0.01,0.05,0.1' or a float or a list -> sorted unique fractions, each in (0, 1]."""
    items = parse_unit_list(value, flag, "numbers", "0.1 or 0.01,0.05,0.1")
    if not items:
        raise ConfigError(f"{flag} is empty; expected numbers in (0, 1], e.g. 0.1 or 0.01,0.05,0.1")
    return items


def exclude_patterns(exclude: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The parameter-name patterns an exclusion stands for: a preset's, or the comma-separated patterns."""
    if isinstance(exclude, str):
        if exclude.strip() in EXCLUDE_PRESETS:
            return EXCLUDE_PRESETS[exclude.strip()]
        return tuple(p.strip() for p in exclude.split(",") if p.strip())
    return tuple(exclude)


@dataclass(frozen=True)
class SelectionSpec:
    """The detrimental selection: lr of the hypothetical step, fractions, ranking, test and exclusions.

    Validated once at construction (ConfigError naming the field's flag): lr a finite number > 0 that
    stays so in fp32, each fraction in (0, 1], rank_by in RANK_BY, exclude a preset or non-empty
    patterns. `lr32` is lr rounded once to fp32: every consumer reads that one rounding.
    """

    lr: float = help_field("learning rate of the hypothetical step (rounded once to fp32)", 2e-5,
                           aliases=("--learning-rate",))
    fractions: tuple[float, ...] = help_field("fraction(s) of detrimental eligible parameters to zero", (0.1,))
    rank_by: str = help_field("ranking score among detrimental parameters: shrink | update", "shrink")
    literal: bool = help_field("evaluate |θ − lr·g| < |θ| in fp32 as the original code did", False,
                               off="--algebraic")
    exclude: str | tuple[str, ...] = help_field("original | influence | none | comma-separated name patterns", "original")
    lr32: float = field(init=False, repr=False, compare=False)
    #: how errors name the fields: CLI flags by default; callers with keyword arguments pass their names
    flags: InitVar[dict[str, str] | None] = None

    def __post_init__(self, flags: dict[str, str] | None) -> None:
        name = {**CLI_FLAGS, **(flags or {})}
        object.__setattr__(self, "lr32", round_lr_fp32(self.lr, flag=name["lr"]))
        object.__setattr__(self, "fractions", tuple(parse_fractions(self.fractions, flag=name["fractions"])))
        check_rank_by(self.rank_by, flag=name["rank_by"])
        if isinstance(self.exclude, str) and not self.exclude.strip():
            raise ConfigError(f"{name['exclude']} is empty; expected original, influence, none or name patterns")

    @property
    def fraction(self) -> float:
        """The single fraction of a one-fraction spec (ConfigError when there are several)."""
        if len(self.fractions) != 1:
            raise ConfigError(f"expected one fraction, got {list(self.fractions)}")
        return self.fractions[0]

    def exclude_patterns(self) -> tuple[str, ...]:
        """The parameter-name patterns excluded (a preset's, or the user's)."""
        return exclude_patterns(self.exclude)

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "lr_fp32": self.lr32, "fractions": list(self.fractions), "rank_by": self.rank_by,
                "literal": self.literal,
                "exclude": self.exclude if isinstance(self.exclude, str) else list(self.exclude)}
