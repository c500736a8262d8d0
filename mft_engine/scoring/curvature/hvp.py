"""Curvature-vector products of an Objective: exact Hessian (H v), Gauss-Newton (G v), batched, and diagonals.

L(θ) = (1/n) Σ_e CE(z_e(θ), y_e) is the Objective's loss (eval mode, fixed batches); z_e are the logits.
- H = ∇²L, indefinite in general. `hvp` computes H v by double backward (reverse-over-reverse) or by
  forward-over-reverse (torch.func.jvp of torch.func.grad); the two agree to rounding.
- G = (1/n) Σ_e J_eᵀ H_z,e J_e, J_e = ∂z_e/∂θ, H_z,e = diag(p_e) − p_e p_eᵀ (the Hessian of softmax
  cross-entropy w.r.t. the logits, p = softmax(z)): the Gauss-Newton matrix, positive semi-definite, equal
  to H where the logits are linear in θ (the classifier head). `gnvp` / `batched_gnvp` compute G v.
- G = (1/n) Σ_e,c a_e,c a_e,cᵀ with per-example factors a_e,c = J_eᵀ q_e,c (H_z,e = Σ_c q_e,c q_e,cᵀ; one
  factor per example for two classes): `gauss_newton_diagonal` sums their squares (the exact diag(G)),
  and batched_gnvp(method="factors") multiplies many vectors by them at once.

Every product streams over the Objective's batches one at a time, so memory beyond the parameters and
vectors is one batch's activations (times the number of vectors processed together in the batched forms).
Attention runs through SDPA's MATH backend (`Objective.logits` sets it): the CPU flash kernel has neither
double backward nor forward-mode AD, which every product here needs.

Restricting the curvature to a parameter block B (H_BB v_B, G_BB v_B) needs nothing special: build the
Objective with `names` = the block; the other parameters are then held fixed at the model's values.

Params are dicts {parameter name: tensor} keyed by `objective.names`, each tensor shaped and typed like its
parameter; vectors v are Params of the same shapes and dtype (the model's dtype).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.func import grad, jvp, vjp, vmap

from ...errors import ConfigError
from ..objective import Objective, model_inputs

Params = dict[str, torch.Tensor]

#: λ = DEFAULT_DAMPING_FACTOR × mean diag(G) when no absolute damping is given.
DEFAULT_DAMPING_FACTOR = 1e-3
#: Explicit matrices are refused beyond this many parameters (P² entries).
EXPLICIT_LIMIT = 4096
#: Memory for one block of per-example Gauss-Newton factors in batched_gnvp(method="factors") (bytes):
#: larger blocks read the vectors and results fewer times.
FACTOR_BLOCK_BYTES = 1 << 30


# ---------------------------------------------------------------------------------------------------------
# Params as vectors
# ---------------------------------------------------------------------------------------------------------

def flatten(params: Params, names: list[str] | None = None) -> torch.Tensor:
    """The tensors of `params` in `names` order (default: the dict's order) as one 1-D tensor (a copy)."""
    names = list(params) if names is None else names
    return torch.cat([params[n].reshape(-1) for n in names])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """Split a 1-D `vec` into tensors shaped like `like`'s, in `like`'s key order (views of `vec`)."""
    total = sum(t.numel() for t in like.values())
    if vec.dim() != 1 or vec.numel() != total:
        raise ConfigError(f"a vector of shape {tuple(vec.shape)} does not match parameters of {total} entries")
    out, start = {}, 0
    for n, t in like.items():
        out[n] = vec[start:start + t.numel()].view(t.shape)
        start += t.numel()
    return out


def dot(a: Params, b: Params) -> torch.Tensor:
    """Σ_names ⟨a[n], b[n]⟩ as a 0-d tensor of their dtype."""
    return sum((a[n] * b[n]).sum() for n in a)


def axpy(alpha: float, x: Params, y: Params) -> Params:
    """alpha · x + y, a new Params."""
    return {n: torch.add(y[n], x[n], alpha=alpha) for n in y}


def zeros_like(params: Params) -> Params:
    """Params of zeros shaped and typed like `params`."""
    return {n: torch.zeros_like(t) for n, t in params.items()}


def random_like(params: Params, generator: torch.Generator | None = None) -> Params:
    """Params of standard normal entries shaped and typed like `params` (seeded by `generator`)."""
    # drawn on the CPU, then moved: the same vectors on every device
    return {n: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for n, t in params.items()}


# ---------------------------------------------------------------------------------------------------------
# The objective as functions of the chosen parameters only
# ---------------------------------------------------------------------------------------------------------

def split_params(objective: Objective, params: Params | None) -> tuple[Params, Params]:
    """(chosen params, the other parameters detached). Passing the others detached keeps autograd from
    recording a graph towards parameters nobody differentiates."""
    params = objective.params() if params is None else {n: params[n].detach() for n in objective.names}
    chosen = set(objective.names)
    frozen = {n: p.detach() for n, p in objective.model.named_parameters() if n not in chosen}
    return params, frozen


def _logits_fn(objective: Objective, frozen: Params, batch: dict) -> Callable[[Params], torch.Tensor]:
    return lambda q: objective.logits({**frozen, **q}, batch)


def _loss_fn(objective: Objective, frozen: Params, batch: dict) -> Callable[[Params], torch.Tensor]:
    # Each batch contributes Σ_e CE / n, so summing over batches gives the mean over all n examples.
    return lambda q: objective.batch_loss_sum({**frozen, **q}, batch) / objective.n


def _check_vector(objective: Objective, v: Params, params: Params) -> Params:
    missing = [n for n in objective.names if n not in v]
    if missing:
        raise ConfigError(f"the vector lacks parameters {missing[:3]}; it must be keyed by objective.names")
    bad = [n for n in objective.names if v[n].shape != params[n].shape]
    if bad:
        raise ConfigError(f"the vector's {bad[0]} has shape {tuple(v[bad[0]].shape)}, expected "
                          f"{tuple(params[bad[0]].shape)}")
    return {n: v[n].to(params[n].dtype) for n in objective.names}


def _softmax_hessian_product(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """H_z t = p ⊙ t − p (pᵀt) per example, p = softmax(z); z [B, C], t [..., B, C] (broadcast)."""
    p = torch.softmax(z, dim=-1)
    return p * t - p * (p * t).sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------
# Hessian-vector products
# ---------------------------------------------------------------------------------------------------------

@torch.enable_grad()  # works inside a caller's no_grad: autograd is the method
def hvp(objective: Objective, v: Params, params: Params | None = None, mode: str = "reverse") -> Params:
    """H v, the exact Hessian of `objective.loss` at `params` (default: the model's) times `v`.

    `mode="reverse"`: double backward (∇(∇L·v)), the graph of one batch's gradient kept at a time.
    `mode="forward"`: forward-over-reverse, torch.func.jvp of torch.func.grad (no create_graph; usually a
    little cheaper in memory). Both are exact and agree to rounding. Returns Params like `params`, in the
    model's dtype. Cost per batch: one forward, one backward and one backward-of-backward (≈ 5-6 forward-
    pass equivalents); memory: one batch's activations and the graph of its gradient.
    """
    if mode not in ("reverse", "forward"):
        raise ConfigError(f"hvp mode {mode!r} must be 'reverse' or 'forward'")
    params, frozen = split_params(objective, params)
    v = _check_vector(objective, v, params)
    out = zeros_like(params)
    for b in objective.local_batches():
        f = _loss_fn(objective, frozen, b)
        if mode == "forward":
            _, hv = jvp(grad(f), (params,), (v,))
        else:
            leaf = {n: p.detach().requires_grad_(True) for n, p in params.items()}  # views: no copy
            gs = torch.autograd.grad(f(leaf), list(leaf.values()), create_graph=True, allow_unused=True)
            gv = sum((g * v[n]).sum() for n, g in zip(leaf, gs) if g is not None)
            if not (isinstance(gv, torch.Tensor) and gv.requires_grad):
                continue  # the loss is linear (or constant) in these parameters on this batch: H v = 0
            hs = torch.autograd.grad(gv, list(leaf.values()), allow_unused=True)
            hv = {n: h for n, h in zip(leaf, hs)}
        for n, h in hv.items():
            if h is not None:
                out[n] += h
    return objective.all_sum(out)


def batched_hvp(objective: Objective, vs: list[Params], params: Params | None = None,
                chunk_size: int | None = None) -> list[Params]:
    """[H v for v in vs] in one pass over the batches: torch.func.vmap over the vectors of forward-over-
    reverse (jvp of grad), so each batch's primal forward and backward are computed once for all vectors.

    Returns one Params per vector, in order. `chunk_size` bounds how many vectors share one vmapped call
    (memory: chunk_size × one batch's tangent activations). Extra memory: 2 × len(vs) × |θ| for the stacked
    vectors and results.
    """
    return _batched(objective, vs, params, chunk_size, _hvp_batch)


def _hvp_batch(objective: Objective, frozen: Params, params: Params, batch: dict, stacked: Params,
               chunk_size: int | None) -> Params:
    f = _loss_fn(objective, frozen, batch)
    return vmap(lambda t: jvp(grad(f), (params,), (t,))[1], chunk_size=chunk_size)(stacked)


# ---------------------------------------------------------------------------------------------------------
# Gauss-Newton-vector products
# ---------------------------------------------------------------------------------------------------------

def gnvp(objective: Objective, v: Params, params: Params | None = None) -> Params:
    """G v, G = (1/n) Σ_e J_eᵀ (diag p_e − p_e p_eᵀ) J_e the Gauss-Newton matrix at `params` (default: the
    model's), J_e = ∂logits_e/∂θ.

    Per batch: J v by forward mode (torch.func.jvp of the logits), H_z applied per example, then Jᵀ(·) by
    torch.func.vjp. G is symmetric positive semi-definite. Returns Params like `params` (model dtype).
    Cost per batch: ≈ 6 forward-pass equivalents (the jvp's primal 1 and tangent 2, the vjp's forward 1
    and backward 2); memory: one batch's activations. For many vectors use `batched_gnvp`, which shares
    the primal work.
    """
    params, frozen = split_params(objective, params)
    v = _check_vector(objective, v, params)
    out: Params | None = None
    for b in objective.local_batches():
        zf = _logits_fn(objective, frozen, b)
        z, jv = jvp(zf, (params,), (v,))
        u = _softmax_hessian_product(z, jv) / objective.n
        _, pullback = vjp(zf, params)
        (g,) = pullback(u)
        out = _accumulate(out, g)
    return objective.all_sum(out if out is not None else zeros_like(params))


def _accumulate(out: Params | None, part: Params) -> Params:
    """out + part, taking `part` itself the first time: a |θ|-sized zero fill and add saved per product."""
    if out is None:
        return dict(part)
    for n in out:
        # In place only into a contiguous result (never a broadcast view autograd may hand back).
        out[n] = out[n].add_(part[n]) if out[n].is_contiguous() else out[n] + part[n]
    return out


def batched_gnvp(objective: Objective, vs: list[Params], params: Params | None = None,
                 chunk_size: int | None = None, method: str = "auto") -> list[Params]:
    """[G v for v in vs], all vectors in one pass over the data. Returns one Params per vector, equal to
    `gnvp` of each to rounding. Two exact methods:

    - "vmap": per batch, torch.func.vjp of the logits once (one forward, its pullback closure kept),
      J V for all vectors by torch.func.vmap of torch.func.jvp (the primal forward runs once, unbatched;
      only the tangents carry the vector dimension), H_z applied, and Jᵀ(·) by vmap of that one pullback.
      Cost: 2 forward passes per batch shared by all vectors, then ≈ 4 forward-pass equivalents per
      vector (tangent 2, backward 2) against gnvp's ≈ 6: at most 1.5× cheaper per vector, measured
      1.2× on minilm (32 sentences, 8 vectors, one thread: on CPU a vmapped matmul runs no faster than
      k single ones). `chunk_size` bounds
      the vectors per vmapped call (memory: chunk_size × one batch's tangent activations).
    - "factors": G = (1/n) Σ_e,c a_e,c a_e,cᵀ with a_e,c = J_eᵀ q_e,c (see gauss_newton_diagonal): the
      factors are computed once, one backward per example (C per example when C > 2), and
      G V = (1/n) A (Aᵀ V) by two matmuls per block of factors (FACTOR_BLOCK_BYTES of them at a time).
      Cost: about one per-example gradient pass over the data (C passes when C > 2), whatever the number
      of vectors, plus reading the vectors and results once per block: measured 2.0× cheaper per vector
      than gnvp on minilm (32 sentences, 8 vectors, one thread; the page faults of its fresh multi-GB
      buffers take a good part of that time). Extra memory: one block of factors (≤ FACTOR_BLOCK_BYTES).
    - "auto": "factors" when there are at least 2 vectors per factor of an example (2 for two classes,
      2C otherwise), where it is the cheaper of the two; else "vmap".

    Both stream over the Objective's batches; extra memory: 2 × len(vs) × |θ| (stacked vectors, results).
    """
    if method not in ("auto", "vmap", "factors"):
        raise ConfigError(f"batched_gnvp method {method!r} must be 'auto', 'vmap' or 'factors'")
    if not vs:
        return []
    if method == "auto":
        method = auto_gnvp_method(objective, len(vs))
    if method == "factors":
        return _gnvp_factors(objective, vs, params)
    return _batched(objective, vs, params, chunk_size, _gnvp_batch)


def _gram(x: torch.Tensor, y: torch.Tensor, columns: int = 1 << 16) -> torch.Tensor:
    """x yᵀ for two short, very wide matrices ([k, P] and [r, P]), summed over column blocks: one BLAS call
    over P = 22.7M columns ran 3× slower than 64k-column pieces (and sums more digits away)."""
    out = torch.zeros(x.shape[0], y.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[1], columns):
        out.addmm_(x[:, start:start + columns], y[:, start:start + columns].T)
    return out


def auto_gnvp_method(objective: Objective, count: int) -> str:
    """What batched_gnvp(method="auto") uses for `count` vectors: "factors" when count ≥ 2 × the factors
    per example (1 for two classes, C otherwise), else "vmap"."""
    classes = _num_classes(objective)
    return "factors" if count >= 2 * (1 if classes == 2 else classes) else "vmap"


def _num_classes(objective: Objective) -> int:
    num = getattr(getattr(objective.model, "config", None), "num_labels", None)
    if num:
        return int(num)
    with torch.no_grad():  # a model without a config: ask one example's logits
        return int(objective.logits(objective.params(), objective.batches[0]).shape[-1])


@torch.enable_grad()
def _gnvp_factors(objective: Objective, vs: list[Params], params: Params | None) -> list[Params]:
    params, frozen = split_params(objective, params)
    vs = [_check_vector(objective, v, params) for v in vs]
    names = objective.names
    sizes = [params[n].numel() for n in names]
    dtype = params[names[0]].dtype
    width = sum(sizes)
    # Every large tensor here is written once in place: on a VM a fresh multi-GB allocation costs more
    # in page faults than the arithmetic, so no flatten-then-stack and no zero fill of the result.
    stacked = torch.empty(len(vs), width, dtype=dtype)                          # V [k, P]
    for i, v in enumerate(vs):
        for piece, n in zip(stacked[i].split(sizes), names):
            piece.copy_(v[n].reshape(-1))
    classes = _num_classes(objective)
    factors = objective.n * (1 if classes == 2 else classes)
    rows = max(1, min(factors, FACTOR_BLOCK_BYTES // (width * stacked.element_size())))
    block = torch.empty(rows, width, dtype=dtype)                               # A's columns, as rows
    out: torch.Tensor | None = None
    filled = 0

    def flush(count: int) -> torch.Tensor:
        a = block[:count]
        s = _gram(stacked, a)                                                    # V A   [k, count]
        return torch.mm(s, a) if out is None else out.addmm_(s, a)              # += (V A) Aᵀ, as rows

    for gs in example_factors(objective, params, frozen):
        row = block[filled]
        for piece, g in zip(row.split(sizes), gs):
            if g is None:
                piece.zero_()
            else:
                piece.copy_(g.reshape(-1))
        filled += 1
        if filled == rows:
            out = flush(filled)
            filled = 0
    if filled:
        out = flush(filled)
    if out is None:
        out = torch.zeros_like(stacked)
    out /= objective.n
    out = objective.all_sum({"rows": out})["rows"]
    like = {n: params[n] for n in names}
    return [unflatten(out[i], like) for i in range(len(vs))]


def _gnvp_batch(objective: Objective, frozen: Params, params: Params, batch: dict, stacked: Params,
                chunk_size: int | None) -> Params:
    zf = _logits_fn(objective, frozen, batch)
    z, pullback = vjp(zf, params)
    jv = vmap(lambda t: jvp(zf, (params,), (t,))[1], chunk_size=chunk_size)(stacked)  # [k, B, C]
    u = _softmax_hessian_product(z, jv) / objective.n
    return vmap(lambda w: pullback(w)[0], chunk_size=chunk_size)(u)


def _batched(objective: Objective, vs: list[Params], params: Params | None, chunk_size: int | None,
             per_batch: Callable[..., Params]) -> list[Params]:
    if not vs:
        return []
    params, frozen = split_params(objective, params)
    vs = [_check_vector(objective, v, params) for v in vs]
    stacked = {n: torch.stack([v[n] for v in vs]) for n in objective.names}
    out: Params | None = None
    for b in objective.local_batches():
        out = _accumulate(out, per_batch(objective, frozen, params, b, stacked, chunk_size))
    out = objective.all_sum(out if out is not None else zeros_like(stacked))
    return [{n: out[n][i] for n in objective.names} for i in range(len(vs))]


# ---------------------------------------------------------------------------------------------------------
# The exact Gauss-Newton diagonal
# ---------------------------------------------------------------------------------------------------------

def single_examples(batch: dict) -> list[dict[str, torch.Tensor]]:
    """The batch's examples as batches of one, each cut after its last real token: [{key: [1, L_e]}].

    Columns after the last unmasked token change nothing for the real tokens (they are masked keys, and
    the positions of the real tokens stay), so each example's logits are exactly those it has in the
    padded batch; cutting them saves the padded work.
    """
    inputs = model_inputs(batch)
    mask = inputs.get("attention_mask")
    count = next(iter(inputs.values())).shape[0]
    out = []
    for e in range(count):
        width = inputs["input_ids"].shape[1]
        if mask is not None:
            real = torch.nonzero(mask[e]).flatten()
            width = int(real[-1]) + 1 if real.numel() else 1
        out.append({k: t[e:e + 1, :width] for k, t in inputs.items()})
    return out


def example_factors(objective: Objective, params: Params, frozen: Params,
                    examples: list[dict[str, torch.Tensor]] | None = None
                    ) -> Iterator[tuple[torch.Tensor | None, ...]]:
    """The factors a_e,c = J_eᵀ q_e,c of G = (1/n) Σ_e,c a_e,c a_e,cᵀ, one at a time, as tuples aligned with
    `params` (None where a parameter does not reach the logits); over `examples` (batches of one from
    `single_examples`) when given, else over every example of the objective's `local_batches()` (all of
    them unless the objective is sharded).

    H_z,e = diag(p_e) − p_e p_eᵀ = Σ_c q_e,c q_e,cᵀ with q_e,c = √p_e,c (e_c − p_e); for two classes
    H_z,e = u_e u_eᵀ, u_e = √(p_0 p_1)·(1, −1), so one factor (one backward) per example; for C > 2, C
    factors per example (the forward shared, the graph retained). Each example runs as a batch of one cut
    to its own length (`single_examples`), so no padded token is computed. Must run with grad enabled.
    """
    names = list(params)
    if examples is None:
        examples = [e for b in objective.local_batches() for e in single_examples(b)]
    for example in examples:
        leaf = {n: p.detach().requires_grad_(True) for n, p in params.items()}  # views: no copy
        z = objective.logits({**frozen, **leaf}, example)[0]                  # [C]
        p = torch.softmax(z.detach(), dim=-1)
        if p.numel() == 2:
            r = torch.sqrt(p[0] * p[1])
            cotangents = [torch.stack([r, -r])]
        else:
            eye = torch.eye(p.numel(), dtype=p.dtype)
            cotangents = list(torch.sqrt(p)[:, None] * (eye - p[None, :]))   # row c = q_e,c
        for k, q in enumerate(cotangents):
            yield torch.autograd.grad(z, [leaf[n] for n in names], grad_outputs=q,
                                      retain_graph=k + 1 < len(cotangents), allow_unused=True)


@torch.enable_grad()  # works inside a caller's no_grad: autograd is the method
def gauss_newton_diagonal(objective: Objective, params: Params | None = None) -> Params:
    """diag(G), exactly: G_ii = (1/n) Σ_e Σ_c ((J_eᵀ q_e,c)_i)², q_e,c = √p_e,c (e_c − p_e), since
    H_z,e = diag(p_e) − p_e p_eᵀ = Σ_c q_e,c q_e,cᵀ (J_e = ∂logits_e/∂θ, p_e = softmax of the logits).

    For two classes H_z,e = u_e u_eᵀ with u_e = √(p_0 p_1)·(1, −1), so one backward per example suffices;
    for C > 2 there is one backward per example and class (the forward shared, the graph retained).
    Each example runs as a batch of one cut to its own length, so no padded token is computed. (A
    torch.func.vmap over the examples of a batch was measured 1.7× slower on minilm: it materialises
    every example's dense embedding gradient, and HF's mask check forbids vmapping the masks.)
    Returns Params like `params` (default: the model's), model dtype, entries ≥ 0.
    Cost: one forward and one backward per example (C backward passes when C > 2); memory: one
    example's activations and one gradient (|θ|) beyond the result.
    """
    params, frozen = split_params(objective, params)
    out = zeros_like(params)
    for gs in example_factors(objective, params, frozen):
        for n, g in zip(out, gs):
            if g is not None:
                out[n].addcmul_(g, g)
    for n in out:
        out[n] /= objective.n
    return objective.all_sum(out)


def mean_diagonal(objective: Objective, params: Params | None = None, diagonal: Params | None = None) -> float:
    """The mean of diag(G) over every entry of the chosen parameters (Σ_i G_ii / P), as a Python float.

    Pass `diagonal` (from gauss_newton_diagonal) to avoid recomputing it; otherwise costs one
    gauss_newton_diagonal.
    """
    diagonal = gauss_newton_diagonal(objective, params) if diagonal is None else diagonal
    total = sum(float(t.double().sum()) for t in diagonal.values())
    count = sum(t.numel() for t in diagonal.values())
    return total / max(count, 1)


def default_damping(objective: Objective, params: Params | None = None,
                    factor: float = DEFAULT_DAMPING_FACTOR) -> tuple[float, float]:
    """(λ, mean diag(G)) with λ = factor × mean diag(G): the default damping of (G + λI) or (H + λI).

    Scale-aware: λ follows the curvature's own size, so one factor serves models and blocks of any scale.
    Cost: one gauss_newton_diagonal.
    """
    mean = mean_diagonal(objective, params)
    return factor * mean, mean


# ---------------------------------------------------------------------------------------------------------
# Explicit matrices (tiny parameter blocks only: tests and ground truth)
# ---------------------------------------------------------------------------------------------------------

def _explicit_setup(objective: Objective, params: Params | None) -> tuple[Params, Params, torch.Tensor]:
    params, frozen = split_params(objective, params)
    size = sum(t.numel() for t in params.values())
    if size > EXPLICIT_LIMIT:
        raise ConfigError(f"explicit curvature matrices are for blocks of at most {EXPLICIT_LIMIT} parameters; "
                          f"{objective.names[:3]} have {size}")
    return params, frozen, flatten(params, objective.names)


@torch.enable_grad()  # works inside a caller's no_grad: autograd is the method
def explicit_hessian(objective: Objective, params: Params | None = None) -> torch.Tensor:
    """∇²L as a dense [P, P] matrix over flatten(params, objective.names), by
    torch.autograd.functional.hessian (reverse-over-reverse, independent of `hvp`). Model dtype.

    Only for tiny blocks (P ≤ EXPLICIT_LIMIT); cost: P backward-of-backward passes.
    """
    params, frozen, theta = _explicit_setup(objective, params)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return objective.loss({**frozen, **unflatten(flat, params)})

    return torch.autograd.functional.hessian(loss, theta)


@torch.enable_grad()  # works inside a caller's no_grad: autograd is the method
def explicit_gauss_newton(objective: Objective, params: Params | None = None) -> torch.Tensor:
    """G = (1/n) Σ_e J_eᵀ (diag p_e − p_e p_eᵀ) J_e as a dense [P, P] matrix over
    flatten(params, objective.names), J_e from torch.autograd.functional.jacobian of each batch's logits.

    Only for tiny blocks (P ≤ EXPLICIT_LIMIT); cost: C backward passes per batch, memory B × C × P.
    """
    params, frozen, theta = _explicit_setup(objective, params)
    out = torch.zeros(theta.numel(), theta.numel(), dtype=theta.dtype)
    for b in objective.batches:
        def logits(flat: torch.Tensor, b=b) -> torch.Tensor:
            return objective.logits({**frozen, **unflatten(flat, params)}, b)

        with torch.no_grad():
            p = torch.softmax(logits(theta), dim=-1)                       # [B, C]
        jac = torch.autograd.functional.jacobian(logits, theta)           # [B, C, P]
        hz = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]          # [B, C, C]
        out += torch.einsum("bcp,bcd,bdq->pq", jac, hz, jac)
    return out / objective.n
