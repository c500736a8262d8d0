"""Run configurations: one dataclass per command, with help text, validation and to_dict().

CLI flags map onto these fields one to one; results.json stores `to_dict()` of the config that ran.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .errors import ConfigError
# The selection's vocabulary is defined once, in selection_spec; re-exported here for config readers.
from .selection_spec import EXCLUDE_PRESETS, SelectionSpec, parse_unit_list, round_lr_fp32  # noqa: F401

REDUCTIONS = ("batch-sum", "mean")
SAMPLE_ORDERS = ("first", "seeded")
PRECISIONS = ("fp32", "bf16")

#: numpy's legacy seeding (np.random.seed, RandomState, used by sampling and the random control) rejects
#: seeds outside 32 bits, and torch and the C++ kernels overflow past 64 bits; 32 bits is what all accept.
SEED_MAX = 2**32 - 1
#: counts reach torch, numpy and the tokenizers as int64; beyond that they overflow with a traceback.
COUNT_MAX = 2**63 - 1


def help_field(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field whose `--help` text is `text` (read back by `field_help`), defaulting to `default`.

    Every config dataclass declares its fields with it, so the CLI's help and the config stay one text. A
    list, dict or tuple default becomes a per-instance copy (a default_factory); `kw` goes to `field`.
    """
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


def check_int_range(flag: str, value: int, lo: int, hi: int) -> None:
    """Raise ConfigError (one line naming `flag`) unless lo <= value <= hi.

    With hi = COUNT_MAX a value below lo keeps the `--flag V must be >= lo` wording of the other checks;
    seeds (hi = SEED_MAX) name the whole range, since a negative seed is as wrong as a huge one.
    """
    if lo <= value <= hi:
        return
    if hi == SEED_MAX:
        raise ConfigError(f"{flag} {value} must be in [{lo}, 2**32-1] (numpy's seeding takes 32-bit seeds)")
    if value < lo:
        raise ConfigError(f"{flag} {value} must be >= {lo}")
    if hi == COUNT_MAX:
        raise ConfigError(f"{flag} {value} must be <= 2**63-1 (it must fit a 64-bit integer)")
    raise ConfigError(f"{flag} {value} must be <= {hi}")


def _type_text(tp: Any) -> str:
    """`tp` in words, for a type-mismatch message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in rest)
        return f"{text} or null" if len(rest) < len(args) else text
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        item = _type_text(args[0]) if args else "any value"
        return f"a list of {_PLURAL.get(item, item)}"
    if origin is dict:
        return "a mapping" + (f" of {_type_text(args[0])} to {_type_text(args[1])}" if args else "")
    return _TYPE_TEXT.get(tp, f"a {getattr(tp, '__name__', str(tp))}")


_TYPE_TEXT = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {"an integer": "integers", "a number": "numbers", "true or false": "booleans", "a string": "strings"}


def _mismatch(tp: Any, value: Any) -> str | None:
    """None when `value` fits type `tp`, else the offending value (or item) in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        found = [_mismatch(a, value) for a in args if a is not type(None)]
        return None if any(f is None for f in found) else _shown(value)
    if origin is typing.Literal:
        return None if value in args else _shown(value)
    if origin in (list, tuple, set, frozenset):
        item_tp = args[0] if args else Any
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                bad = _mismatch(item_tp, item)
                if bad is not None:
                    return f"{bad} at item {i + 1}"
            return None
        # One item for a one-item list, or 'a,b' that the field's own parser splits (e.g. --fraction).
        if isinstance(value, str) or _mismatch(item_tp, value) is None:
            return None
        return _shown(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return _shown(value)
        if args:
            for k, v in value.items():
                bad = _mismatch(args[0], k)
                if bad is None:
                    bad = _mismatch(args[1], v)
                if bad is not None:
                    return f"{bad} at key {k!r}"
        return None
    if tp is bool:
        return None if isinstance(value, bool) else _shown(value)
    if tp is int:
        # bool is an int subclass, but `samples: true` is a mistake; 64.0 is an integer written as a float.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _shown(value)
        return None if isinstance(value, int) or (math.isfinite(value) and value.is_integer()) else _shown(value)
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else _shown(value)
    if isinstance(tp, type):
        return None if isinstance(value, tp) else _shown(value)
    return None  # a type this check does not know: left to the dataclass's own validation


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "null" if value is None else f"{text} ({type(value).__name__})"


def check_field_types(cls: type, data: dict[str, Any]) -> None:
    """Check values read from YAML or JSON against the field types of dataclass `cls`.

    int (not bool; a float only when integral), float (int or float, not bool), bool, str, `X | None`
    (null allowed), list[T] (a list of T, one T, or a comma-separated string the field parses itself),
    dict[K, V], Literal. Keys that are not fields are left to the caller (from_dict names them). Raises
    ConfigError naming the first mismatched field, e.g. `config field samples: expected an integer, got
    'abc' (str)`. Cost: one pass over `data`.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data or f.name not in hints:
            continue
        bad = _mismatch(hints[f.name], data[f.name])
        if bad is not None:
            raise ConfigError(f"config field {f.name}: expected {_type_text(hints[f.name])}, got {bad}")


def integral_floats_to_int(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with integral floats (64.0, from YAML `6.4e1` or JSON) in int fields of `cls` made ints, so
    the dataclass sees the type it declares; call after check_field_types."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for k, v in data.items():
        tp = hints.get(k)
        ints = tp is int or (typing.get_origin(tp) in (typing.Union, types.UnionType) and int in typing.get_args(tp))
        if ints and isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and v.is_integer():
            out[k] = int(v)
    return out


def _yaml_loader():
    """PyYAML's SafeLoader, except that `2e-5` is a float (YAML 1.1 wants `2.0e-5`; YAML 1.2 and every
    user expect a number, and as a string it would fail the float check)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
        list("-+0123456789"))
    return Loader


@dataclass
class RunConfig:
    """Configuration of `mft run`: the BERT-MFT study (collect, test, select, zero, evaluate)."""

    model: str = help_field("minilm | bert-base-random | bert-tiny-random | a checkpoint folder | a Hub id", "minilm")
    task: str = help_field("task id (sst2, mrpc, cola, ...) or a local CSV/TSV/JSONL file", "sst2")
    data_dir: str | None = help_field("GLUE root or task folder; else $MFT_DATA_DIR, the embedded SST-2, the Hub", None)
    samples: int = help_field("number of training samples N to collect gradients on", 1000)
    batch_size: int = help_field("fixed batch size defining g under batch-sum", 32)
    lr: float = help_field("learning rate of the hypothetical step (rounded once to fp32)", 2e-5)
    fraction: list[float] = help_field("fraction(s) of detrimental eligible parameters to zero", [0.1])
    rank_by: str = help_field("ranking score among detrimental parameters: shrink | update", "shrink")
    exclude: str = help_field("original | influence | none | comma-separated name patterns", "original")
    reduction: str = help_field("batch-sum (sum of batch-mean gradients) | mean (gradient of the mean loss)", "batch-sum")
    sample_order: str = help_field("first (first N rows in file order) | seeded (N rows drawn with the seed)", "first")
    keep_last: bool = help_field("keep the last partial batch under batch-sum", False)
    precision: str = help_field("fp32 | bf16 (autocast forward/backward, fp32 sums)", "fp32")
    literal: bool = help_field("evaluate |θ − lr·g| < |θ| in fp32 as the original code did", False)
    eval_mode: bool = help_field("collect with dropout off (default: train mode, as the original)", False)
    seed: int = help_field("seed for the head initialisation, dropout, sampling and the random control", 42)
    max_length: int = help_field("maximum tokens per sentence (pair)", 128)
    eval_batch_tokens: int = help_field("token budget of an evaluation batch", 8192)
    checkpoint_every: int = help_field("save a resumable collection checkpoint every B batches (0: never)", 0)
    out: str = help_field("parent folder of the results folder", "results")
    state: str | None = help_field("reuse this gradient_state.safetensors instead of collecting", None)
    control: bool = help_field("also evaluate a random control mask of the same size", True)
    text_column: str | None = help_field("text column of a local file task", None)
    text_pair_column: str | None = help_field("second text column of a local pair task", None)
    label_column: str | None = help_field("label column of a local file task", None)
    selection: SelectionSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The selection is validated by SelectionSpec alone; the flat fields are the flags' view of it.
        self.selection = SelectionSpec(lr=self.lr, fractions=self.fraction, rank_by=self.rank_by,
                                       literal=self.literal, exclude=self.exclude)
        self.fraction = list(self.selection.fractions)
        for name, lo in (("samples", 1), ("batch_size", 1), ("max_length", 2), ("eval_batch_tokens", 1),
                         ("checkpoint_every", 0)):
            check_int_range(f"--{name.replace('_', '-')}", getattr(self, name), lo, COUNT_MAX)
        check_int_range("--seed", self.seed, 0, SEED_MAX)
        for name, allowed in (("reduction", REDUCTIONS),
                              ("sample_order", SAMPLE_ORDERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.reduction == "batch-sum" and not self.keep_last and self.samples < self.batch_size:
            raise ConfigError(
                f"--samples {self.samples} < --batch-size {self.batch_size}: batch-sum drops the last partial "
                "batch, so no sample would be used (pass --keep-last or more samples)")

    @property
    def lr32(self) -> float:
        """lr rounded once to fp32 (the SelectionSpec's)."""
        return self.selection.lr32

    def exclude_patterns(self) -> tuple[str, ...]:
        """The name patterns of excluded parameters (a preset or the user's comma-separated list)."""
        return self.selection.exclude_patterns()

    def collection_key(self) -> dict[str, Any]:
        """The fields that define the gradient collection; a resume must match them exactly."""
        keys = ("model", "task", "data_dir", "samples", "batch_size", "reduction", "sample_order",
                "keep_last", "precision", "eval_mode", "seed", "max_length", "text_column",
                "text_pair_column", "label_column")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("selection", None)
        d["lr_fp32"] = self.lr32
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """The config from a dict (config.json, a YAML mapping); ConfigError for an unknown field or a value
        of the wrong type (check_field_types), naming the field."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - names - {"lr_fp32"})
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        d = {k: v for k, v in d.items() if k in names}
        check_field_types(cls, d)
        return cls(**integral_floats_to_int(cls, d))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "RunConfig":
        """The config of YAML file `path` (field: value, '-' or '_' in names), then `overrides` (CLI flags,
        None skipped). The file's values are type-checked before the flags merge, so an error names the
        file's field; ConfigError for a missing file, invalid YAML, unknown fields or wrong types."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {p} does not exist")
        try:
            data = yaml.load(p.read_text(), Loader=_yaml_loader()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config {p} is not valid YAML ({str(e).splitlines()[0]})") from None
        except OSError as e:
            raise ConfigError(f"--config {p} cannot be read ({e.strerror or e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config {p} must hold a mapping of field: value")
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(f"--config {p}: key {bad_keys[0]!r} is not a field name")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        check_field_types(cls, data)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)


def field_help(cls: type, name: str) -> str:
    """Help text of one config field (used by the CLI so flags and config never drift apart)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)
