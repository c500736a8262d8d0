"""The `obs` scorer: block-diagonal Optimal Brain Surgeon saliency with an empirical Fisher (as oBERT).

Kurtic et al. 2022 ("The Optimal BERT Surgeon") approximate the Hessian by the empirical Fisher
F = (1/m) Σ_e g_e g_eᵀ + λI of m per-example gradients and keep only blocks of B consecutive weights;
zeroing θ_i while the rest of its block compensates optimally costs ρ_i = θ_i² / (2 [F_B⁻¹]_ii).

The fit (the diagonals of the block inverses) is expensive and is computed once per ScoringInputs and
kept in `inputs.cached` under a key naming block size, sample count, seed and damping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...fields import help_field
from ..base import Scorer, as_scores, register_scorer
from ..inputs import ScoringInputs
from ..objective import Objective
from .stats import memory_budget, per_example_gradients, squared_gradient_sum

DEFAULT_BLOCK = 50
DEFAULT_SAMPLES = 64
RELATIVE_DAMPING = 1e-3


def block_inverse_diagonal(grads: torch.Tensor, damping: float, block: int,
                           max_bytes: int = 256 << 20) -> torch.Tensor:
    """diag(F_B⁻¹) for consecutive blocks of a flat tensor's entries, F_B = (1/m) G_Bᵀ G_B + λI.

    `grads` is [m, N] (m per-example gradients of N flat entries, any float dtype); blocks are entries
    [kB, (k+1)B), the last one N mod B long when B does not divide N. Returns float64 [N]. The blocks are
    formed, Cholesky-factored and inverted as [K, B, B] float64 stacks, K chosen so a stack and its
    factor fit in `max_bytes`. Cost: O(m N B) for the products plus O(N B²) for the inverses; memory:
    the float64 widening of K blocks of G (m K B × 8 bytes) plus 3 K B² × 8 bytes.
    ConfigError when a block is not positive definite in float64 (λ too small for its scale).
    """
    m, n = grads.shape
    out = torch.empty(n, dtype=torch.float64)
    n_full = n // block
    per_block = 8 * block * (3 * block + m)
    step = max(1, int(max_bytes // per_block))

    def invert(g: torch.Tensor, start: int) -> torch.Tensor:
        # g: [m, K, b] → diag of ((1/m) Σ g gᵀ + λI)⁻¹, [K, b]
        g = g.to("cpu", torch.float64)
        f = torch.einsum("mkb,mkc->kbc", g, g) / m
        f.diagonal(dim1=1, dim2=2).add_(damping)
        chol, info = torch.linalg.cholesky_ex(f)
        if bool((info != 0).any()):
            k = int((info != 0).nonzero()[0, 0])
            raise ConfigError(f"OBS block at flat entry {start + k * g.shape[2]} is not positive definite "
                              f"with damping {damping:g}; raise obs_damping")
        return torch.cholesky_inverse(chol).diagonal(dim1=1, dim2=2)

    for k0 in range(0, n_full, step):
        k1 = min(n_full, k0 + step)
        g = grads[:, k0 * block:k1 * block].reshape(m, k1 - k0, block)
        out[k0 * block:k1 * block] = invert(g, k0 * block).reshape(-1)
    if n_full * block < n:
        g = grads[:, n_full * block:].reshape(m, 1, n - n_full * block)
        out[n_full * block:] = invert(g, n_full * block).reshape(-1)
    return out


def _groups(objective: Objective, names: list[str], m: int, max_bytes: int) -> list[list[str]]:
    """Consecutive names whose m per-example gradients fit together in `max_bytes` (a tensor too large
    for it forms a group of its own)."""
    own = dict(objective.model.named_parameters())
    groups: list[list[str]] = []
    used = 0
    for n in names:
        size = m * own[n].numel() * own[n].element_size()
        if groups and used + size <= max_bytes:
            groups[-1].append(n)
            used += size
        else:
            groups.append([n])
            used = size
    return groups


@dataclass
class ObsOptions:
    """obs's settings: the block size, the per-example gradients m, their seed and an explicit damping."""

    obs_block: int = help_field("obs: consecutive flat entries per block of the empirical Fisher (oBERT: 50)",
                                DEFAULT_BLOCK)
    obs_samples: int | None = help_field("obs: per-example gradients m (default: 64, or the scoring half "
                                         "when it has fewer)", None)
    obs_seed: int = help_field("obs: seed drawing the m scoring-half examples", 0)
    obs_damping: float | None = help_field("obs: absolute damping λ (default: inputs.damping, else 1e-3 × "
                                           "the Fisher's mean diagonal)", None)


def _options(inputs: ScoringInputs) -> tuple[int, int, int, float | None]:
    """(block, samples, seed, explicit damping or None) from the ObsOptions, checked."""
    opts = inputs.settings(ObsOptions)
    block = int(opts.obs_block)
    n = inputs.score.n
    # The default adapts to a scoring half smaller than 64 examples; an explicit count must be available.
    m = int(opts.obs_samples) if opts.obs_samples is not None else min(DEFAULT_SAMPLES, n)
    seed = int(opts.obs_seed)
    if block < 1:
        raise ConfigError(f"obs_block={block} must be >= 1 (oBERT uses 50)")
    if m > n:
        raise ConfigError(f"obs_samples={m} exceeds the {n} examples of the scoring half; use at most {n}")
    if m < block:
        raise ConfigError(f"obs_samples={m} is below obs_block={block}: the empirical Fisher of a block has "
                          f"rank at most the sample count; use at least {block} samples")
    damping = opts.obs_damping
    if damping is None:
        damping = inputs.damping
    if damping is not None:
        damping = float(damping)
        if not damping > 0:
            raise ConfigError(f"OBS damping {damping:g} must be > 0")
    return block, m, seed, damping


def obs_inverse_diagonal(inputs: ScoringInputs) -> tuple[dict[str, torch.Tensor], float]:
    """The OBS fit: ({name: diag(F_B⁻¹) shaped like the parameter, float64 CPU}, λ used), cached.

    F_B = (1/m) Σ_e g_e,B g_e,Bᵀ + λI over blocks of ObsOptions.obs_block (50) consecutive flat
    entries of each tensor, g_e the per-example gradients of m = obs_samples (default 64, or
    every example when the scoring half has fewer) scoring-half examples drawn with obs_seed
    (0). λ = obs_damping, else inputs.damping, else 1e-3 × the mean diagonal of the empirical
    Fisher, (1/(mP)) Σ_e ‖g_e‖² over all P eligible entries.
    ConfigError when m < block or an explicit obs_samples exceeds the scoring half.

    Cost: one per-example (vmap) pass over the m examples per group of tensors whose m gradients fit
    in StatisticsOptions.per_example_memory_mb (one group for small models), plus one more such pass when λ
    must be computed and there are several groups; the block inverses cost O(P B²). Memory: m × (group
    size) × itemsize for the gradients, the block stacks (see block_inverse_diagonal), and the result,
    one float64 per eligible entry.
    """
    inputs.require("obs", score_objective=inputs.score)
    block, m, seed, damping = _options(inputs)
    key = f"obs_fit/block={block}/m={m}/seed={seed}/damping={damping!r}"

    def compute() -> tuple[dict[str, torch.Tensor], float]:
        objective, names, budget = inputs.score, list(inputs.names), memory_budget(inputs)
        groups = _groups(objective, names, m, budget)
        total = sum(t.numel() for t in inputs.theta().values())
        lam = damping
        first = None
        if lam is None:
            if len(groups) == 1:
                first = per_example_gradients(objective, groups[0], m, seed, budget)
                sq = sum(float(g.double().square().sum()) for g in first.values())
            else:
                sums = squared_gradient_sum(objective, names, m, seed, budget)
                sq = sum(float(s.sum()) for s in sums.values())
            lam = RELATIVE_DAMPING * sq / (m * max(total, 1))
            if not lam > 0:
                raise ConfigError("the per-example gradients of the OBS samples are all zero, so the "
                                  "relative damping is 0; set obs_damping (or the damping) explicitly")
        out = {}
        for group in groups:
            grads = first if first is not None else per_example_gradients(objective, group, m, seed, budget)
            for n in group:
                g = grads[n].reshape(m, -1)
                out[n] = block_inverse_diagonal(g, lam, block, budget).reshape(grads[n].shape[1:])
            first = None
        return out, lam

    return inputs.cached(key, compute)


@register_scorer
class ObsScorer(Scorer):
    """score = θ_i² / (2 [F_B⁻¹]_ii): the block-diagonal OBS saliency (oBERT), unsigned: the predicted loss
    increase ≥ 0 of zeroing θ_i when the other weights of its block are updated to compensate.

    F_B is the damped empirical Fisher of its block of 50 consecutive flat entries (the last block of a
    tensor smaller) from m ≥ 50 per-example gradients of the scoring-half loss; options: ObsOptions (see obs_inverse_diagonal, which also states the cost).
    After a call, `last_damping` is the λ used. Needs the scoring-half Objective.
    """

    name = "obs"
    signed = False
    description = ("θ²/(2[F_B⁻¹]_ii), block-diagonal empirical Fisher over 50-entry blocks (oBERT); "
                   "unsigned: predicted harm ≥ 0 with the block compensating")
    options = ObsOptions

    def __init__(self) -> None:
        self.last_damping: float | None = None

    def score(self, inputs: ScoringInputs) -> dict[str, torch.Tensor]:
        inputs.require(self.name, score_objective=inputs.score)
        inv_diag, self.last_damping = obs_inverse_diagonal(inputs)
        theta = inputs.theta()
        return {n: as_scores(theta[n]).square() / (2.0 * inv_diag[n]) for n in inputs.names}
