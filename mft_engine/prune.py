"""The detrimental selection as a `torch.nn.utils.prune` method.

`DetrimentalUnstructured` plugs into torch's pruning API: `DetrimentalUnstructured.apply(module, "weight",
grad=g)` on one tensor, or `torch.nn.utils.prune.global_unstructured(pairs, pruning_method=
DetrimentalUnstructured, thetas=[...], grads=[...])` across many (`global_detrimental` does that for you).
The selection itself runs on mft::select_topk over the tensor list. torch's pruning machinery still costs
what it costs: global_unstructured concatenates the importance scores and a default mask into two
vectors of all pruned parameters, and every pruned module keeps `weight_orig` and `weight_mask` beside
the weight (3× its memory) until `prune.remove`. `Mask.apply` avoids all of that.
"""
from __future__ import annotations

import torch
from torch.nn.utils import prune

from . import ops
from .masking.selection import k_for
from .selection_spec import SelectionSpec


class DetrimentalUnstructured(prune.BasePruningMethod):
    """Prune the top `amount` fraction (of the detrimental entries) ranked by the detrimental score.

    Single tensor: `grad` is the gradient of the pruned tensor. Global: `thetas` and `grads` are the lists
    of parameters and gradients in the order given to global_unstructured (the concatenated importance
    vector torch passes in is then only used for its size). Ties: lower flat index wins.
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float = 0.1, grad: torch.Tensor | None = None, thetas=None, grads=None,
                 lr: float = 2e-5, rank_by: str = "shrink", literal: bool = False):
        if (grad is None) == (grads is None):
            raise ValueError("pass either grad= (one tensor) or thetas= and grads= (global pruning)")
        # lr and rank_by are validated by SelectionSpec, the one place (torch decides what amount may be).
        SelectionSpec(lr=lr, rank_by=rank_by, literal=literal, flags={"lr": "lr=", "rank_by": "rank_by="})
        self.amount = amount
        self.grad = grad
        self.thetas = thetas
        self.grads = grads
        self.lr = lr
        self.rank_by = rank_by
        self.literal = literal

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self.grads is not None:
            thetas = [p.detach() for p in self.thetas]
            grads = list(self.grads)
        else:
            thetas, grads = [t.detach()], [self.grad]
        n_det = int(ops.detrimental_count(thetas, grads, self.lr, literal=self.literal).sum())
        k = k_for(self.amount, n_det)
        idx, _, _ = ops.select_topk(thetas, grads, self.lr, k, rank_by=self.rank_by, literal=self.literal)
        mask = default_mask.clone(memory_format=torch.contiguous_format)
        mask.view(-1)[idx] = 0
        return mask

    @classmethod
    def apply(cls, module, name, amount: float = 0.1, grad=None, lr: float = 2e-5, rank_by: str = "shrink",
              literal: bool = False, importance_scores=None):
        """Prune `module.<name>` in place with a forward pre-hook, as torch's pruning methods do."""
        return super().apply(module, name, amount=amount, grad=grad, lr=lr, rank_by=rank_by, literal=literal,
                             importance_scores=importance_scores)


def global_detrimental(model: torch.nn.Module, grads: dict[str, torch.Tensor], names: list[str],
                       amount: float = 0.1, lr: float = 2e-5, rank_by: str = "shrink") -> None:
    """torch global pruning of the named parameters with DetrimentalUnstructured (adds weight_orig/_mask)."""
    modules = dict(model.named_modules())
    pairs = []
    for n in names:
        mod, _, attr = n.rpartition(".")
        pairs.append((modules[mod], attr))
    thetas = [getattr(m, a).detach().clone() for m, a in pairs]
    prune.global_unstructured(pairs, pruning_method=DetrimentalUnstructured, thetas=thetas,
                              grads=[grads[n] for n in names], amount=amount, lr=lr, rank_by=rank_by)
