"""CLI flags generated from config dataclasses: one option per flat field (`fields.flat_fields`), its
help and default taken from the field, plus `--config FILE.yaml` typed by the same fields.

Every option defaults to None so a command can tell the flags given from the config's defaults (a YAML
file is overridden only by flags actually given); `--help` shows the config's default.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError
from ..fields import FlatField, flat_fields

#: the parameter that every generated command takes for its YAML file
CONFIG_PARAM = "config"


def _base_type(tp: Any) -> Any:
    """The type a flag's text is converted to: the field's type without None; unions of several types
    (str | tuple[str, ...]) and lists come in as text, which the config parses itself ('a,b,c')."""
    tp = _strip_none(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) in (typing.Union, list, tuple):
        return str
    return tp


def _shown_default(leaf: FlatField, flag: str, off: str) -> bool | str:
    d = leaf.default
    if d is dataclasses.MISSING or d is None or d == "" or d == [] or d == ():
        return False
    if isinstance(d, bool):
        return (flag if d else off).lstrip("-")
    if isinstance(d, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in d)
    return f"{d:g}" if isinstance(d, float) else str(d)


def option_parameters(cls: type, hidden: tuple[str, ...] = (), help: dict[str, str] | None = None
                      ) -> list[inspect.Parameter]:
    """One keyword-only CLI parameter per flat field of `cls` (bools as --x/--no-x or the field's own
    `off` name, lists as comma-separated text), `hidden` fields left out, `help` overriding texts; plus
    one hidden parameter per deprecated flag name. Cost: one walk of the fields."""
    params = []
    for leaf in flat_fields(cls):
        if leaf.name in hidden:
            continue
        meta = leaf.metadata or {}
        tp = _base_type(leaf.type)
        flag = meta.get("flag") or "--" + leaf.name.replace("_", "-")
        off = meta.get("off") or f"--no-{flag[2:]}"
        text = (help or {}).get(leaf.name, leaf.help)
        if typing.get_origin(_strip_none(leaf.type)) in (list, tuple) and "comma" not in text:
            text += " (comma-separated)"
        decls = (f"{flag}/{off}",) if tp is bool else (flag, *(meta.get("aliases") or ()))
        params.append(inspect.Parameter(
            leaf.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[tp],
            default=typer.Option(None, *decls, help=text, show_default=_shown_default(leaf, flag, off))))
        for i, old in enumerate(meta.get("deprecated") or ()):
            params.append(inspect.Parameter(
                f"{leaf.name}__deprecated_{i}", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[tp],
                default=typer.Option(None, old, hidden=True)))
    return params


def _strip_none(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def with_config_flags(cls: type, hidden: tuple[str, ...] = (), help: dict[str, str] | None = None,
                      config_help: str = "YAML file of config fields (field: value); flags given override it"):
    """Decorator: the command takes every flag of `cls` (see option_parameters) and `--config FILE`,
    collected in its `**given` keyword arguments."""
    def wrap(func):
        sig = inspect.signature(func)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        config = inspect.Parameter(CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                   default=typer.Option(None, "--config", help=config_help, show_default=False))
        func.__signature__ = sig.replace(parameters=own + [config] + option_parameters(cls, hidden, help))
        return func

    return wrap


def given_flags(cls: type, given: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """(the flags actually given, by flat field name, deprecated names mapped with a one-line warning;
    the --config path or None) from a generated command's `**given`."""
    given = dict(given)
    config = given.pop(CONFIG_PARAM, None)
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        name, _, old = key.partition("__deprecated_")
        if old:
            leaf = next(f for f in flat_fields(cls) if f.name == name)
            old_flag = leaf.metadata["deprecated"][int(old)]
            new_flag = leaf.metadata.get("flag") or "--" + name.replace("_", "-")
            print(f"mft: warning: {old_flag} is deprecated here; use {new_flag} (same meaning)", file=sys.stderr)
            if out.get(name, value) != value:
                raise ConfigError(f"{old_flag} and {new_flag} both given with different values; give {new_flag}")
        out[name] = value
    return out, config


def build_config(cls: type, given: dict[str, Any]):
    """The config of a generated command: its --config file (if any) with the flags given on top."""
    flags, config = given_flags(cls, given)
    if config is not None:
        return cls.from_yaml(config, flags)
    return cls.of(**flags)
