"""BitFit (Ben Zaken et al., 2021): only bias terms train.

Biases fall into groups chosen by full parameter name: attention (query/key/value and the attention
output projection), feed-forward (intermediate and layer output projection), layernorm (every LayerNorm
bias, the embeddings' included), pooler and classifier. Each group may have its own learning rate
(`bitfit_lr`, e.g. "attention=1e-3,classifier=2e-3"), and the biases' gradient may be clipped to a norm
of its own (`bitfit_clip`) before the run's global clip. By default every bias trains and the classifier
weight stays frozen, as in the BERT-tiny report (3,074 trainable parameters on bert-tiny: 2 layers,
hidden 128, intermediate 512, 2 labels); `bitfit_head` also trains the classifier weight.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..fields import help_field
from .method import Method, Prepared, register_method

BIAS_GROUPS = ("attention", "feed-forward", "layernorm", "pooler", "classifier")
# A bias no rule names (another architecture's extra module) trains only under the default "all".
OTHER = "other"
_HEAD = re.compile(r"(?:^|\.)(classifier|score)\.")


def bias_group(name: str) -> str:
    """The BitFit group of a bias parameter, from its full name (BERT naming; `other` if none fits).

    `bert.encoder.layer.0.attention.output.dense.bias` is attention while
    `bert.encoder.layer.0.output.dense.bias` is feed-forward: both end in `output.dense`, so the rule
    looks at the whole path.
    """
    if _HEAD.search(name):
        return "classifier"
    if re.search(r"(?:^|\.)pooler\.", name):
        return "pooler"
    if re.search(r"layer_?norm|(?:^|\.)ln_?\w*\.", name, re.IGNORECASE):
        return "layernorm"
    if re.search(r"(?:^|\.)(attention|attn|self_attn)\.", name):
        return "attention"
    if re.search(r"(?:^|\.)(intermediate|output|mlp|ffn|feed_forward)\.", name):
        return "feed-forward"
    return OTHER


def parse_groups(value: str) -> tuple[str, ...]:
    """'all' or a comma-separated subset of BIAS_GROUPS → the groups that train (all: BIAS_GROUPS + other)."""
    items = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--bitfit-groups is empty; expected all or some of {', '.join(BIAS_GROUPS)}")
    if items == ["all"]:
        return (*BIAS_GROUPS, OTHER)
    bad = [g for g in items if g not in BIAS_GROUPS]
    if bad:
        raise ConfigError(f"--bitfit-groups {bad[0]!r} is not a bias group; expected all or some of "
                          f"{', '.join(BIAS_GROUPS)}")
    return tuple(dict.fromkeys(items))


def parse_group_lrs(value: str | dict | None) -> dict[str, float]:
    """'attention=1e-3,classifier=2e-3' (or a dict) → {group: lr}; groups from BIAS_GROUPS, lr > 0."""
    if not value:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in str(value).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ConfigError(f"--bitfit-lr item {item.strip()!r} is not GROUP=LR (e.g. attention=1e-3)")
            g, v = item.split("=", 1)
            pairs.append((g.strip().lower(), v.strip()))
    out: dict[str, float] = {}
    for g, v in pairs:
        if g not in BIAS_GROUPS:
            raise ConfigError(f"--bitfit-lr group {g!r} is not a bias group; expected one of {', '.join(BIAS_GROUPS)}")
        try:
            lr = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"--bitfit-lr {g}={v!r} is not a number") from None
        if not lr > 0 or lr == float("inf"):
            raise ConfigError(f"--bitfit-lr {g}={lr} must be a finite number > 0")
        out[g] = lr
    return out


@dataclass
class BitFitOptions:
    """BitFit's settings: which bias groups train, their learning rates, the biases' own gradient clip,
    and whether the classifier weight trains too. Checked on creation: ConfigError naming the flag."""

    bitfit_groups: str = help_field("bias groups that train: all | comma-separated attention, feed-forward, layernorm, "
                                    "pooler, classifier", "all")
    bitfit_lr: str = help_field("per-group learning rates, e.g. attention=1e-3,classifier=2e-3 (others: --lr)", "")
    bitfit_clip: float = help_field("clip the biases' gradient norm to this before the global clip (0: off)", 0.0)
    bitfit_head: bool = help_field("BitFit also trains the classifier weight", False)

    def __post_init__(self) -> None:
        if math.isnan(self.bitfit_clip) or self.bitfit_clip < 0 or math.isinf(self.bitfit_clip):
            raise ConfigError(f"--bitfit-clip {self.bitfit_clip} must be a finite number >= 0")
        parse_groups(self.bitfit_groups)
        parse_group_lrs(self.bitfit_lr)


@register_method
class BitFit(Method):
    """Bias-only fine-tuning with selectable groups, per-group learning rates and bias gradient clipping.
    Stored: the trained biases (and the classifier weight under `bitfit_head`)."""

    name = "bitfit"
    summary = "bias terms only (groups selectable), classifier weight optional"
    default_lr = 1e-3
    options = BitFitOptions

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        config = self.options_of(config)
        groups = parse_groups(config.bitfit_groups)
        lrs = parse_group_lrs(config.bitfit_lr)
        by_group: dict[str, list[torch.Tensor]] = {}
        head_weights: list[torch.Tensor] = []
        counts: dict[str, int] = {}
        for name, p in model.named_parameters():
            train = False
            if name.endswith(".bias") or name == "bias":
                g = bias_group(name)
                if g in groups:
                    by_group.setdefault(g, []).append(p)
                    counts[g] = counts.get(g, 0) + p.numel()
                    train = True
            elif config.bitfit_head and _HEAD.search(name):
                head_weights.append(p)
                counts["classifier-weight"] = counts.get("classifier-weight", 0) + p.numel()
                train = True
            p.requires_grad_(train)
        param_groups = []
        for g, params in by_group.items():
            entry = {"name": g, "params": params}
            if g in lrs:
                entry["lr"] = lrs[g]
            param_groups.append(entry)
        if head_weights:
            entry = {"name": "classifier-weight", "params": head_weights}
            if "classifier" in lrs:
                entry["lr"] = lrs["classifier"]
            param_groups.append(entry)
        if not param_groups:
            raise ConfigError(f"--bitfit-groups {config.bitfit_groups!r} selects no parameter of this model")
        return Prepared(model, param_groups, notes={"trainable_per_group": counts,
                                                    "group_lr": lrs, "bias_clip": config.bitfit_clip})

    def clip_gradients(self, model: torch.nn.Module, config) -> None:
        """Clip the joint L2 norm of the trainable biases' gradients to `bitfit_clip` (0: off)."""
        config = self.options_of(config)
        if config.bitfit_clip and config.bitfit_clip > 0:
            biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
            torch.nn.utils.clip_grad_norm_(biases, config.bitfit_clip)
