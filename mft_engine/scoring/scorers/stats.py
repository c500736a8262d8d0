"""The statistics scorers share: ∇L_score, the Fisher diagonal, per-example gradients, activation norms.

Each `inputs`-taking function caches its result in `inputs.cached`, so several scorers over one
ScoringInputs pay for a statistic once. Results are float64 on CPU unless said otherwise.

Per-example gradients use torch.func: vmap(grad(loss of one example)) over the examples of one batch,
`chunk` examples at a time, so memory is chunk × (eligible parameters) × itemsize, bounded by a budget.
Inside vmap the padding mask is handed to the model as a prepared 4-D boolean mask [1, 1, 1, T]:
transformers' mask builder otherwise tests `padding_mask.all()`, a data-dependent branch vmap cannot
trace; a prepared 4-D mask is used as is, and it is the same mask.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.func import grad, vmap

from ...errors import ConfigError
from ..inputs import DEFAULT_MEMORY_MB, MissingStatisticError, ScoringInputs, StatisticsOptions
from ..objective import Objective


def memory_budget(inputs: ScoringInputs) -> int:
    """Bytes per-example work may hold at once: StatisticsOptions.per_example_memory_mb (default 1024) MiB."""
    return int(float(inputs.settings(StatisticsOptions).per_example_memory_mb) * (1 << 20))


def linear_weight_modules(model: torch.nn.Module) -> dict[str, str]:
    """{parameter name: module name} for the `weight` of every nn.Linear in `model` (e.g. the classifier)."""
    return {f"{name}.weight" if name else "weight": name
            for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


def score_gradient(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """g_s = ∇L_score: the gradient of the scoring-half mean loss w.r.t. each eligible parameter.

    Returns {name: float64 CPU tensor shaped like the parameter} for `inputs.names`. Cost (once per
    inputs): one forward + backward over the scoring half, in the model's dtype; memory: one gradient
    per eligible parameter in that dtype, plus the float64 copy.
    """
    inputs.require("score_gradient", score_objective=inputs.score)
    return objective_gradient(inputs, "score_gradient", inputs.score)


def objective_gradient(inputs: ScoringInputs, key: str, objective) -> dict[str, torch.Tensor]:
    """∇ of `objective`'s mean loss at the model's θ w.r.t. each of `inputs.names`, as {name: float64 CPU
    tensor}, computed once and cached in `inputs` under `key`. Cost: one forward + backward over the
    objective's examples in the model's dtype."""
    def compute() -> dict[str, torch.Tensor]:
        theta = inputs.theta()
        g = objective.gradient({n: theta[n] for n in inputs.names})
        return {n: g[n].detach().to("cpu", torch.float64) for n in inputs.names}

    return inputs.cached(key, compute)


def _example_rows(objective: Objective, m: int | None, seed: int) -> list[torch.Tensor]:
    """Per batch, the int64 rows (ascending) of the chosen examples: all (m None) or m of the n examples
    drawn without replacement by a torch.Generator seeded with `seed`."""
    sizes = [int(b["labels"].shape[0]) for b in objective.batches]
    n = sum(sizes)
    if m is None:
        return [torch.arange(s) for s in sizes]
    if not 1 <= m <= n:
        raise ConfigError(f"{m} per-example gradients asked for, but the objective has {n} examples; "
                          f"expected 1 to {n}")
    flat = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m].sort().values
    out, start = [], 0
    for s in sizes:
        inside = (flat >= start) & (flat < start + s)
        out.append(flat[inside] - start)
        start += s
    return out


def _chunk_size(objective: Objective, names: Sequence[str], max_bytes: int) -> int:
    """Examples per vmap call so that their gradients (×3 for the float64 widening and backward buffers)
    fit in `max_bytes`; at least 1."""
    own = dict(objective.model.named_parameters())
    per_example = sum(own[n].numel() * own[n].element_size() for n in names)
    return max(1, int(max_bytes // max(3 * per_example, 1)))


def _per_example_chunks(objective: Objective, names: Sequence[str], rows: list[torch.Tensor],
                        chunk: int) -> Iterator[dict[str, torch.Tensor]]:
    """Yields {name: [c, *shape]} per-example gradients of the per-example loss ℓ (not divided by n),
    for the chosen rows of each batch in order, at most `chunk` examples per yield; model dtype."""
    own = dict(objective.model.named_parameters())
    params = {n: own[n].detach() for n in names}

    def one_loss(p: dict[str, torch.Tensor], example: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.unsqueeze(0) for k, v in example.items()}
        mask = batch.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            batch["attention_mask"] = mask.bool()[:, None, None, :]
        return objective.batch_loss_sum(p, batch)

    per_example = vmap(grad(one_loss), in_dims=(None, 0))
    for batch, chosen in zip(objective.batches, rows):
        for start in range(0, chosen.numel(), chunk):
            idx = chosen[start:start + chunk]
            if idx.numel() == 0:
                continue
            examples = {k: v[idx] for k, v in batch.items()}
            # grad() differentiates inside regardless; the outer no_grad keeps autograd from also recording
            # a graph from the frozen parameters (which require grad) into the results, holding activations.
            with torch.no_grad():
                grads = per_example(params, examples)
            yield grads


def per_example_gradients(objective: Objective, names: Sequence[str], m: int, seed: int = 0,
                          max_bytes: int = DEFAULT_MEMORY_MB << 20) -> dict[str, torch.Tensor]:
    """Per-example gradients ∇ℓ_e (ℓ_e: one example's cross-entropy) of m examples of `objective`.

    The m examples are drawn without replacement with seed `seed` (the same ones for the same seed) and
    kept in batch order. Returns {name: [m, *shape] tensor} in the model's dtype, on the model's device;
    ConfigError unless 1 ≤ m ≤ objective.n. Cost: one vmap(grad) pass over the m examples (a forward +
    backward each), `max_bytes` / (3 × gradient bytes) examples at a time; memory: the result itself,
    m × Σ numel(names) × itemsize (restrict `names` to bound it).
    """
    names = list(names)
    rows = _example_rows(objective, m, seed)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for g in _per_example_chunks(objective, names, rows, _chunk_size(objective, names, max_bytes)):
        for n in names:
            parts[n].append(g[n])
    return {n: torch.cat(parts[n]) for n in names}


def squared_gradient_sum(objective: Objective, names: Sequence[str], m: int | None = None, seed: int = 0,
                         max_bytes: int = DEFAULT_MEMORY_MB << 20) -> dict[str, torch.Tensor]:
    """Σ_e (∇ℓ_e)² elementwise over all examples (m None) or the m examples per_example_gradients draws
    with the same seed. Returns {name: float64 CPU tensor, the parameter's shape}.

    Cost: one vmap(grad) pass over those examples; memory: a chunk of per-example gradients (bounded by
    `max_bytes`) plus one float64 accumulator per parameter.
    """
    names = list(names)
    own = dict(objective.model.named_parameters())
    acc = {n: torch.zeros(own[n].shape, dtype=torch.float64) for n in names}
    rows = _example_rows(objective, m, seed)
    for g in _per_example_chunks(objective, names, rows, _chunk_size(objective, names, max_bytes)):
        for n in names:
            acc[n] += g[n].detach().to("cpu", torch.float64).square().sum(0)
    return acc


def fisher_diagonal(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """F_ii = (1/n) Σ_e (∂ℓ_e/∂θ_i)² over the n scoring-half examples (the empirical Fisher's diagonal).

    Returns {name: float64 CPU tensor shaped like the parameter} for `inputs.names`. Cost (once per
    inputs): one per-example forward + backward pass over the scoring half (vmap), in the model's dtype;
    memory: per-example gradients of a chunk of examples, bounded by StatisticsOptions.per_example_memory_mb.
    """
    inputs.require("fisher_diagonal", score_objective=inputs.score)

    def compute() -> dict[str, torch.Tensor]:
        sums = squared_gradient_sum(inputs.score, inputs.names, None, 0, memory_budget(inputs))
        return {n: s / inputs.score.n for n, s in sums.items()}

    return inputs.cached("fisher_diagonal", compute)


def activation_norms(inputs: ScoringInputs, module_name: str, in_features: int | None = None) -> torch.Tensor:
    """‖X_j‖₂ = sqrt(Σ x_j²) per input feature j of the nn.Linear `module_name`, float64 [in_features].

    The sum runs over every real (non-padding) token the collection pass fed that module (one row per
    sample for the pooler and classifier), as Wanda defines it: not divided by the token count.
    MissingStatisticError when the inputs have no GradientState, it has no statistics for the module,
    or (given `in_features`) they have another length. Cost: one sqrt over in_features values, cached
    per module.
    """
    state = inputs.state
    inputs.require("activation_norms", gradient_state=state)
    inputs.require("activation_norms", activation_statistics=state.act_sq)
    if module_name not in state.act_sq:
        raise MissingStatisticError(f"the gradient state has no activation statistics for nn.Linear "
                                    f"{module_name!r}; collect with activation statistics on this model")
    if in_features is not None and tuple(state.act_sq[module_name].shape) != (in_features,):
        raise MissingStatisticError(f"the activation statistics of nn.Linear {module_name!r} have shape "
                                    f"{tuple(state.act_sq[module_name].shape)}, expected ({in_features},); "
                                    "the gradient state was collected on another model")
    return inputs.cached(f"activation_norms/{module_name}",
                         lambda: state.act_sq[module_name].detach().to("cpu", torch.float64).sqrt())


def score_linear_weights(inputs: ScoringInputs, scorer: str,
                         fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Activation-aware scores of every nn.Linear weight among inputs.names: fn(|W| as float64 [out, in],
    ‖X‖₂ per input feature [in]) → float64 [out, in]; every other tensor (biases, LayerNorm, embeddings)
    all NaN ("not scored"). Returns (scores by name, the names left unscored). Raises
    MissingStatisticError (naming `scorer`) without a GradientState with activation statistics.
    Cost: fn over each Linear weight."""
    from ..base import as_scores

    state = inputs.state
    inputs.require(scorer, gradient_state=state)
    inputs.require(scorer, activation_statistics=state.act_sq)
    modules = linear_weight_modules(inputs.model)
    theta = inputs.theta()
    out, excluded = {}, []
    for n in inputs.names:
        w = as_scores(theta[n])
        if n not in modules:
            excluded.append(n)
            out[n] = torch.full(w.shape, float("nan"), dtype=torch.float64)
            continue
        out[n] = fn(w, activation_norms(inputs, modules[n], w.shape[1]))
    return out, excluded


def second_order_scores(inputs: ScoringInputs, diagonal: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """−g_s·θ + ½ d·θ² per eligible parameter (float64): the loss change of zeroing θ to second order
    with curvature diagonal d (taylor2: the Gauss-Newton diagonal; fisher-taylor: the empirical Fisher).
    Cost: ∇L_score (shared) plus two passes over the parameters."""
    from ..base import as_scores

    g = score_gradient(inputs)
    theta = inputs.theta()
    out = {}
    for n in inputs.names:
        th = as_scores(theta[n])
        out[n] = -(g[n] * th) + 0.5 * diagonal[n] * th.square()
    return out
