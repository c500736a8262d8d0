"""Configuration fields, shared by every config dataclass: help text, type checks of values read from YAML
or JSON, and flat composition.

A pipeline's config composes smaller ones (`DataConfig`, `SelectionSpec`) as fields marked by `compose`.
Flags, config.json / results.json keys, YAML files and sweep axes stay flat: `flat_fields` lists every
leaf under its own name, `build` makes the nested config from a flat mapping, `flatten` writes it back.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: numpy's legacy seeding (np.random.seed, RandomState, used by sampling and the random control) rejects
#: seeds outside 32 bits, and torch and the C++ kernels overflow past 64 bits; 32 bits is what all accept.
SEED_MAX = 2**32 - 1
#: counts reach torch, numpy and the tokenizers as int64; beyond that they overflow with a traceback.
COUNT_MAX = 2**63 - 1


def help_field(text: str, default: Any = dataclasses.MISSING, *, off: str | None = None, flag: str | None = None,
               aliases: tuple[str, ...] = (), deprecated: tuple[str, ...] = (), **kw: Any) -> Any:
    """A dataclass field whose `--help` text is `text` (read back by `field_help`), defaulting to `default`.

    Every config dataclass declares its fields with it, so the CLI's help and the config stay one text. A
    list, dict or tuple default becomes a per-instance copy (a default_factory); `kw` goes to `field`.
    For the generated flags: `off` names the flag that sets a bool false (default `--no-NAME`), `flag` a
    flag name other than `--NAME`, `aliases` other names of the same flag (e.g. transformers' names),
    `deprecated` old flag names still accepted with a warning.
    """
    meta = {"help": text, "off": off, "flag": flag, "aliases": tuple(aliases), "deprecated": tuple(deprecated)}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


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
    dict[K, V], Literal. `data` is flat (see flat_fields: a composed config's fields by their own names).
    Keys that are not fields are left to the caller (from_dict names them). Raises
    ConfigError naming the first mismatched field, e.g. `config field samples: expected an integer, got
    'abc' (str)`. Cost: one pass over `data`.
    """
    hints = flat_type_hints(cls)
    for name, tp in hints.items():
        if name not in data:
            continue
        bad = _mismatch(tp, data[name])
        if bad is not None:
            raise ConfigError(f"config field {name}: expected {_type_text(tp)}, got {bad}")


def integral_floats_to_int(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with integral floats (64.0, from YAML `6.4e1` or JSON) in int fields of `cls` made ints, so
    the dataclass sees the type it declares; call after check_field_types."""
    hints = flat_type_hints(cls)
    out = dict(data)
    for k, v in data.items():
        tp = hints.get(k)
        ints = tp is int or (typing.get_origin(tp) in (typing.Union, types.UnionType) and int in typing.get_args(tp))
        if ints and isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and v.is_integer():
            out[k] = int(v)
    return out


def yaml_loader():
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


# ---------------------------------------------------------------------------------------------- composition


def compose(cls: type, help: dict[str, str] | None = None, names: dict[str, str] | None = None,
            types: dict[str, Any] | None = None, **defaults: Any) -> Any:
    """A field holding a `cls` instance whose fields appear flat in the composing config.

    `defaults` override `cls`'s defaults for this pipeline (e.g. `samples=1000`), `help` overrides help
    texts where the field means something more specific here, and `names` gives a field a different flat
    name (SelectionSpec's `fractions` is the flag `--fraction`), and `types` narrows a field's declared
    type where this pipeline requires more (`samples: int` where it may not be left out), so values read
    from files are checked against it. The default instance is validated when the composing config is
    created.
    """
    meta = {"compose": cls, "help": dict(help or {}), "names": dict(names or {}), "types": dict(types or {}),
            "defaults": dict(defaults)}
    return field(default_factory=lambda: cls(**defaults), metadata=meta)


@dataclass(frozen=True)
class FlatField:
    """One leaf of a config as flags and JSON see it: its flat `name`, declared type, default, help text,
    and `path` (the attribute names from the top config down to it)."""

    name: str
    type: Any
    default: Any
    help: str
    path: tuple[str, ...]
    #: the declaring field's metadata (e.g. "off": the flag that sets a bool false, "flag": its own name)
    metadata: Any = None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flat_fields(cls: type) -> list[FlatField]:
    """Every init field of dataclass `cls`, composed fields replaced by their own fields (recursively),
    in declaration order. Raises TypeError when two leaves share a flat name (a programming error).
    Cost: one walk of the field declarations (and one default instance per composed field)."""
    out: list[FlatField] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        sub = f.metadata.get("compose")
        if sub is None:
            out.append(FlatField(f.name, hints[f.name], _default_of(f), f.metadata.get("help", ""), (f.name,),
                                 f.metadata))
            continue
        default = f.default_factory()
        names, helps, narrowed = f.metadata["names"], f.metadata["help"], f.metadata["types"]
        for leaf in flat_fields(sub):
            own = leaf.path[0]
            name = names.get(own, own) if len(leaf.path) == 1 else leaf.name
            value = getattr(default, own) if len(leaf.path) == 1 else leaf.default
            if isinstance(value, tuple) and typing.get_origin(leaf.type) is list:
                value = list(value)
            out.append(FlatField(name, narrowed.get(own, leaf.type), value, helps.get(name, leaf.help),
                                 (f.name,) + leaf.path, leaf.metadata))
    seen: set[str] = set()
    for leaf in out:
        if leaf.name in seen:
            raise TypeError(f"{cls.__name__}: two fields are both named {leaf.name!r} once flattened")
        seen.add(leaf.name)
    return out


def flat_type_hints(cls: type) -> dict[str, Any]:
    """{flat name: declared type} of every leaf of `cls` (see flat_fields)."""
    return {leaf.name: leaf.type for leaf in flat_fields(cls)}


def flat_names(cls: type) -> list[str]:
    """The flat names of `cls`'s leaves, in declaration order."""
    return [leaf.name for leaf in flat_fields(cls)]


def build(cls: type, flat: dict[str, Any]) -> Any:
    """An instance of `cls` from a flat mapping of leaf names to values (absent leaves take their defaults,
    a composed field's pipeline defaults included). Unknown keys: TypeError naming them, as a dataclass
    constructor would. Validation is each class's own (its __post_init__)."""
    known = {leaf.name: leaf for leaf in flat_fields(cls)}
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise TypeError(f"{cls.__name__} got unexpected field(s) {', '.join(unknown)}")
    return _build(cls, {known[k].path: v for k, v in flat.items()})


def _build(cls: type, by_path: dict[tuple[str, ...], Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        sub = f.metadata.get("compose")
        if sub is None:
            if (f.name,) in by_path:
                kwargs[f.name] = by_path[(f.name,)]
            continue
        given = {p[1:]: v for p, v in by_path.items() if p[0] == f.name}
        if given:
            defaults = {(k,): v for k, v in f.metadata["defaults"].items()}
            kwargs[f.name] = _build(sub, {**defaults, **given})
    return cls(**kwargs)


def flatten(config: Any) -> dict[str, Any]:
    """The flat mapping of a config's leaves (lists and tuples as lists, nested dataclasses expanded): the
    form of config.json and results.json's "config". `build(type(config), flatten(config))` rebuilds it."""
    out: dict[str, Any] = {}
    for leaf in flat_fields(type(config)):
        value: Any = config
        for attr in leaf.path:
            value = getattr(value, attr)
        out[leaf.name] = list(value) if isinstance(value, tuple) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_known_fields(cls: type, d: dict[str, Any]) -> None:
    """ConfigError naming the keys of `d` that are not flat fields of `cls` (and the known ones)."""
    names = flat_names(cls)
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")


def read_yaml_fields(cls: type, path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file `path` ('-' or '_' in names), its values checked against `cls`'s flat field
    types (unknown keys are left to the caller: check_known_fields). ConfigError for a missing or
    unreadable file, invalid YAML, a non-mapping, a non-string key or a wrongly typed value."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {p} does not exist")
    try:
        data = yaml.load(p.read_text(), Loader=yaml_loader()) or {}
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
    return data


class FlatConfig:
    """Flat construction and serialisation for a config dataclass that composes others (mixin).

    `of(**flat)` builds from flat names (flags, tests, the API), `from_dict` does the same after checking
    names and types (config.json, YAML), `to_dict` is `flatten`; `from_yaml` reads a YAML file.
    """

    @classmethod
    def of(cls, **flat: Any) -> Any:
        """The config from flat field names (e.g. `RunConfig.of(samples=200, fraction=[0.1])`)."""
        return build(cls, flat)

    @classmethod
    def from_dict(cls, d: dict[str, Any], extra: Callable[[str], bool] | None = None) -> Any:
        """The config from a flat dict (config.json, a YAML mapping); ConfigError for an unknown field or a
        value of the wrong type (check_field_types), naming the field. Keys for which `extra(key)` is true
        (derived values a stored config carries, e.g. lr_fp32) are dropped."""
        d = {k: v for k, v in d.items() if not (extra and extra(k))}
        check_known_fields(cls, d)
        check_field_types(cls, d)
        return build(cls, integral_floats_to_int(cls, d))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
        """The config of YAML file `path` (field: value, '-' or '_' in names), then `overrides` (CLI flags,
        None skipped). The file's values are type-checked before the flags merge, so an error names the
        file's field; ConfigError for a missing file, invalid YAML, unknown fields or wrong types."""
        data = read_yaml_fields(cls, path)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping of this config's fields (see flatten)."""
        return flatten(self)

    def replace(self, **flat: Any) -> Any:
        """A copy with the flat fields `flat` changed, validated again (dataclasses.replace by flat names)."""
        return build(type(self), {**flatten(self), **flat})


def field_help(cls: type, name: str) -> str:
    """Help text of one flat config field (used by the CLI so flags and config never drift apart)."""
    for leaf in flat_fields(cls):
        if leaf.name == name:
            return leaf.help
    raise KeyError(name)
