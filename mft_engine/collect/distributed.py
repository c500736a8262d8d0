"""Data-parallel collection on torch.distributed: which batches a rank takes, and one reduction of the
ranks' partial sums at the end (no DDP wrapper: nothing trains, so nothing is synchronised per step).

Under `torchrun --nproc-per-node N` (or `accelerate launch`) each rank collects a contiguous block of the
fixed batches, in order, the blocks cut so their token slots match (`shard_by_cost`); `reduce_state` then
sums every rank's partial sums by one all_reduce in a precision where the order of addition cannot matter
(the small activation sums gathered and added in rank order), so the result depends on the world size only
through where the blocks split, never on timing. Counts (signs, tokens) are exact; the fp32 sums differ
from one process's running fp32 sum by summation order only (see `reduce_state`). Dropout in train mode is seeded per batch from the run's seed
and the batch's index (`batch_seed`), so a batch's gradient does not depend on which rank computed it.
"""
from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..device import DIST_BACKEND_DEFAULT
from ..errors import ConfigError, ResumeError
from .state import GradientState

#: the seeding scheme's name, recorded in a state's provenance (states seeded otherwise are refused)
DROPOUT_SEEDING = "per-batch:v1"


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size and local rank (all 0 / 1 / 0 alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the results folder (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The current World: from the initialised process group, else from torchrun's environment
    variables (RANK, WORLD_SIZE, LOCAL_RANK), else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return World(rank, size, int(os.environ.get("LOCAL_RANK", rank) or 0))


def active_world() -> World:
    """The World of an initialised process group, else a single process (a launcher's variables alone do
    not make code distributed: only a pipeline that set the group up shards its work)."""
    return world() if dist.is_available() and dist.is_initialized() else World()


def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> World:
    """Initialise the default process group when launched by torchrun / accelerate with WORLD_SIZE > 1
    (rendezvous from MASTER_ADDR / MASTER_PORT or TORCHELASTIC's store); a single process is left alone.
    `backend` defaults to "cpu:gloo,cuda:nccl"; `timeout_s` bounds every collective (default: torch's).
    ConfigError (one line) when the rendezvous variables are missing. Cost: one rendezvous."""
    w = world()
    if not w.distributed or dist.is_initialized():
        return w
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={w.size} but {', '.join(missing)} is not set: launch with torchrun "
                          "(--standalone, or --rdzv-endpoint HOST:PORT on several machines)")
    kwargs: dict[str, Any] = {"backend": backend or DIST_BACKEND_DEFAULT}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(**kwargs)
    return world()


def shard(n_items: int, w: World) -> range:
    """The contiguous block of `n_items` (batches, in order) that rank `w.rank` takes: sizes differ by at
    most one, earlier ranks take the larger blocks. ConfigError when there are fewer items than ranks."""
    if n_items < w.size:
        raise ConfigError(f"{n_items} batches cannot be shared by {w.size} processes: use at most {n_items} "
                          "processes or more samples")
    base, extra = divmod(n_items, w.size)
    start = w.rank * base + min(w.rank, extra)
    return range(start, start + base + (1 if w.rank < extra else 0))


def batch_cost(batch: Any) -> int:
    """The relative cost of one batch's forward and backward: its token slots (rows × padded length,
    summed over a data.Batch's length parts), or 1 for a batch without a 2-D `input_ids`."""
    parts = getattr(batch, "parts", None)
    if parts is not None:
        return max(1, sum(batch_cost(p) for p in parts))
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return int(ids.numel()) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else 1


def shard_by_cost(costs: list[float] | np.ndarray, w: World, at_least_one: bool = True) -> range:
    """Rank `w.rank`'s contiguous block of items (batches, sampled parameters; in order) whose `costs` add
    up to about an equal share of the total: cut at the item boundary nearest to r/size of it, so a rank
    of long sentences does not hold up the others. With `at_least_one`, every rank gets an item and fewer
    items than ranks is a ConfigError; without, a block may be empty. Alone, every item."""
    n = len(costs)
    if not w.distributed:
        return range(n)
    if at_least_one and n < w.size:
        raise ConfigError(f"{n} batches cannot be shared by {w.size} processes: use at most {n} processes or "
                          "more samples")
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(costs, dtype=np.float64))])
    cuts = [0]
    for r in range(1, w.size):
        # the item boundary nearest to r/size of the total (the crossing item goes where it errs less)
        target = cum[-1] * r / w.size
        cut = int(np.searchsorted(cum, target, side="left"))
        if 0 < cut and target - cum[cut - 1] <= cum[min(cut, n)] - target:
            cut -= 1
        if at_least_one:
            cut = min(max(cut, cuts[-1] + 1), n - (w.size - r))
        cuts.append(min(max(cut, cuts[-1]), n))
    cuts.append(n)
    return range(cuts[w.rank], cuts[w.rank + 1])


def deal_by_cost(costs: list[float] | np.ndarray, size: int, loads: list[float] | None = None) -> list[list[int]]:
    """Items (by index) per rank, not contiguous: the costliest first, each to the rank with the least load
    so far (`loads`: what each already holds; ties to the lower rank), so every rank computes the same deal.
    Returns each rank's indices in increasing order."""
    load = list(loads) if loads is not None else [0.0] * size
    out: list[list[int]] = [[] for _ in range(size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(size), key=lambda r: (load[r], r))
        load[r] += costs[i]
        out[r].append(i)
    return [sorted(rows) for rows in out]


def rank_tag(w: World) -> str:
    """The part of a per-rank file's name that says who wrote it: `rank<r>-of-<n>` (a resume must run
    with the same n)."""
    return f"rank{w.rank}-of-{w.size}"


def check_resume_world(where: Path, files: Iterable[Path], w: World, what: str, single: bool = False) -> None:
    """ResumeError (one line) unless the per-rank `files` (named with `rank_tag`) were written by as many
    processes as run now; `single` counts a one-process file beside them. `what` is the verb of the message
    ("collected", "measured")."""
    sizes = {int(p.name.rsplit("-of-", 1)[1].split(".", 1)[0]) for p in files}
    if single:
        sizes.add(1)
    if sizes and sizes != {w.size}:
        raise ResumeError(f"--resume {where} was {what} by {' and '.join(map(str, sorted(sizes)))} process(es); "
                          f"resume it with the same number (this run has {w.size})")


def batch_seed(seed: int, index: int) -> int:
    """The RNG seed of batch `index` of a run seeded with `seed` (SeedSequence-mixed, 63 bits): the
    batch draws the same dropout masks whichever rank, resume or order computes it."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def reduce_state(state: GradientState, w: World | None = None) -> GradientState:
    """Every rank's partial GradientState combined, on every rank: fp32 sums (g, Σg²) summed by one
    all_reduce in an order-free precision (`sum_each_by_all_reduce`: two ranks give the correctly rounded
    sum of the two partials), fp64 activation sums gathered and added in rank order, sign and token counts
    summed exactly, per-batch losses and sizes concatenated in rank order (= batch order under `shard`).

    Alone (world size 1) the state is returned unchanged. Tolerance against one process summing the same
    batches in fp32: the sum of the ranks' fp32 partials differs from the running fp32 sum by
    rounding only, ≤ (number of batches) × 2⁻²⁴ relative to Σ|g_b| per entry; counts are identical.
    Cost: three collectives on flat buffers (an all_reduce of the sums, one of the int32 counts, an
    all_gather of the activation sums) and one of the lists. MiniLM's 22.7M parameters on 2-rank gloo
    take about half the time the same sums gathered and added in rank order took.
    """
    w = w or world()
    if not w.distributed:
        return state
    names, mods = list(state.names), sorted(state.act_sq)
    # One collective per kind of tensor, on one flat buffer each: hundreds of per-tensor collectives cost
    # more in latency than the bytes they move.
    sums = sum_each_by_all_reduce([state.grad_sum[n] for n in names] + [state.sq_sum[n] for n in names], w)
    like = [state.pos_count[n] for n in names] + [state.neg_count[n] for n in names]
    counts = _pack(like)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    counts = _unpack(counts, like)
    acts = sum_each_in_rank_order([state.act_sq[m] for m in mods], w)
    k = len(names)
    out = GradientState(
        names, dict(zip(names, sums[:k])), dict(zip(names, sums[k:])), dict(zip(names, counts[:k])),
        dict(zip(names, counts[k:])), act_sq=dict(zip(mods, acts)), meta=dict(state.meta),
    )
    lists: list[Any] = [None] * w.size
    dist.all_gather_object(lists, (state.act_tokens, state.batch_losses, state.batch_sizes))
    out.act_tokens = {m: sum(int(tok[m]) for tok, _, _ in lists) for m in state.act_tokens}
    out.batch_losses = [x for _, losses, _ in lists for x in losses]
    out.batch_sizes = [x for _, _, sizes in lists for x in sizes]
    return out


def sum_each_by_all_reduce(tensors: list[torch.Tensor], w: World | None = None) -> list[torch.Tensor]:
    """Σ over ranks of each tensor (floating point), by one all_reduce of them all packed into one buffer,
    in a precision where the order of addition cannot matter: with two ranks in the tensors' own dtype
    (one addition, correctly rounded, commutative), with more in float64 and cast back (float32 partials:
    the backend's association can move a result by one float32 ulp in rare double roundings). Every rank
    gets the same bits. Alone, copies. Cost: one all_reduce of the packed tensors (8 bytes an entry with
    more than two ranks); on 2-rank gloo a quarter of the time of an all_gather of the same bytes."""
    if not tensors:
        return []
    w = w or world()
    if not w.distributed:
        return [t.clone() for t in tensors]
    dtype = tensors[0].dtype if w.size == 2 and len({t.dtype for t in tensors}) == 1 else torch.float64
    flat = _pack(tensors, dtype)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return _unpack(flat, tensors)


def sum_in_rank_order(t: torch.Tensor, w: World | None = None) -> torch.Tensor:
    """Σ over ranks of every rank's `t` (same shape everywhere), in float64, added in rank order: the same
    bits on every rank and in every run, whatever the timing (an all_reduce's association is the
    backend's). Alone, `t` in float64. Cost: one all_gather (world size × t's bytes in flight and held)."""
    w = w or world()
    if not w.distributed:
        return t.double()
    parts = [torch.empty_like(t) for _ in range(w.size)]
    dist.all_gather(parts, t.contiguous())
    total = torch.zeros(t.shape, dtype=torch.float64, device=t.device)
    for p in parts:  # rank order: the same association on every rank and every run
        total += p.double()
    return total


def sum_each_in_rank_order(tensors: list[torch.Tensor], w: World | None = None) -> list[torch.Tensor]:
    """`sum_in_rank_order` of each tensor, through one collective on them flattened into one buffer; each
    result is a new tensor shaped and typed like its input (the float64 sum cast back once). Alone, copies
    of the inputs. Cost: one all_gather of all of them (world size × their bytes); the float64 sums are
    formed a cache-sized slice at a time straight into the results, so beside the gathered buffers nothing
    of the whole size is allocated but the results themselves."""
    if not tensors:
        return []
    w = w or world()
    if not w.distributed:
        return [t.clone() for t in tensors]
    flat = _pack(tensors)
    parts = [torch.empty_like(flat) for _ in range(w.size)]
    dist.all_gather(parts, flat)
    del flat
    out, start = [], 0
    for t in tensors:
        n = t.numel()
        res = torch.empty(n, dtype=t.dtype, device=t.device)
        for a in range(0, n, _SUM_SLICE):
            b = min(n, a + _SUM_SLICE)
            acc = parts[0][start + a:start + b].to(torch.float64, copy=True)
            for q in parts[1:]:  # rank order: the same association on every rank and every run
                acc += q[start + a:start + b]
            res[a:b] = acc
        out.append(res.view(t.shape))
        start += n
    return out


#: elements summed at a time by sum_each_in_rank_order (2 MiB of float64: stays in a core's L2)
_SUM_SLICE = 1 << 18


def _pack(tensors: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """The tensors flattened into one new 1-D buffer, in `dtype` (default: their common dtype), each copied
    in once (converted on the way)."""
    if not tensors:
        return torch.zeros(0, dtype=dtype)
    dtype = dtype or functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=tensors[0].device)
    start = 0
    for t in tensors:
        flat[start:start + t.numel()].copy_(t.reshape(-1))
        start += t.numel()
    return flat


def _unpack(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """`flat` cut back into tensors shaped and typed like `like` (copies, one each)."""
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.dtype, copy=True))
        start += t.numel()
    return out


def broadcast(obj: Any, w: World | None = None, src: int = 0) -> Any:
    """`obj` as rank `src` has it, on every rank (the results folder's name, the selected indices)."""
    w = w or world()
    if not w.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_same_on_every_rank(what: str, value: Any, w: World | None = None) -> None:
    """ConfigError (raised on every rank, naming the first rank that differs) unless `value` (a config
    digest, the sample list's digest) is the same on every rank."""
    w = w or world()
    if not w.distributed:
        return
    values: list[Any] = [None] * w.size
    dist.all_gather_object(values, value)
    for r, v in enumerate(values):
        if v != values[0]:
            raise ConfigError(f"rank {r} has another {what} than rank 0: every process must be started with "
                              "the same command and data")
