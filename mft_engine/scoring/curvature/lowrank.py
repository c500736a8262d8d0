"""Exact damped Gauss-Newton solves through the matrix's low rank: (G + λI)⁻¹ b by Woodbury.

G over n training examples is a sum of M = n·(C−1 if C = 2 else C) rank-one terms,
G = (1/n) Σ_m a_m a_mᵀ = (1/n) FᵀF, a_m = J_eᵀ q_e,c the per-example factors of hvp.example_factors
(one per example for two classes). With M ≪ P parameters, G + λI has P − M eigenvalues equal to λ and M
spread over many orders of magnitude above it. CG's 2-norm residual pays for that spread: a right-hand
side mostly outside G's range is solved at the first step, which multiplies its in-range part by up to
σ_max/λ, and the residual only falls once the Krylov space has resolved essentially all M directions
(measured on minilm, `mft bench cg`: ‖r‖/‖b‖ rises above 10 in the first iterations). Woodbury removes
the spread from the iteration altogether:

    (λI + FᵀF/n)⁻¹ b = (b − Fᵀ α) / λ,   α = (nλ I + K)⁻¹ F b,   K = F Fᵀ (M × M).

K and Fb are accumulated in float64 over column blocks of fp32 factor chunks; K = V diag(k) Vᵀ once, after
which every λ costs an M × M product, and the solutions of all requested λ come out of one more pass over
the factors.

Precision: s = (b − Fᵀα)/λ carries the rounding of the factors' span divided by λ, so the residual
‖b − (G + λI)s‖/‖b‖ is about κ·ε (κ = σ_max(G)/λ, ε the arithmetic's unit roundoff): on minilm at the
default λ (κ ≈ 3·10⁹, 64 examples) 3.5e-6 in float64 but 246 in float32 — while the float32 solution
itself differs from the float64 one by 6e-7 in relative norm and gives the same sign of −s_i·θ_i for
99.998% of the parameters. For the scores the solution's own error is what counts; the residual
measures G times it. Run the Objective in float64 where the residual itself must be small. Nothing is stored beyond two chunks of factors, so the factors are recomputed: chunks of c
rows cost ⌈M/c⌉(⌈M/c⌉ + 1)/2 chunk recomputations for K, one pass for Fᵀα.

Several processes (an Objective with a `world`): K's block rows are shared out by cost (row i computes
chunks i … last: their examples), each rank
writes its blocks and the ranks' K and Fb are all-reduced (every entry is written by one rank, so the
sum is exact: K and Fb have the bits a single process computes from the same chunks). When every factor
fits in memory at once (one chunk alone), each rank computes its contiguous share of the examples'
factors, the ranks exchange them, and each computes K's rows of its own factors. Every rank then
decomposes the same K; Fᵀα is summed from each rank's share of the examples in rank order (float64).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import torch.distributed as dist

from ...collect.distributed import World, deal_by_cost, shard, sum_in_rank_order
from ...errors import ConfigError
from ..objective import Objective
from .hvp import example_factors, flatten, single_examples, split_params

Params = dict[str, torch.Tensor]

COLUMN_BLOCK = 1 << 20  # fp32 partial products over ≤ 1M columns, summed in float64


@dataclass
class LowRankGN:
    """G = (1/n) FᵀF of an Objective, kept as what Woodbury needs: K = FFᵀ's eigendecomposition and Fb.

    - `eigenvalues` [M], `eigenvectors` [M, M] (float64) of K; `fb` [M]: F b; `b`: the right-hand side
      (1-D, float64, objective.names order).
    - `n`: examples; `m`: factors; `factor_passes`: factor chunks computed (each c examples' backward
      passes); `seconds`: time to build.
    """

    objective: Objective
    b: torch.Tensor
    fb: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    n: int
    m: int
    chunk_examples: int
    factor_passes: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def alpha(self, damping: float) -> torch.Tensor:
        """α = (nλ I + K)⁻¹ F b in float64 [M]. Cost: two M × M matrix-vector products."""
        if not damping > 0:
            raise ConfigError(f"damping {damping} must be > 0")
        k = self.eigenvalues.clamp_min(0.0)
        return self.eigenvectors @ ((self.eigenvectors.T @ self.fb) / (self.n * damping + k))

    def solve(self, dampings: Sequence[float], progress: Callable[[int], None] | None = None
              ) -> dict[float, torch.Tensor]:
        """{λ: s = (G + λI)⁻¹ b} as float64 1-D vectors, all λ in one pass over the factors.

        Cost: one factor per example (class) recomputed, plus len(dampings) axpys of |θ| per factor.
        """
        alphas = torch.stack([self.alpha(float(d)) for d in dampings])  # [D, M]
        acc = torch.zeros(len(dampings), self.b.numel(), dtype=torch.float64)
        _stream(self.objective, self.chunk_examples, lambda rows, lo: _accumulate(acc, rows, alphas, lo), progress)
        if self.objective.sharded:
            acc = sum_in_rank_order(acc, self.objective.world)
        return {float(d): (self.b - acc[i]) / float(d) for i, d in enumerate(dampings)}


def _accumulate(acc: torch.Tensor, rows: torch.Tensor, alphas: torch.Tensor, lo: int) -> None:
    # acc[d] += Σ_r alphas[d, lo + r] · rows[r], blockwise so the fp32 rows meet float64 weights once.
    a = alphas[:, lo:lo + rows.shape[0]]
    for start in range(0, rows.shape[1], COLUMN_BLOCK):
        acc[:, start:start + COLUMN_BLOCK] += a @ rows[:, start:start + COLUMN_BLOCK].double()


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a bᵀ in float64 from fp32 rows: fp32 GEMMs over column blocks, summed in float64."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[1], COLUMN_BLOCK):
        out += (a[:, start:start + COLUMN_BLOCK] @ b[:, start:start + COLUMN_BLOCK].T).double()
    return out


def _rows(objective: Objective, params: Params, frozen: Params, examples: list,
          buffer: torch.Tensor | None = None) -> torch.Tensor:
    """The factors of `examples` as rows [m, P] (the parameters' dtype; zeros where a parameter does not
    reach the logits), each factor copied once into its row: into the first m rows of `buffer` when given
    (reused across chunks: a fresh multi-GB tensor per chunk costs more in page faults than the copies)."""
    sizes = [p.numel() for p in params.values()]
    m = factors_per_example(objective) * len(examples)
    if buffer is None or buffer.shape[0] < m:
        buffer = torch.empty(m, sum(sizes), dtype=next(iter(params.values())).dtype)
    rows = buffer[:m]
    for r, grads in enumerate(example_factors(objective, params, frozen, examples)):
        for piece, g in zip(rows[r].split(sizes), grads):
            if g is None:
                piece.zero_()
            else:
                piece.copy_(g.reshape(-1))
    return rows


def _examples(objective: Objective) -> list:
    return [e for b in objective.batches for e in single_examples(b)]


def _chunks(objective: Objective, chunk_examples: int) -> list[list]:
    examples = _examples(objective)
    return [examples[i:i + chunk_examples] for i in range(0, len(examples), chunk_examples)]


def _local_examples(objective: Objective) -> tuple[list, int]:
    """(this rank's contiguous share of the examples, the index of its first): all of them alone."""
    examples = _examples(objective)
    if not objective.sharded:
        return examples, 0
    mine = shard(len(examples), objective.world)
    return examples[mine.start:mine.stop], mine.start


@torch.enable_grad()
def _stream(objective: Objective, chunk_examples: int, fn: Callable[[torch.Tensor, int], None],
            progress: Callable[[int], None] | None) -> None:
    """fn(rows, first row's index in F) for this rank's examples' factors, chunk_examples at a time."""
    params, frozen = split_params(objective, None)
    examples, first = _local_examples(objective)
    lo = first * factors_per_example(objective)
    buffer = None
    for i in range(0, len(examples), chunk_examples):
        chunk = examples[i:i + chunk_examples]
        rows = _rows(objective, params, frozen, chunk, buffer)
        if buffer is None or rows.shape[0] > buffer.shape[0]:
            buffer = rows
        fn(rows, lo)
        lo += rows.shape[0]
        if progress is not None:
            progress(len(chunk))


def factors_per_example(objective: Objective) -> int:
    """Rank-one terms each example adds to G: 1 for two classes, C for C > 2 (hvp.example_factors)."""
    c = getattr(getattr(objective.model, "config", None), "num_labels", 2)
    return 1 if c == 2 else c


def chunk_examples_for(objective: Objective, memory_bytes: float) -> int:
    """Examples per factor chunk (1 … n) so that two chunks of factors (the parameters' dtype) fit in
    `memory_bytes`."""
    size = sum(t.numel() * t.element_size() for t in objective.params().values())
    per_example = factors_per_example(objective) * size
    return int(min(max(1, memory_bytes // (2 * per_example)), max(objective.n, 1)))


@torch.enable_grad()
def gauss_newton_lowrank(objective: Objective, b: Params, *, memory_bytes: float = 4e9,
                         progress: Callable[[int], None] | None = None) -> LowRankGN:
    """Build the Woodbury form of G (the objective's Gauss-Newton matrix) for right-hand side `b`.

    `b` is keyed by objective.names. `memory_bytes` bounds the two factor chunks held at once (the
    gathered factors over several processes: each rank's share plus all of them).
    `progress(examples)` runs after each chunk of factors. Cost: ⌈n/c⌉(⌈n/c⌉+1)/2 chunks of c examples'
    backward passes (c from memory_bytes; one chunk pass when everything fits), M²·P flops for K in fp32
    GEMMs, one M × M eigendecomposition. Memory: two chunks of factors, K, and b in float64.
    """
    start = time.perf_counter()
    params, frozen = split_params(objective, None)
    missing = [n for n in objective.names if n not in b]
    if missing:
        raise ConfigError(f"the right-hand side lacks {missing[:3]}")
    bvec = flatten({n: b[n].detach() for n in objective.names}, objective.names).double()
    c = chunk_examples_for(objective, memory_bytes)
    if objective.sharded and c >= objective.n:
        return _lowrank_gathered(objective, params, frozen, bvec, c, start, progress)
    chunks = _chunks(objective, c)
    per = factors_per_example(objective)
    # Chunk i's factors are rows [offsets[i], offsets[i + 1]) of F: K's blocks are written in place.
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + per * len(chunk))
    m = offsets[-1]
    K = torch.zeros(m, m, dtype=torch.float64)
    fb = torch.zeros(m, dtype=torch.float64)
    passes = 0
    t_factor = t_gemm = 0.0
    w = objective.world if objective.sharded else World()
    # A rank's block rows (row i computes chunks i, i+1, …: its cost is their examples); alone, every row.
    sizes = [len(chunk) for chunk in chunks]
    mine = deal_by_cost([sum(sizes[i:]) for i in range(len(chunks))], w.size)[w.rank]

    buffers: dict[str, torch.Tensor] = {}  # one for row i's chunk, one for the chunks it meets

    def rows_of(j: int, which: str) -> torch.Tensor:
        nonlocal passes, t_factor
        t = time.perf_counter()
        rows = _rows(objective, params, frozen, chunks[j], buffers.get(which))
        if which not in buffers or rows.shape[0] > buffers[which].shape[0]:
            buffers[which] = rows
        t_factor += time.perf_counter() - t
        passes += 1
        if progress is not None:
            progress(len(chunks[j]))
        return rows

    for i in mine:
        a = rows_of(i, "row")
        ri = slice(offsets[i], offsets[i + 1])
        t = time.perf_counter()
        fb[ri] = sum(a[:, s:s + COLUMN_BLOCK].double() @ bvec[s:s + COLUMN_BLOCK]
                     for s in range(0, a.shape[1], COLUMN_BLOCK))
        K[ri, ri] = _gram(a, a)
        t_gemm += time.perf_counter() - t
        for j in range(i + 1, len(chunks)):
            bj = rows_of(j, "other")
            rj = slice(offsets[j], offsets[j + 1])
            t = time.perf_counter()
            K[ri, rj] = _gram(a, bj)
            K[rj, ri] = K[ri, rj].T
            t_gemm += time.perf_counter() - t
        del a
    t = time.perf_counter()
    if w.distributed:  # each entry written by one rank: the sum is exact
        dist.all_reduce(K)
        dist.all_reduce(fb)
    t_comm = time.perf_counter() - t
    return _decomposed(objective, bvec, fb, K, c, passes, start,
                       {"factors_s": t_factor, "gemm_s": t_gemm, "communication_s": t_comm})


def _decomposed(objective: Objective, bvec: torch.Tensor, fb: torch.Tensor, K: torch.Tensor, c: int, passes: int,
                start: float, timings: dict[str, float]) -> LowRankGN:
    t = time.perf_counter()
    evals, evecs = torch.linalg.eigh(K)
    timings["eigh_s"] = time.perf_counter() - t
    return LowRankGN(objective=objective, b=bvec, fb=fb, eigenvalues=evals, eigenvectors=evecs, n=objective.n,
                     m=K.shape[0], chunk_examples=c, factor_passes=passes, seconds=time.perf_counter() - start,
                     timings=timings)


def _lowrank_gathered(objective: Objective, params: Params, frozen: Params, bvec: torch.Tensor, c: int,
                      start: float, progress: Callable[[int], None] | None) -> LowRankGN:
    """K and Fb when every factor fits at once, over several processes: each rank computes its share of
    the factors, all ranks gather every share, each rank fills K's rows of its own factors against all
    of them; K (symmetrised: (K + Kᵀ)/2, the two halves come from different ranks' products) and Fb are
    then all-reduced. Cost per rank: n/world examples' factors, (n/world)·n·P flops, and world × its
    share of F received."""
    w = objective.world
    per = factors_per_example(objective)
    t = time.perf_counter()
    examples, first = _local_examples(objective)
    own = _rows(objective, params, frozen, examples)
    t_factor = time.perf_counter() - t
    if progress is not None:
        progress(len(examples))
    counts = [len(shard(objective.n, World(r, w.size))) * per for r in range(w.size)]
    t = time.perf_counter()
    padded = torch.zeros(max(counts), own.shape[1], dtype=own.dtype)
    padded[:own.shape[0]] = own
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded)
    del padded
    t_comm = time.perf_counter() - t
    m = sum(counts)
    K = torch.zeros(m, m, dtype=torch.float64)
    fb = torch.zeros(m, dtype=torch.float64)
    lo = first * per
    t = time.perf_counter()
    mine = slice(lo, lo + own.shape[0])
    fb[mine] = sum(own[:, s:s + COLUMN_BLOCK].double() @ bvec[s:s + COLUMN_BLOCK]
                   for s in range(0, own.shape[1], COLUMN_BLOCK))
    col = 0
    for r, part in enumerate(parts):
        K[mine, col:col + counts[r]] = _gram(own, part[:counts[r]])
        col += counts[r]
    del parts
    t_gemm = time.perf_counter() - t
    t = time.perf_counter()
    dist.all_reduce(K)
    dist.all_reduce(fb)
    K = (K + K.T) / 2
    t_comm += time.perf_counter() - t
    return _decomposed(objective, bvec, fb, K, c, 1, start,
                       {"factors_s": t_factor, "gemm_s": t_gemm, "communication_s": t_comm})


def lowrank_solve(objective: Objective, b: Params, dampings: Sequence[float], *, memory_bytes: float = 4e9,
                  progress: Callable[[int], None] | None = None) -> tuple[dict[float, torch.Tensor], LowRankGN]:
    """({λ: (G + λI)⁻¹ b as float64 1-D}, the LowRankGN): exact up to rounding for every λ > 0.

    Cost: gauss_newton_lowrank, then one more pass over the factors for all λ together.
    """
    if not dampings or not all(d > 0 and math.isfinite(d) for d in dampings):
        raise ConfigError(f"dampings {list(dampings)} must all be > 0")
    low = gauss_newton_lowrank(objective, b, memory_bytes=memory_bytes, progress=progress)
    return low.solve(dampings, progress), low
