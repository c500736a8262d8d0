"""One collection pass: forward + backward per batch, no weight update, fused accumulation.

A *batch* here is the unit that defines g: under `batch-sum` one fixed batch of the study (its loss is
the mean over its samples), under `mean` a group of samples whose summed loss is divided by N. The
engine may split a batch into length-homogeneous *parts* to cut padding; the parts' losses are summed
with the batch's own denominator, so the batch's gradient is the same up to float rounding (and, in
train mode, up to which dropout masks are drawn).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .. import ops
from ..data.batching import Batch
from ..device import graph_boundary, model_device, supports_sparse_grads, to_device
from .distributed import batch_seed
from .state import GradientState


class ActivationStats:
    """Forward pre-hooks on every nn.Linear: Σ x_j² over real (non-padding) tokens and their count."""

    def __init__(self, model: torch.nn.Module, act_sq: dict[str, torch.Tensor], act_tokens: dict[str, int]):
        self.act_sq = act_sq
        self.act_tokens = act_tokens
        self.mask: torch.Tensor | None = None
        self.mask_tokens: torch.Tensor | int = 0  # real tokens under `mask`, counted once per part
        # Token counts stay tensors on the device until `flush`: reading one back per layer would be a
        # host sync inside the batch loop.
        self._tokens: dict[str, torch.Tensor | int] = {}
        # q, k and v read the same input tensor: compute its statistics once, add them three times.
        self._last: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.handles = []
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                act_sq.setdefault(name, torch.zeros(mod.in_features, dtype=torch.float64, device=mod.weight.device))
                act_tokens.setdefault(name, 0)
                self.handles.append(mod.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable:
        def hook(_mod, inputs):
            if self._last is not None and self._last[0] is inputs[0]:
                self.act_sq[name] += self._last[1]
                self._tokens[name] = self._tokens.get(name, 0) + self._last[2]
                return
            x = inputs[0].detach()
            x2 = x.float().square()
            if x.dim() == 3 and self.mask is not None and self.mask.shape == x.shape[:2]:
                m = self.mask.to(x2.dtype).reshape(1, -1)
                s = (m @ x2.reshape(-1, x2.shape[-1])).reshape(-1)
                n = self.mask_tokens
            else:  # pooled inputs (pooler, classifier): one real row per sample
                x2 = x2.reshape(-1, x2.shape[-1])
                s = x2.sum(0)
                n = x2.shape[0]
            s = s.double()
            self._last = (inputs[0], s, n)
            self.act_sq[name] += s
            self._tokens[name] = self._tokens.get(name, 0) + n
        return hook

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """The attention mask of the part about to run forward (its token count stays on the device)."""
        self.mask = mask
        self.mask_tokens = mask.sum() if mask is not None else 0

    def flush(self) -> None:
        """Add the token counts gathered since the last flush into `act_tokens` (ints: one host sync)."""
        for name, n in self._tokens.items():
            self.act_tokens[name] += int(n)
        self._tokens.clear()

    def remove(self) -> None:
        """Flush the counts and remove the hooks."""
        self.flush()
        self._last = None
        for h in self.handles:
            h.remove()


# Vocabulary-sized embeddings get sparse gradients during collection: a batch touches a few hundred of
# their 30k rows, and a dense gradient would cost a zero-fill, an add and an accumulation of the whole
# table (47 MB for MiniLM) per backward pass.
SPARSE_EMBEDDING_MIN_ROWS = 1024


@contextlib.contextmanager
def sparse_embedding_grads(model: torch.nn.Module, enabled: bool = True):
    """Within the block, nn.Embedding tables with ≥ SPARSE_EMBEDDING_MIN_ROWS rows produce sparse grads."""
    changed = []
    if enabled:
        for mod in _sparse_tables(model):
            if not mod.sparse:
                mod.sparse = True
                changed.append(mod)
    try:
        yield
    finally:
        for mod in changed:
            mod.sparse = False


def _sparse_tables(model: torch.nn.Module) -> list[torch.nn.Embedding]:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.Embedding) and m.num_embeddings >= SPARSE_EMBEDDING_MIN_ROWS]


def sparse_grad_names(model: torch.nn.Module, enabled: bool = True) -> set[str]:
    """Names of the parameters `sparse_embedding_grads(model, enabled)` gives sparse gradients."""
    if not enabled:
        return set()
    big = {id(m.weight) for m in _sparse_tables(model)}
    return {n for n, p in model.named_parameters() if id(p) in big}


class FlatGrads:
    """The dense gradients of `named` as views of one buffer per parameter dtype and device, and the
    state's four sums of the same parameters as views of matching buffers, so that one `mft::accumulate_`
    call per buffer adds a batch: one launch on CUDA instead of one per tensor (~200 for BERT), and no
    gradient tensors allocated per batch. Autograd adds each part's gradient into the installed view in
    place (AccumulateGrad with grad mode off), so the sums are the per-tensor path's, bit for bit, but for
    the sign of a zero, which no statistic sees.

    `install()` zeroes the buffers and sets each p.grad to its view (before a batch's first backward);
    `accumulate()` adds them into the state's sums, after copying into its view any gradient that
    something put in place of the view (the later parts were added there). Construction rebinds the
    state's tensors of these parameters to views of flat buffers (one copy, 16 bytes per parameter, unless
    they are views already). Memory: the gradient buffer, as many bytes as the parameters.
    """

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], state: GradientState):
        groups: dict[tuple[torch.dtype, torch.device], list[tuple[str, torch.nn.Parameter]]] = {}
        for n, p in named:
            groups.setdefault((p.dtype, p.device), []).append((n, p))
        self.groups = []
        for (dtype, device), members in groups.items():
            total = sum(p.numel() for _, p in members)
            grad = torch.zeros(total, dtype=dtype, device=device)
            views, sums, offset = {}, [], 0
            bounds = []
            for n, p in members:
                views[n] = grad[offset:offset + p.numel()].view(p.shape)
                bounds.append((n, offset, p.numel(), p.shape))
                offset += p.numel()
            for stat in (state.grad_sum, state.sq_sum, state.pos_count, state.neg_count):
                sums.append(_adopt(stat, bounds, total))
            self.groups.append((grad, views, members, sums))

    def install(self) -> None:
        """Zero the gradient buffers and point every p.grad at its view."""
        for grad, views, members, _ in self.groups:
            grad.zero_()
            for n, p in members:
                p.grad = views[n]

    def accumulate(self) -> None:
        """Add the gradients since `install` into the state's sums (one accumulate_ per buffer)."""
        for grad, views, members, sums in self.groups:
            for n, p in members:
                if p.grad is not None and p.grad is not views[n]:  # autograd replaced the view: the
                    views[n].copy_(p.grad)                          # new tensor holds the whole sum
            ops.accumulate_(*sums, grad)


def _adopt(stat: dict[str, torch.Tensor], bounds: list[tuple[str, int, int, torch.Size]], total: int) -> torch.Tensor:
    # One flat tensor whose slices are the state's tensors of `bounds`: their own storage when they already
    # lie there in order, else a new buffer they are copied into and rebound to.
    first = stat[bounds[0][0]]
    if _in_order(stat, bounds, first):
        return torch.as_strided(first.view(-1), (total,), (1,))
    flat = torch.empty(total, dtype=first.dtype, device=first.device)
    for n, o, k, shape in bounds:
        flat[o:o + k].copy_(stat[n].reshape(-1))
        stat[n] = flat[o:o + k].view(shape)
    return flat


def _in_order(stat: dict[str, torch.Tensor], bounds: list[tuple[str, int, int, torch.Size]],
              first: torch.Tensor) -> bool:
    try:
        ptr = first.untyped_storage().data_ptr()
        return all(stat[n].is_contiguous() and stat[n].untyped_storage().data_ptr() == ptr
                   and stat[n].storage_offset() == first.storage_offset() + o for n, o, _, _ in bounds)
    except RuntimeError:  # a device whose tensors have no storage pointer (XLA): copy
        return False


def accumulate_grad(state: GradientState, name: str, grad: torch.Tensor) -> None:
    """Add one batch gradient into the state: dense via mft::accumulate_, sparse rows via the same op on
    the touched rows only (untouched rows would add exact zeros, which change nothing)."""
    if not grad.is_sparse:
        ops.accumulate_(state.grad_sum[name], state.sq_sum[name], state.pos_count[name], state.neg_count[name], grad)
        return
    grad = grad.coalesce()
    rows = grad.indices()[0]
    vals = grad.values().float()
    bufs = [state.grad_sum[name], state.sq_sum[name], state.pos_count[name], state.neg_count[name]]
    sub = [b.index_select(0, rows) for b in bufs]
    ops.accumulate_(*sub, vals)
    for b, s in zip(bufs, sub):
        b.index_copy_(0, rows, s)


def batch_loss_sum(model: torch.nn.Module, part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over the part's samples of the per-sample loss (cross-entropy; MSE for one-output regression)."""
    inputs = {k: v for k, v in part.items() if k != "labels"}
    logits = model(**inputs).logits
    labels = part["labels"]
    if logits.shape[-1] == 1 and labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels.float(), reduction="sum")
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def collect_gradients(
    model: torch.nn.Module,
    batches: Iterable[Batch | dict[str, torch.Tensor]],
    *,
    state: GradientState | None = None,
    train_mode: bool = True,
    precision: str = "fp32",
    activation_stats: bool = True,
    skip: int = 0,
    on_batch: Callable[[int, float], None] | None = None,
    checkpoint: Callable[[GradientState, int], None] | None = None,
    checkpoint_every: int = 0,
    meta: dict | None = None,
    sparse_embeddings: bool = True,
    dropout_seed: int | None = None,
    first_index: int = 0,
) -> GradientState:
    """Run forward/backward over `batches` without updating weights; return the summed statistics.

    `batches` yields `Batch` objects or plain HF batches (dicts with `labels`, loss = batch mean), e.g. a
    torch DataLoader. For each batch, g_b = ∇(batch loss) and `mft::accumulate_` adds g_b, g_b² and the
    signs into the state (fp32 sums; one fused pass over 5 × 4 bytes per parameter). Only parameters with
    requires_grad are collected. Vocabulary-sized embeddings use sparse gradients (`sparse_embeddings`):
    the same sums, with the tokens of a row added in another order. `skip` batches are consumed without compute (resume; the caller restores
    the RNG). With `dropout_seed`, train mode seeds the RNG before each batch from (dropout_seed, the
    batch's index + `first_index`; see distributed.batch_seed), so a batch draws the same dropout masks
    whichever process, shard or resume computes it. Cost: one forward + backward per batch, plus
    O(params) per batch for the accumulation. Weights are unchanged; `model.training` is restored.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = model_device(model)
    if state is None:
        state = GradientState.zeros_like([(n, p.detach()) for n, p in named], meta)
    else:
        state = state.to(device)
    hooks = ActivationStats(model, state.act_sq, state.act_tokens) if activation_stats else None
    was_training = model.training
    model.train(train_mode)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    for p in model.parameters():
        p.grad = None
    sparse_on = sparse_embeddings and supports_sparse_grads(device)
    sparse = sparse_grad_names(model, sparse_on)
    dense = [(n, p) for n, p in named if n not in sparse]
    sparse_named = [(n, p) for n, p in named if n in sparse]
    flat = FlatGrads(dense, state) if dense else None
    sparse_cm = sparse_embedding_grads(model, sparse_on)
    sparse_cm.__enter__()
    try:
        for i, b in enumerate(batches):
            if i < skip:
                continue
            if not isinstance(b, Batch):
                b = Batch([b], float(b["labels"].shape[0]))
            if dropout_seed is not None and train_mode:
                torch.manual_seed(batch_seed(dropout_seed, first_index + i))
            loss_total = torch.zeros((), dtype=torch.float64, device=device)
            if flat is not None:
                flat.install()
            for part in b.parts:
                part = to_device(part, device)
                if hooks is not None:
                    hooks.set_mask(part.get("attention_mask"))
                with autocast:
                    loss = batch_loss_sum(model, part)
                (loss / b.denominator).backward()
                loss_total += loss.detach()
            with torch.no_grad():
                if flat is not None:
                    flat.accumulate()
                for n, p in sparse_named:
                    if p.grad is not None:  # None: not reached by this batch, its gradient is 0
                        accumulate_grad(state, n, p.grad)
                        p.grad = None
            graph_boundary(device)
            # The batch's loss is the one figure read back per batch (it is logged and shown): one host sync.
            batch_loss = float(loss_total) / b.size
            state.batch_losses.append(batch_loss)
            state.batch_sizes.append(b.size)
            if on_batch is not None:
                on_batch(i, batch_loss)
            if checkpoint is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
                if hooks is not None:
                    hooks.flush()
                checkpoint(state, i + 1)
    finally:
        sparse_cm.__exit__(None, None, None)
        if hooks is not None:
            hooks.remove()
        model.train(was_training)
        for p in model.parameters():
            p.grad = None
    return state
