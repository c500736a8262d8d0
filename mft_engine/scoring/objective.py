"""The loss as a function of chosen parameters: what HVPs, solvers, scorers and ground truth differentiate.

An `Objective` is the mean per-example cross-entropy of a classifier over fixed HF batches, in eval mode,
as a pure function of a dict of parameter tensors (the others stay at the model's values). Attention runs
through SDPA's MATH backend: the CPU flash kernel has neither double backward nor forward-mode AD, which
exact Hessian-vector products need.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..collect.distributed import World, shard, sum_each_in_rank_order
from ..device import model_device, to_device
from ..errors import ConfigError

Params = dict[str, torch.Tensor]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run scaled_dot_product_attention with the MATH backend (differentiable twice, forward-mode AD)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its labels: the keyword arguments of the model's forward."""
    return {k: v for k, v in batch.items() if k != "labels"}


@dataclass
class Objective:
    """L(θ_B) = (1/n) Σ_examples CE(f(x; θ_B, θ_rest), y) over `batches`, eval mode, θ_B = `names`.

    `batches` are HF batch dicts (input_ids, attention_mask[, token_type_ids], labels int64 [B]); `n`
    is their total example count. `names` are the parameters the functions below take as inputs (default:
    every parameter of the model), in the model's `named_parameters()` order. The model is put in eval
    mode by the caller (see `eval_objective`); its dtype is the computation dtype (float64 for ground
    truth, float32 for HVPs unless told otherwise).

    `world` (a collect.distributed.World of an initialised process group) shards the curvature work
    across processes: every rank holds all `batches`; the products (hvp, gnvp, batched_*), the Gauss-Newton
    diagonal and the Woodbury factors run over this rank's contiguous share of the examples
    (`local_batches`; curvature/lowrank.py shares the examples the same way) and are summed over the ranks
    in rank order (`all_sum`), so every rank gets the same result. `loss` and
    `gradient` always run over every batch (ground truth and autograd call them).
    """

    model: torch.nn.Module
    batches: list[dict[str, torch.Tensor]]
    names: list[str] = field(default_factory=list)
    world: World | None = None

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [n for n, _ in self.model.named_parameters()]
        own = dict(self.model.named_parameters())
        missing = [n for n in self.names if n not in own]
        if missing:
            raise KeyError(f"parameters {missing[:3]} are not in the model")
        self.n = int(sum(int(b["labels"].shape[0]) for b in self.batches))
        device = model_device(self.model)
        if any(isinstance(v, torch.Tensor) and v.device != device for b in self.batches for v in b.values()):
            self.batches = [to_device(b, device) for b in self.batches]  # once, not per product

    @property
    def sharded(self) -> bool:
        """Whether the curvature work is split across several processes."""
        return self.world is not None and self.world.distributed

    def local_batches(self) -> list[dict[str, torch.Tensor]]:
        """This rank's contiguous share of the examples, as the batches' rows it covers (row slices of the
        batches, views; all batches alone): shares differ by at most one example, whatever the batching
        (a token budget often puts every example in one batch). ConfigError when there are fewer
        examples than processes."""
        if not self.sharded:
            return self.batches
        if self.n < self.world.size:
            raise ConfigError(f"{self.n} examples cannot be shared by {self.world.size} processes: use at most "
                              f"{self.n} processes or more samples")
        mine = shard(self.n, self.world)
        out, offset = [], 0
        for b in self.batches:
            size = int(b["labels"].shape[0])
            lo, hi = max(mine.start, offset) - offset, min(mine.stop, offset + size) - offset
            if lo < hi:
                out.append(b if (lo, hi) == (0, size) else
                           {k: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in b.items()})
            offset += size
        return out

    def restricted(self, names: list[str]) -> Objective:
        """The same objective (batches, world) over the parameters `names` only."""
        return Objective(self.model, self.batches, list(names), self.world)

    def all_sum(self, params: Params) -> Params:
        """Σ over the ranks of each rank's partial `params` (one all_gather of them flattened, added in
        rank order in float64, cast back): identical on every rank. Alone: `params` unchanged."""
        if not self.sharded or not params:
            return params
        return dict(zip(params, sum_each_in_rank_order(list(params.values()), self.world)))

    def params(self) -> Params:
        """The current values of the chosen parameters, detached (views of the model's storage)."""
        own = dict(self.model.named_parameters())
        return {n: own[n].detach() for n in self.names}

    def logits(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, C] of one batch with the chosen parameters replaced by `params`."""
        with math_attention():
            return functional_call(self.model, params, args=(), kwargs=model_inputs(batch), strict=False).logits

    def batch_loss_sum(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over the batch's examples of the cross-entropy (a scalar, the logits' dtype)."""
        return F.cross_entropy(self.logits(params, batch), batch["labels"], reduction="sum")

    def loss(self, params: Params) -> torch.Tensor:
        """L(params): mean per-example cross-entropy over all batches. Cost: one forward over n examples."""
        total = None
        for b in self.batches:
            s = self.batch_loss_sum(params, b)
            total = s if total is None else total + s
        return total / self.n

    def gradient(self, params: Params | None = None) -> Params:
        """∇L at `params` (default: the model's), one forward + backward per batch; fp as the model."""
        params = self.params() if params is None else params
        out = {n: torch.zeros_like(p) for n, p in params.items()}
        for b in self.batches:
            leaf = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            s = self.batch_loss_sum(leaf, b) / self.n
            grads = torch.autograd.grad(s, list(leaf.values()), allow_unused=True)
            for n, g in zip(leaf, grads):
                if g is not None:
                    out[n] += g
        return out


def eval_objective(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], names: list[str] | None = None,
                   dtype: torch.dtype | None = None) -> Objective:
    """An Objective over `model` in eval mode (dropout off), optionally cast to `dtype` in place."""
    if dtype is not None:
        model.to(dtype)
    model.eval()
    return Objective(model, batches, list(names or []))
