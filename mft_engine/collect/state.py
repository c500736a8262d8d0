"""GradientState: what one collection pass leaves behind, saved as one safetensors file.

Per parameter (fp32 unless noted): g (sum of batch gradients as run), Σ of squared batch gradients (a
second moment of batch gradients, not the Fisher), the numbers of batches whose gradient was > 0 and
< 0 (int32); per nn.Linear: Σ x_j² over real tokens (fp64) and the token count; per batch: the loss
and the number of samples. `meta` holds the configuration that produced it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MftError

_PREFIXES = ("grad", "sq", "pos", "neg")


class StateError(MftError, ValueError):
    """A gradient-state file is missing, unreadable, or does not match the model."""


@dataclass
class GradientState:
    """Sums collected over the batches of one pass. Memory: 4 × 4 bytes per parameter."""

    names: list[str]
    grad_sum: dict[str, torch.Tensor]
    sq_sum: dict[str, torch.Tensor]
    pos_count: dict[str, torch.Tensor]
    neg_count: dict[str, torch.Tensor]
    act_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    act_tokens: dict[str, int] = field(default_factory=dict)
    batch_losses: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def zeros_like(cls, named_params: list[tuple[str, torch.Tensor]], meta: dict[str, Any] | None = None) -> "GradientState":
        """Empty sums shaped like the given parameters, on their devices."""
        names = [n for n, _ in named_params]
        z = lambda dt: {n: torch.zeros(p.shape, dtype=dt, device=p.device) for n, p in named_params}  # noqa: E731
        return cls(names, z(torch.float32), z(torch.float32), z(torch.int32), z(torch.int32), meta=dict(meta or {}))

    def to(self, device: torch.device | str) -> "GradientState":
        """This state with every tensor on `device` (itself when they are there already; else copies)."""
        device = torch.device(device)
        tensors = [self.grad_sum, self.sq_sum, self.pos_count, self.neg_count, self.act_sq]
        if all(t.device == device for d in tensors for t in d.values()):
            return self
        moved = [{k: t.to(device) for k, t in d.items()} for d in tensors]
        return GradientState(self.names, *moved[:4], act_sq=moved[4], act_tokens=dict(self.act_tokens),
                             batch_losses=list(self.batch_losses), batch_sizes=list(self.batch_sizes), meta=self.meta)

    @property
    def n_batches(self) -> int:
        return len(self.batch_sizes)

    @property
    def n_samples(self) -> int:
        return int(sum(self.batch_sizes))

    def sign_consistency(self, name: str) -> torch.Tensor:
        """Share of batches whose gradient sign agrees with the final g's sign (0 where g == 0), fp32."""
        g = self.grad_sum[name]
        agree = torch.where(g > 0, self.pos_count[name], torch.where(g < 0, self.neg_count[name], 0))
        return agree.float() / max(self.n_batches, 1)

    def check_matches(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """Raise StateError unless this state has exactly these parameter names and shapes."""
        shapes = {n: tuple(p.shape) for n, p in named_params}
        mine = {n: tuple(self.grad_sum[n].shape) for n in self.names}
        if shapes != mine:
            missing = sorted(set(shapes) - set(mine))
            extra = sorted(set(mine) - set(shapes))
            diff = [n for n in shapes if n in mine and shapes[n] != mine[n]]
            raise StateError("the gradient state does not match the model "
                             f"(missing {missing[:3]}, extra {extra[:3]}, other shapes {diff[:3]})")

    def save(self, path: str | Path, extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Write everything to one safetensors file (tensors by prefix, the rest as JSON metadata)."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for prefix, d in zip(_PREFIXES, (self.grad_sum, self.sq_sum, self.pos_count, self.neg_count)):
            for n in self.names:
                tensors[f"{prefix}/{n}"] = d[n].cpu().contiguous()
        for m, t in self.act_sq.items():
            tensors[f"act_sq/{m}"] = t.cpu().contiguous()
        for k, t in (extra_tensors or {}).items():
            tensors[f"extra/{k}"] = t.cpu().contiguous()
        info = {"names": self.names, "act_tokens": self.act_tokens, "batch_losses": self.batch_losses,
                "batch_sizes": self.batch_sizes, "meta": self.meta}
        tmp = Path(str(path) + ".tmp")
        save_file(tensors, str(tmp), metadata={"mft_gradient_state": json.dumps(info)})
        tmp.replace(path)  # a checkpoint is either the old one or the new one, never half of each

    @classmethod
    def load(cls, path: str | Path, with_extra: bool = False):
        """Read a state written by save(); with_extra=True also returns the extra tensors."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise StateError(f"gradient state {p} does not exist")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                if "mft_gradient_state" not in meta:
                    raise StateError(f"{p} is not an mft gradient state (no mft_gradient_state metadata)")
                info = json.loads(meta["mft_gradient_state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except StateError:
            raise
        except Exception as e:
            raise StateError(f"gradient state {p} could not be read ({type(e).__name__})") from None
        names = info["names"]
        parts = [{n: tensors[f"{prefix}/{n}"] for n in names} for prefix in _PREFIXES]
        act = {k[len("act_sq/"):]: v for k, v in tensors.items() if k.startswith("act_sq/")}
        state = cls(names, *parts, act_sq=act, act_tokens={k: int(v) for k, v in info["act_tokens"].items()},
                    batch_losses=list(info["batch_losses"]), batch_sizes=list(info["batch_sizes"]),
                    meta=info.get("meta", {}))
        if with_extra:
            return state, {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
        return state

    def statistics(self) -> dict[str, dict[str, float]]:
        """Per-tensor statistics of g for gradient_statistics.json (one pass over the state)."""
        out = {}
        nb = max(self.n_batches, 1)
        for n in self.names:
            g = self.grad_sum[n].double()
            sq = self.sq_sum[n].double()
            out[n] = {
                "numel": g.numel(),
                "mean": g.mean().item() if g.numel() else 0.0,
                "std": g.std().item() if g.numel() > 1 else 0.0,
                "abs_mean": g.abs().mean().item() if g.numel() else 0.0,
                "abs_max": g.abs().max().item() if g.numel() else 0.0,
                "l2_norm": g.norm().item(),
                "zero_fraction": (g == 0).double().mean().item() if g.numel() else 0.0,
                "batch_grad_rms": (sq.mean() / nb).sqrt().item() if g.numel() else 0.0,
                "sign_consistency_mean": self.sign_consistency(n).double().mean().item() if g.numel() else 0.0,
            }
        return out
