"""The fine-tuning `Method` interface and its registry.

A method decides which parameters train (and may wrap the model, as LoRA does), which parameters must
be stored to reproduce the result, and how to save and load them. It declares its own settings as an
options dataclass (as peft's per-method configs: LoraConfig, ...), which FinetuneConfig composes so its
fields are flat flags and config.json keys, and how a run describes itself in the methods table
(`describe`). Adding a method is one file with a `Method` subclass decorated by `@register_method`, plus
one import line in train/registry.py; names are unique and lowercase.

What "stored" means: the parameters a user must keep, next to the base model (its name and seed; a
random head is re-created from the seed), to rebuild the fine-tuned model exactly. Full fine-tuning
stores everything; BitFit its trained biases; LoRA its adapter and the classifier head.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ConfigError, ModelError

STORED_FILE = "trained_parameters.safetensors"
METHOD_FILE = "method.json"


@dataclass
class Prepared:
    """A model made ready for training by `Method.prepare`.

    `model` is what the loop trains and evaluates (the input model with requires_grad set, or a wrapper
    around it); `param_groups` are torch.optim groups, each a dict with `params` (the trainable tensors),
    `name` and optionally `lr` (overriding the run's learning rate); `notes` go to results.json (e.g.
    the modules LoRA wrapped, whether gradient checkpointing is on).
    """

    model: torch.nn.Module
    param_groups: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)


class Method:
    """One way to fine-tune a sequence classifier. Subclasses set `name`, `summary`, `default_lr` and
    implement `prepare`; the other hooks have defaults that fit methods training a subset of the
    model's own parameters."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: learning rate used when the config gives none (each method has its customary range)
    default_lr: ClassVar[float] = 5e-5
    #: whether the method turns gradient checkpointing on (reported in the methods table)
    gradient_checkpointing: ClassVar[bool] = False
    #: the method's own settings: a dataclass whose fields (declared with fields.help_field, checked in
    #: its __post_init__) FinetuneConfig composes, flat, under their own names, so they are flags and
    #: config.json keys. Methods that share settings share the class (lora, lora8 and qlora). None: none.
    options: ClassVar[type | None] = None

    def describe(self, options: Any) -> str:
        """The run's label in the methods table (`mft compare`): the name with the settings that tell its
        runs apart, from `options` (an instance of `options`, None for a method without settings), e.g.
        "lora (attn-qkv, r=8)". Default: the name. Recorded in results.json as `method_label`."""
        return self.name

    def options_of(self, config) -> Any:
        """This method's settings in a FinetuneConfig (the composed `options` instance), or None when
        the method declares none."""
        return config.method_options(self.name)

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        """Set requires_grad (and wrap the model if the method does); return the model to train and its
        optimizer groups. Cost: one pass over the parameter list, plus whatever wrapping costs."""
        raise NotImplementedError

    def clip_gradients(self, model: torch.nn.Module, config) -> None:
        """Method-specific gradient clipping, run after backward and before the global clip (default: none)."""

    def trainable_params(self, model: torch.nn.Module) -> int:
        """Number of parameter elements with requires_grad in the prepared model."""
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def stored_params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """name → tensor of what must be stored to reproduce the fine-tuned model (default: the trainable
        parameters). The tensors are the live parameters (detached), not copies."""
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def stored_bytes(self, model: torch.nn.Module) -> int:
        """Bytes of the stored tensors at their dtype (the payload, without file headers)."""
        return sum(t.numel() * t.element_size() for t in self.stored_params(model).values())

    def save(self, model: torch.nn.Module, folder: str | Path) -> Path:
        """Write the stored parameters to `folder` (safetensors + method.json); returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {n: t.contiguous().clone() for n, t in self.stored_params(model).items()}
        save_file(tensors, str(folder / STORED_FILE))
        (folder / METHOD_FILE).write_text(json.dumps({"method": self.name, "tensors": len(tensors)}, indent=2) + "\n")
        return folder

    def load(self, model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
        """Copy the stored parameters in `folder` into `model` (the same base model, same seed); returns the
        model. Raises ModelError when the folder is not this method's or a tensor does not fit the model."""
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = read_method_file(folder)
        if meta.get("method") != self.name:
            raise ModelError(f"{folder} holds a {meta.get('method')!r} result, not {self.name!r}")
        saved = load_file(str(folder / STORED_FILE))
        params = dict(model.named_parameters())
        for name, t in saved.items():
            p = params.get(name)
            if p is None or p.shape != t.shape:
                want = "absent" if p is None else f"of shape {tuple(p.shape)}"
                raise ModelError(f"{folder}: stored tensor {name} {tuple(t.shape)} does not fit the model ({want})")
            with torch.no_grad():
                p.copy_(t)
        return model

    def merged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A plain Hugging Face model equal to the fine-tuned one, for `save_pretrained` checkpoints. The
        default is the model itself (no copy); wrappers return a merged copy and leave `model` intact."""
        return model


def read_method_file(folder: Path) -> dict[str, Any]:
    """The method.json of a saved result, or ModelError naming the folder."""
    p = Path(folder) / METHOD_FILE
    if not p.is_file():
        raise ModelError(f"{folder} is not a saved fine-tuning result (no {METHOD_FILE} in it)")
    return json.loads(p.read_text())


_METHODS: dict[str, type[Method]] = {}
_LISTENERS: list[Callable[[type[Method]], None]] = []


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a Method subclass to the registry under `cls.name`.

    Names are lowercase letters, digits and '-', and unique: a second registration of a name raises
    ConfigError.
    """
    name = cls.name
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name or ""):
        raise ConfigError(f"method name {name!r} must be lowercase letters, digits or '-'")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ConfigError(f"method {name!r} is already registered by {_METHODS[name].__qualname__}")
    if cls.options is not None and not dataclasses.is_dataclass(cls.options):
        raise ConfigError(f"method {name!r}: options must be a dataclass, got {cls.options!r}")
    if name not in _METHODS:
        for callback in _LISTENERS:  # first: a clash of flat option names leaves the method unregistered
            callback(cls)
    _METHODS[name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The Method subclass registered as `name`; ConfigError naming the registered ones otherwise."""
    cls = _METHODS.get(str(name).strip().lower())
    if cls is None:
        raise ConfigError(f"--method {name!r} is not a registered method; expected one of {', '.join(method_names())}")
    return cls


def registered_methods() -> list[type[Method]]:
    """The registered Method subclasses, in registration order (FinetuneConfig composes their options in
    this order, so flags and config.json keys keep theirs)."""
    return list(_METHODS.values())


def on_register(callback: Callable[[type[Method]], None]) -> None:
    """Call `callback(cls)` for every method registered from now on (FinetuneConfig composes the options
    of a method registered after it was built, e.g. a plugin's or a test's)."""
    _LISTENERS.append(callback)


def method_names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """A new instance of the method registered as `name`; ConfigError naming the registered ones otherwise."""
    return method_class(name)()


def count_elements(params) -> int:
    """Σ numel over an iterable of tensors."""
    return sum(p.numel() for p in params)


def freeze_all(model: torch.nn.Module) -> None:
    """requires_grad = False on every parameter."""
    for p in model.parameters():
        p.requires_grad_(False)
