"""Learned binary masks over a frozen model: "Mask Fine-Tuning" (Zhang et al., arXiv 2503.22764).

Every weight of the chosen nn.Linear modules gets a real-valued score. The forward uses W ⊙ m, where
m = 1 for the top `keep_ratio` share of |score| *within each weight tensor* (k = ⌈keep_ratio · numel⌉,
exactly, ties broken by lower flat index) and 0 elsewhere. The top-k step has no useful derivative, so
the gradient of the loss with respect to m (∂L/∂W_eff ⊙ W) is passed straight through to the scores.
Only the scores train; the base weights, biases, LayerNorms, embeddings and head stay frozen. Scores
start at |W| (m starts as the per-tensor magnitude mask) or at a constant (every score tied: m starts
as the first k weights in flat order, and the first steps' gradients break the ties).

The mask is a `torch.nn.utils.parametrize` parametrization of `weight`, so the module's code is
untouched and `weight` reads W ⊙ m wherever the model uses it; the frozen W lives at
`<module>.parametrizations.weight.original`. What is stored is the final binary mask only: one bit per
masked weight (numpy.packbits, uint8), under the base weight's name (`<module>.weight`). Loading sets
the scores to the mask itself (1 kept, 0 dropped), which reproduces it exactly.

Which modules: every nn.Linear inside an encoder layer (`...layer.<i>.`), restricted to `mask_layers`
(e.g. "4,5"; default all) and `mask_modules`: `all`, a LoRA placement name (attn-qkv, attn-full,
ffn-only, full: full-path patterns that tell `attention.output.dense` from the feed-forward
`output.dense`) or comma-separated patterns (a glob over the full module path, else a substring of it).
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize

from ..errors import ConfigError, ModelError
from ..fields import help_field
from ..masking.eligibility import is_excluded
from ..masking.mask import Mask
from .freeze import layer_index, num_layers
from .keep_mask import keep_count, top_k_mask
from .lora import PLACEMENTS
from .mask_baselines import evaluate_baselines
from .method import METHOD_FILE, STORED_FILE, Method, Prepared, freeze_all, read_method_file, register_method

MASK_INITS = ("magnitude", "constant")
#: the score every weight starts from under mask_init="constant"
CONSTANT_SCORE = 1.0


# --------------------------------------------------------------------------------------------- options

def parse_mask_layers(value: str | int | list[int] | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """'all' / '' / None → None (every layer); '4,5' (or ints) → sorted unique layer indices ≥ 0.

    Raises ConfigError for a non-integer or a negative index.
    """
    if value is None:
        return None
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        if value.strip().lower() in ("", "all"):
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    out = []
    for v in items:
        try:
            i = int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"--mask-layers {value!r} is not all or comma-separated layer numbers (e.g. 4,5)") from None
        if i < 0:
            raise ConfigError(f"--mask-layers {v!r} is not a layer number >= 0")
        out.append(i)
    if not out:
        raise ConfigError("--mask-layers is empty; expected all or layer numbers such as 4,5")
    return tuple(sorted(set(out)))


def module_matcher(value: str) -> Callable[[str], bool]:
    """A predicate over full module paths for `mask_modules`: 'all', a LoRA placement name, or
    comma-separated patterns (glob when it holds * ? [, else a substring). ConfigError when empty."""
    value = str(value).strip()
    if not value:
        raise ConfigError("--mask-modules is empty; expected all, a placement (attn-qkv, attn-full, ffn-only, "
                          "full) or module name patterns")
    if value.lower() == "all":
        return lambda path: True
    if value in PLACEMENTS:
        pattern = re.compile(PLACEMENTS[value])
        return lambda path: pattern.fullmatch(path) is not None
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    return lambda path: is_excluded(path, patterns)


def validate_options(keep_ratio: float, mask_layers, mask_modules: str, mask_init: str) -> None:
    """Raise ConfigError for a keep ratio outside (0, 1], bad layers, empty modules or an unknown init."""
    try:
        ratio = float(keep_ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"--keep-ratio {keep_ratio!r} is not a number in (0, 1]") from None
    if not 0.0 < ratio <= 1.0:  # NaN fails too
        raise ConfigError(f"--keep-ratio {keep_ratio} is outside (0, 1]; expected the share of weights kept, e.g. 0.9")
    parse_mask_layers(mask_layers)
    module_matcher(mask_modules)
    if mask_init not in MASK_INITS:
        raise ConfigError(f"--mask-init {mask_init!r} is not one of {', '.join(MASK_INITS)}")


@dataclass
class LearnedMaskOptions:
    """The learned mask's settings: the share kept per tensor, which layers and modules are masked, and
    where the scores start. Checked on creation (validate_options): ConfigError naming the flag."""

    keep_ratio: float = help_field("learned-mask: share of each masked weight tensor kept, in (0, 1]", 0.9)
    mask_layers: str = help_field("learned-mask: encoder layers masked: all | comma-separated numbers, e.g. 4,5", "all")
    mask_modules: str = help_field("learned-mask: linear modules masked: all | attn-qkv | attn-full | ffn-only | full | "
                                   "comma-separated module name patterns (glob or substring)", "all")
    mask_init: str = help_field("learned-mask: scores start at |W| (magnitude: the magnitude mask) or all equal "
                                "(constant)", "magnitude")

    def __post_init__(self) -> None:
        validate_options(self.keep_ratio, self.mask_layers, self.mask_modules, self.mask_init)


def masked_modules(model: torch.nn.Module, mask_layers=None, mask_modules: str = "all") -> list[str]:
    """Full paths of the nn.Linear modules inside encoder layers that the options select, in model order.

    ConfigError when a requested layer does not exist or nothing matches. Cost: one walk over the modules.
    """
    layers = parse_mask_layers(mask_layers)
    match = module_matcher(mask_modules)
    if layers is not None:
        total = num_layers(model)
        bad = [i for i in layers if i >= total]
        if bad:
            raise ConfigError(f"--mask-layers {bad[0]} exceeds the model's {total} encoder layers (0..{total - 1})")
    out = []
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        i = layer_index(path + ".")
        if i is None or (layers is not None and i not in layers):
            continue
        if match(path):
            out.append(path)
    if not out:
        raise ConfigError(f"--mask-layers {mask_layers} / --mask-modules {mask_modules!r} select no linear layer "
                          "of this model (expected BERT-style names such as encoder.layer.0.attention.self.query)")
    return out


# ------------------------------------------------------------------------------------------ the mask op

class _MaskedWeight(torch.autograd.Function):
    """W ⊙ m in the forward (exact: m is 0 or 1); backward: ∂L/∂scores = ∂L/∂W_eff ⊙ W (straight through
    the top-k), ∂L/∂W = ∂L/∂W_eff ⊙ m when W requires grad."""

    @staticmethod
    def forward(ctx, weight, scores, mask):
        m = mask.to(weight.dtype)
        ctx.save_for_backward(weight, m)
        return weight * m

    @staticmethod
    def backward(ctx, grad):
        weight, m = ctx.saved_tensors
        g_weight = grad * m if ctx.needs_input_grad[0] else None
        g_scores = (grad * weight).to(torch.float32) if ctx.needs_input_grad[1] else None
        return g_weight, g_scores, None


class ScoreMask(torch.nn.Module):
    """The parametrization W ↦ W ⊙ top_k(|scores|) of one weight tensor; `scores` is its only parameter.

    `k` is fixed at creation (⌈keep_ratio · numel⌉), so the keep ratio holds exactly whatever the scores
    do. The binary mask is cached until the scores change (their version counter), so evaluation does
    not redo the selection per batch. Memory: one fp32 score and one bool per weight.
    """

    def __init__(self, scores: torch.Tensor, k: int):
        super().__init__()
        self.scores = torch.nn.Parameter(scores.detach().to(torch.float32).clone())
        self.k = int(k)
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None

    def mask(self) -> torch.Tensor:
        """The current binary mask (bool, shaped like the weight)."""
        key = (self.scores._version, self.scores.data_ptr())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, top_k_mask(self.scores, self.k))
        return self._cache[1]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _MaskedWeight.apply(weight, self.scores, self.mask())

    def extra_repr(self) -> str:
        return f"k={self.k} of {self.scores.numel()}"


def _score_masks(model: torch.nn.Module) -> dict[str, ScoreMask]:
    """module path → its ScoreMask, for every module whose weight carries one, in model order."""
    out = {}
    for path, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            for p in mod.parametrizations.weight:
                if isinstance(p, ScoreMask):
                    out[path] = p
    return out


def attach_masks(model: torch.nn.Module, paths: list[str], keep_ratio: float | None = None,
                 init: str = "magnitude", masks: dict[str, torch.Tensor] | None = None) -> dict[str, ScoreMask]:
    """Parametrize the weight of each module in `paths` with a ScoreMask; returns path → ScoreMask.

    Scores come from `masks[path + ".weight"]` (a binary mask: k = its count of ones) when given, else
    from |W| (init "magnitude") or CONSTANT_SCORE ("constant") with k = ⌈keep_ratio · numel⌉. A module
    that already has a ScoreMask gets new scores and k. Does not change requires_grad elsewhere.
    """
    out = {}
    existing = _score_masks(model)
    for path in paths:
        mod = model.get_submodule(path)
        name = f"{path}.weight"
        if path in existing:
            weight = mod.parametrizations.weight.original
        else:
            weight = mod.weight
        if masks is not None:
            m = masks[name]
            if tuple(m.shape) != tuple(weight.shape):
                raise ModelError(f"the mask of {name} has shape {tuple(m.shape)}, the model's weight "
                                 f"{tuple(weight.shape)}")
            scores, k = m.to(torch.float32), int(m.sum())
        else:
            k = keep_count(keep_ratio, weight.numel())
            if init == "magnitude":
                scores = weight.detach().abs().float()
            elif init == "constant":
                scores = torch.full(weight.shape, CONSTANT_SCORE, dtype=torch.float32, device=weight.device)
            else:
                raise ConfigError(f"--mask-init {init!r} is not one of {', '.join(MASK_INITS)}")
        if path in existing:
            sm = existing[path]
            with torch.no_grad():
                sm.scores.copy_(scores)
            sm.k = k
            sm._cache = None
        else:
            sm = ScoreMask(scores.to(weight.device), k)
            parametrize.register_parametrization(mod, "weight", sm)
        out[path] = sm
    return out


def binary_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Base weight name (`<module>.weight`) → the current binary mask (bool, the weight's shape)."""
    return {f"{path}.weight": sm.mask().clone() for path, sm in _score_masks(model).items()}


def to_mft_mask(model: torch.nn.Module) -> Mask:
    """The learned mask as an mft `Mask` over the base weight names: the indices of the dropped (m = 0)
    weights with their values, so `Mask.apply` on the plain base model gives W ⊙ m and `restore` undoes
    it. Memory: 8 bytes per dropped weight for the index + 4 for the value."""
    names, shapes, idx, vals = [], [], [], []
    offset = 0
    for path, sm in _score_masks(model).items():
        w = model.get_submodule(path).parametrizations.weight.original.detach()
        dropped = (~sm.mask()).flatten().nonzero().flatten()
        names.append(f"{path}.weight")
        shapes.append(tuple(w.shape))
        idx.append(dropped + offset)
        vals.append(w.flatten()[dropped].float())
        offset += w.numel()
    indices = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
    values = torch.cat(vals) if vals else torch.zeros(0)
    return Mask(names, shapes, indices.to(torch.int64), values, {"kind": "learned-mask"})


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask → uint8 with 8 mask bits per byte (numpy.packbits, big-endian bit order), flat."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().flatten().numpy().astype(np.uint8)))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of pack_mask."""
    n = int(np.prod(shape)) if len(shape) else 1
    bits = np.unpackbits(packed.cpu().numpy(), count=n)
    return torch.from_numpy(bits.astype(bool)).view(shape)


def _unparametrize_copy(module: torch.nn.Module) -> None:
    """Turn a deep-copied parametrized module back into its plain class with `weight` = W ⊙ m.

    Not `parametrize.remove_parametrizations`: a deep copy shares the injected `Parametrized<cls>` class
    with the original, and that function deletes the `weight` property from the class, which would break
    the original model too.
    """
    with torch.no_grad():
        w = module.weight.detach().clone()
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]
    module.weight = torch.nn.Parameter(w, requires_grad=False)


# ----------------------------------------------------------------------------------------------- method

@register_method
class LearnedMask(Method):
    """A binary mask learned over the frozen model (scores trained straight-through, exact per-tensor keep
    ratio). Stored: the final mask, one bit per masked weight."""

    name = "learned-mask"
    summary = "binary mask learned over the frozen model (straight-through scores)"
    # The MFT paper's mask-tuning runs use AdamW at 2e-5 without weight decay; scores start at |W|, so
    # Adam's ~lr-sized steps move a weight across the threshold only when its |W| is near it.
    default_lr = 2e-5
    options = LearnedMaskOptions

    def describe(self, options: LearnedMaskOptions) -> str:
        """e.g. "learned-mask (keep 0.9)"."""
        return f"learned-mask (keep {options.keep_ratio})"

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        config = self.options_of(config)
        validate_options(config.keep_ratio, config.mask_layers, config.mask_modules, config.mask_init)
        paths = masked_modules(model, config.mask_layers, config.mask_modules)
        freeze_all(model)
        sms = attach_masks(model, paths, config.keep_ratio, config.mask_init)
        scores = [sm.scores for sm in sms.values()]
        numel = sum(s.numel() for s in scores)
        kept = sum(sm.k for sm in sms.values())
        # Weight decay would pull every score toward 0 and so toward the threshold: none, as in the paper.
        groups = [{"name": "mask scores", "params": scores, "weight_decay": 0.0}]
        return Prepared(model, groups, notes={
            "masked_modules": paths, "keep_ratio": float(config.keep_ratio), "mask_init": config.mask_init,
            "mask_layers": config.mask_layers, "mask_modules": config.mask_modules,
            "masked_weights": numel, "kept_weights": kept, "stored_bits": numel})

    def stored_params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """`<module>.weight` → its final binary mask, bit-packed (uint8, ⌈numel / 8⌉ bytes)."""
        return {name: pack_mask(m) for name, m in binary_masks(model).items()}

    def save(self, model: torch.nn.Module, folder: str | Path) -> Path:
        """trained_parameters.safetensors (the packed masks) + method.json (shapes, kept counts)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        masks = binary_masks(model)
        if not masks:
            raise ModelError("the model carries no learned mask to save (was it prepared by learned-mask?)")
        save_file({n: pack_mask(m).contiguous() for n, m in masks.items()}, str(folder / STORED_FILE))
        meta = {"method": self.name, "format": "packbits-uint8",
                "shapes": {n: list(m.shape) for n, m in masks.items()},
                "kept": {n: int(m.sum()) for n, m in masks.items()}}
        (folder / METHOD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    def load(self, model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
        """Attach the saved masks to `model` (the same base model; its weights frozen); returns it in eval
        mode. ModelError when the folder is not a learned mask or a mask does not fit the model."""
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = read_method_file(folder)
        if meta.get("method") != self.name:
            raise ModelError(f"{folder} holds a {meta.get('method')!r} result, not {self.name!r}")
        packed = load_file(str(folder / STORED_FILE))
        modules = dict(model.named_modules())
        masks, paths = {}, []
        for name, t in packed.items():
            path = name[: -len(".weight")]
            shape = tuple(meta["shapes"][name])
            mod = modules.get(path)
            if not isinstance(mod, torch.nn.Linear) or tuple(mod.weight.shape) != shape:
                have = "absent" if mod is None else f"of shape {tuple(getattr(mod, 'weight', torch.empty(0)).shape)}"
                raise ModelError(f"{folder}: the mask of {name} {shape} does not fit the model ({have})")
            masks[name] = unpack_mask(t, shape).to(mod.weight.device)
            paths.append(path)
        freeze_all(model)
        attach_masks(model, paths, masks=masks)
        return model.eval()

    def merged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A deep copy whose masked weights hold W ⊙ m as plain parameters (no parametrization): a normal
        Hugging Face model for checkpoints. Cost: one copy of the model."""
        merged = copy.deepcopy(model)
        for path in _score_masks(merged):
            _unparametrize_copy(merged.get_submodule(path))
        return merged

    def baselines(self, model: torch.nn.Module, config, evaluate: Callable[[torch.nn.Module], dict]) -> dict:
        """Metrics of the untrained controls at the same keep ratio (see mask_baselines), from the base
        model before `prepare`."""
        seed, config = config.data.seed, self.options_of(config)
        paths = masked_modules(model, config.mask_layers, config.mask_modules)
        return evaluate_baselines(model, paths, config.keep_ratio, evaluate, seed=seed)
