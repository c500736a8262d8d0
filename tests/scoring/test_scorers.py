"""Scorers against hand computations: signs, exact values, registry errors and missing statistics."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mft_engine.collect import GradientState
from mft_engine.errors import ConfigError
from mft_engine.models import load_model
from mft_engine.ops.reference import reference_detrimental_score
from mft_engine.scoring.base import Scorer, get_scorer, register_scorer, scorer_names
from mft_engine.scoring.inputs import MissingStatisticError, ScoringInputs
from mft_engine.scoring.objective import Objective, math_attention
from mft_engine.scoring.scorers.influence import fit_influence_solve
from mft_engine.scoring.scorers.stats import per_example_gradients

NAMES = ["bert.encoder.layer.1.output.dense.weight", "bert.encoder.layer.1.output.dense.bias",
         "bert.encoder.layer.1.output.LayerNorm.weight", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
         "classifier.weight", "classifier.bias"]
BUILTIN = ["fisher-taylor", "gradient", "influence", "magnitude", "obs", "ria", "taylor", "taylor-train", "taylor2",
           "wanda"]


def _batch(n: int, t: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    lengths[0] = t  # one full row, the others padded
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (n,), generator=g)}


@pytest.fixture(scope="module")
def setup():
    """A float64 tiny BERT (values exact in float32), 68 scoring examples in 3 padded batches, and a
    GradientState with hand-filled g and activation statistics for every nn.Linear."""
    torch.manual_seed(0)
    model = load_model("bert-tiny-random", 2, seed=0).model.double().eval()
    batches = [_batch(24, 8, 1), _batch(24, 6, 2), _batch(20, 7, 3)]
    own = dict(model.named_parameters())
    state = GradientState.zeros_like([(n, own[n]) for n in NAMES])
    gen = torch.Generator().manual_seed(5)
    for n in NAMES:
        state.grad_sum[n] = torch.randn(own[n].shape, generator=gen, dtype=torch.float32) * 1e3
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            state.act_sq[name] = torch.rand(mod.in_features, generator=gen, dtype=torch.float64) * 10
            state.act_tokens[name] = 100
    return model, batches, state


def _inputs(setup, **kw) -> ScoringInputs:
    model, batches, state = setup
    args = {"model": model, "names": list(NAMES), "state": state, "lr": 2e-5,
            "score": Objective(model, batches, list(NAMES)), "train": Objective(model, batches[:1], list(NAMES)),
            "options": {"cg_tol": 1e-10, "cg_max_iter": 400}}
    args.update(kw)
    return ScoringInputs(**args)


def _explicit_loss(model, batches, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean CE over all examples through the model's ordinary 2-D-mask forward, `values` substituted."""
    n = sum(int(b["labels"].shape[0]) for b in batches)
    total = 0.0
    with math_attention():
        for b in batches:
            x = {k: v for k, v in b.items() if k != "labels"}
            logits = functional_call(model, values, args=(), kwargs=x, strict=False).logits
            total = total + F.cross_entropy(logits, b["labels"], reduction="sum")
    return total / n


def _explicit_grad(model, batches, names):
    own = dict(model.named_parameters())
    leaf = {n: own[n].detach().clone().requires_grad_(True) for n in names}
    grads = torch.autograd.grad(_explicit_loss(model, batches, leaf), list(leaf.values()))
    return dict(zip(names, grads))


def _examples(batches):
    """Each example as a batch of one, keeping its padding."""
    return [{k: v[i:i + 1] for k, v in b.items()} for b in batches for i in range(int(b["labels"].shape[0]))]


# ----------------------------------------------------------------------------------------------- registry

def test_registry_names_and_lookup():
    assert scorer_names() == BUILTIN
    for name in BUILTIN:
        s = get_scorer(name)
        assert isinstance(s, Scorer) and s.name == name and s.description
    assert {n for n in BUILTIN if get_scorer(n).signed} == {"gradient", "taylor", "taylor-train", "taylor2",
                                                             "fisher-taylor", "influence"}
    assert get_scorer("Fisher-Taylor").name == "fisher-taylor"


def test_unknown_scorer_is_config_error_listing_names():
    with pytest.raises(ConfigError) as err:
        get_scorer("nope")
    for name in BUILTIN:
        assert name in str(err.value)


def test_duplicate_and_bad_registration():
    class Again(Scorer):
        name, signed, description = "magnitude", False, "again"

        def score(self, inputs):
            return {}

    with pytest.raises(ValueError, match="already registered"):
        register_scorer(Again)
    Again.name = "Upper"
    with pytest.raises(ValueError, match="lowercase"):
        register_scorer(Again)
    register_scorer(type(get_scorer("magnitude")))  # the same class again: a no-op
    assert scorer_names() == BUILTIN


# ------------------------------------------------------------------------------------------- missing stats

def test_missing_statistics_are_named(setup):
    model, _, state = setup
    bare = GradientState.zeros_like([(n, p) for n, p in model.named_parameters() if n in NAMES])
    cases = [("gradient", {"state": None}, "gradient_state"),
             ("wanda", {"state": None}, "gradient_state"),
             ("wanda", {"state": bare}, "activation_statistics"),
             ("ria", {"state": bare}, "activation_statistics"),
             ("taylor", {"score": None}, "score_objective"),
             ("taylor-train", {"train": None}, "training_objective"),
             ("taylor2", {"score": None}, "score_objective"),
             ("fisher-taylor", {"score": None}, "score_objective"),
             ("obs", {"score": None}, "score_objective")]
    for name, kw, what in cases:
        with pytest.raises(MissingStatisticError, match=what):
            get_scorer(name).score(_inputs(setup, **kw))
    few = copy.copy(state)
    few.grad_sum = {k: v for k, v in state.grad_sum.items() if k != "classifier.bias"}
    with pytest.raises(MissingStatisticError, match="classifier.bias"):
        get_scorer("gradient").score(_inputs(setup, state=few))
    partial = copy.copy(state)
    partial.act_sq = {k: v for k, v in state.act_sq.items() if k != "classifier"}
    with pytest.raises(MissingStatisticError, match="'classifier'"):
        get_scorer("wanda").score(_inputs(setup, state=partial))


# -------------------------------------------------------------------------------------- cheap scorers

def test_every_scorer_returns_float64_cpu_shaped_like_the_parameters(setup):
    model, _, _ = setup
    own = dict(model.named_parameters())
    inputs = _inputs(setup)  # one inputs: the statistics are shared through its cache
    fit_influence_solve(inputs)  # fit, then score: the influence scorer only loads the fit
    for name in BUILTIN:
        out = get_scorer(name).score(inputs)
        assert list(out) == NAMES
        for n in NAMES:
            assert out[n].dtype == torch.float64 and out[n].device.type == "cpu"
            assert out[n].shape == own[n].shape
            if name in ("wanda", "ria") and n not in ("bert.encoder.layer.1.output.dense.weight",
                                                      "bert.pooler.dense.weight", "classifier.weight"):
                assert torch.isnan(out[n]).all()
            else:
                assert torch.isfinite(out[n]).all()
                if not get_scorer(name).signed:
                    assert (out[n] >= 0).all()
    assert {"score_gradient", "fisher_diagonal", "score_gn_diagonal"} <= set(inputs._cache)


def test_magnitude(setup):
    model, _, _ = setup
    out = get_scorer("magnitude").score(_inputs(setup))
    for n, p in model.named_parameters():
        if n in NAMES:
            assert torch.equal(out[n], p.detach().abs())


def test_gradient_hand_values_and_detrimental_test(setup):
    model, _, state = setup
    model = copy.deepcopy(model)
    # lr = 0.25 and these θ, g: every value below is exact, so the expectations are too.
    theta = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, -1.0, 1.0], dtype=torch.float64)
    grad = torch.tensor([2.0, 6.0, 8.0, 10.0, -2.0, 0.0, 2.0, -2.0, 4.0])
    expect = torch.tensor([-0.5, -0.5, 0.0, 0.5, 0.5, 0.0, 0.5, -0.5, -1.0], dtype=torch.float64)
    with torch.no_grad():
        model.classifier.weight[0, :9] = theta
    st = copy.copy(state)
    st.grad_sum = dict(state.grad_sum)
    g = state.grad_sum["classifier.weight"].clone()
    g[0, :9] = grad
    st.grad_sum["classifier.weight"] = g
    out = get_scorer("gradient").score(_inputs(setup, model=model, state=st, lr=0.25))
    assert torch.equal(out["classifier.weight"][0, :9], expect)
    # Everywhere: negative exactly where the engine's test says detrimental, −shrink there, and
    # |θ − lr·g| − |θ| (one more rounding) elsewhere.
    for lr in (0.25, 2e-5, 1e-3):
        out = get_scorer("gradient").score(_inputs(setup, model=model, state=st, lr=lr))
        own = dict(model.named_parameters())
        for n in NAMES:
            th, gg = own[n].detach().float(), st.grad_sum[n]
            ref = reference_detrimental_score(th, gg, lr)
            assert torch.equal(out[n] < 0, ref > 0)
            assert torch.equal(torch.where(ref > 0, -ref, 0.0), torch.where(out[n] < 0, out[n], 0.0))
            lr32 = float(torch.tensor(lr, dtype=torch.float32))
            direct = (th.double() - lr32 * gg.double()).abs() - th.double().abs()
            torch.testing.assert_close(out[n], direct, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------ gradient scorers

def test_taylor_against_explicit_gradient(setup):
    model, batches, _ = setup
    grads = _explicit_grad(model, batches, NAMES)
    own = dict(model.named_parameters())
    out = get_scorer("taylor").score(_inputs(setup))
    for n in NAMES:
        torch.testing.assert_close(out[n], -grads[n] * own[n].detach(), rtol=1e-9, atol=1e-15)


def test_taylor_train_against_explicit_training_gradient(setup):
    """taylor-train: −∇L_train·θ with the eval-mode mean gradient over the training Objective's examples."""
    model, batches, _ = setup
    grads = _explicit_grad(model, batches[:1], NAMES)   # _inputs' training Objective is batches[:1]
    own = dict(model.named_parameters())
    inputs = _inputs(setup)
    out = get_scorer("taylor-train").score(inputs)
    for n in NAMES:
        torch.testing.assert_close(out[n], -grads[n] * own[n].detach(), rtol=1e-9, atol=1e-15)
    assert get_scorer("taylor-train").signed and inputs.peek("train_gradient") is not None


def test_taylor2_second_order_term_is_the_explicit_gauss_newton_diagonal(setup):
    model, batches, _ = setup
    inputs = _inputs(setup)
    t1 = get_scorer("taylor").score(inputs)
    t2 = get_scorer("taylor2").score(inputs)
    w = model.classifier.weight.detach()

    def logits(value):
        out = []
        with math_attention():
            for b in batches:
                x = {k: v for k, v in b.items() if k != "labels"}
                y = functional_call(model, {"classifier.weight": value}, args=(), kwargs=x, strict=False)
                out.append(y.logits)
        return torch.cat(out)

    z = logits(w)
    jac = torch.autograd.functional.jacobian(logits, w).reshape(z.shape[0], 2, -1)  # [n, C, P]
    p = torch.softmax(z, dim=-1)
    hz = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    gn = torch.einsum("ncp,ncd,ndp->p", jac, hz, jac) / z.shape[0]  # diag of (1/n) Σ Jᵀ H_z J
    second = (t2["classifier.weight"] - t1["classifier.weight"]).reshape(-1)
    torch.testing.assert_close(second, 0.5 * gn * w.reshape(-1).square(), rtol=1e-8, atol=1e-15)
    assert (second >= 0).all()


def test_fisher_diagonal_and_fisher_taylor_against_a_loop(setup):
    from mft_engine.scoring.scorers.stats import fisher_diagonal

    model, batches, _ = setup
    own = dict(model.named_parameters())
    examples = _examples(batches)
    fisher = {n: torch.zeros_like(own[n]) for n in NAMES}
    for ex in examples:
        for n, g in _explicit_grad(model, [ex], NAMES).items():
            fisher[n] += g.square()
    inputs = _inputs(setup, options={"per_example_memory_mb": 0.5})  # forces several chunks per batch
    got = fisher_diagonal(inputs)
    grads = _explicit_grad(model, batches, NAMES)
    out = get_scorer("fisher-taylor").score(inputs)
    for n in NAMES:
        f = fisher[n] / len(examples)
        torch.testing.assert_close(got[n], f, rtol=1e-9, atol=1e-18)
        th = own[n].detach()
        torch.testing.assert_close(out[n], -(th * grads[n] - 0.5 * th.square() * f), rtol=1e-8, atol=1e-15)


# ------------------------------------------------------------------------------------ activation scorers

class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)


W = [[1.0, -2.0, 3.0, 0.0], [0.0, 4.0, -1.0, 1.0], [2.0, 2.0, 0.0, -4.0]]


def _toy_inputs(**options) -> ScoringInputs:
    toy = _Toy().double()
    with torch.no_grad():
        toy.proj.weight.copy_(torch.tensor(W, dtype=torch.float64))
    names = [n for n, _ in toy.named_parameters()]
    state = GradientState.zeros_like(list(toy.named_parameters()))
    state.act_sq["proj"] = torch.tensor([1.0, 4.0, 9.0, 16.0], dtype=torch.float64)  # ‖X_j‖₂ = 1, 2, 3, 4
    return ScoringInputs(model=toy, names=names, state=state, options=options)


def test_wanda_hand_values_nan_and_excluded():
    scorer = get_scorer("wanda")
    out = scorer.score(_toy_inputs())
    expect = torch.tensor([[1.0, 4.0, 9.0, 0.0], [0.0, 8.0, 3.0, 4.0], [2.0, 4.0, 0.0, 16.0]],
                          dtype=torch.float64)
    assert torch.equal(out["proj.weight"], expect)
    for n in ("proj.bias", "norm.weight", "norm.bias"):
        assert torch.isnan(out[n]).all()
    assert scorer.last_excluded == 3
    assert scorer.last_excluded_names == ["proj.bias", "norm.weight", "norm.bias"]
    per_row = get_scorer("wanda").score(_toy_inputs(wanda_per_row=True))["proj.weight"]
    # Row ranks, ascending, ties by lower column:
    # [1 4 9 0] → 2 3 4 1; [0 8 3 4] → 1 4 2 3; [2 4 0 16] → 2 3 1 4.
    ranks = torch.tensor([[2, 3, 4, 1], [1, 4, 2, 3], [2, 3, 1, 4]], dtype=torch.float64)
    assert torch.equal(per_row, ranks / 4)


def test_ria_hand_values():
    scorer = get_scorer("ria")
    out = scorer.score(_toy_inputs())
    a = torch.tensor(W, dtype=torch.float64).abs()
    rows = [6.0, 6.0, 8.0]  # Σ_k |W_ik| over the inputs of output row i
    cols = [3.0, 8.0, 4.0, 5.0]  # Σ_k |W_kj| over the outputs of input column j
    expect = torch.empty(3, 4, dtype=torch.float64)
    for i in range(3):
        for j in range(4):
            expect[i, j] = (a[i, j] / rows[i] + a[i, j] / cols[j]) * (j + 1.0) ** 0.5
    torch.testing.assert_close(out["proj.weight"], expect, rtol=1e-15, atol=0.0)
    assert out["proj.weight"][0, 0].item() == pytest.approx(1 / 6 + 1 / 3)
    assert torch.isnan(out["proj.bias"]).all() and scorer.last_excluded == 3


# ------------------------------------------------------------------------------------------------- OBS

def test_per_example_gradients_match_a_loop(setup):
    model, batches, _ = setup
    obj = Objective(model, batches, list(NAMES))
    n = obj.n
    names = ["classifier.weight", "bert.pooler.dense.bias"]
    got = per_example_gradients(obj, names, n, seed=3, max_bytes=4096)  # one example per vmap call
    for i, ex in enumerate(_examples(batches)):
        want = _explicit_grad(model, [ex], names)
        for k, g in want.items():
            torch.testing.assert_close(got[k][i], g, rtol=1e-9, atol=1e-15)
    some = per_example_gradients(obj, ["classifier.bias"], 10, seed=3)
    assert some["classifier.bias"].shape == (10, 2)
    again = per_example_gradients(obj, ["classifier.bias"], 10, seed=3)
    assert torch.equal(some["classifier.bias"], again["classifier.bias"])
    with pytest.raises(ConfigError, match="68 examples"):
        per_example_gradients(obj, ["classifier.bias"], n + 1)


def test_obs_blocks_against_explicit_inverse(setup):
    model, batches, _ = setup
    names = ["classifier.weight", "classifier.bias"]
    own = dict(model.named_parameters())
    examples = _examples(batches)
    m = len(examples)
    rows = [_explicit_grad(model, [ex], names) for ex in examples]
    G = torch.stack([r["classifier.weight"].reshape(-1) for r in rows])  # [m, 256]
    gb = torch.stack([r["classifier.bias"] for r in rows])  # [m, 2]
    theta = own["classifier.weight"].detach().reshape(-1)

    def expected(lam: float, lo: int, hi: int) -> torch.Tensor:
        f = G[:, lo:hi].T @ G[:, lo:hi] / m + lam * torch.eye(hi - lo, dtype=torch.float64)
        return theta[lo:hi].square() / (2 * torch.linalg.inv(f).diagonal())

    scorer = get_scorer("obs")
    score = _inputs(setup, names=names, score=Objective(model, batches, names),
                    options={"obs_samples": m, "obs_damping": 1e-4})
    out = scorer.score(score)["classifier.weight"].reshape(-1)
    assert scorer.last_damping == 1e-4
    torch.testing.assert_close(out[50:100], expected(1e-4, 50, 100), rtol=1e-8, atol=0.0)
    # The short last block: 256 = 5 × 50 + 6.
    torch.testing.assert_close(out[250:], expected(1e-4, 250, 256), rtol=1e-8, atol=0.0)
    assert (out >= 0).all()
    # Default damping: 1e-3 × the mean diagonal of the empirical Fisher over every eligible entry.
    lam = 1e-3 * (G.square().sum() + gb.square().sum()).item() / (m * 258)
    out = scorer.score(_inputs(setup, names=names, score=Objective(model, batches, names),
                               options={"obs_samples": m}))["classifier.weight"].reshape(-1)
    assert scorer.last_damping == pytest.approx(lam, rel=1e-12)
    torch.testing.assert_close(out[:50], expected(scorer.last_damping, 0, 50), rtol=1e-8, atol=0.0)
    with pytest.raises(ConfigError, match="obs_samples=40"):
        scorer.score(_inputs(setup, names=names, options={"obs_samples": 40}))
    with pytest.raises(ConfigError, match="obs_samples=69"):
        scorer.score(_inputs(setup, names=names, options={"obs_samples": 69}))


def test_influence_against_an_explicit_solve(setup):
    """−s ⊙ θ with s = (G + λI)⁻¹ ∇L_score, G the explicit training Gauss-Newton matrix of a small block."""
    from mft_engine.scoring.curvature.hvp import explicit_gauss_newton
    from mft_engine.scoring.scorers.influence import influence_scores

    model, batches, state = setup
    block = ["classifier.weight", "classifier.bias", "bert.pooler.dense.bias"]
    train = Objective(model, batches[:1], block)
    inputs = ScoringInputs(model=model, names=block, state=state, train=train, score=Objective(model, batches, block),
                           damping=1e-3, options={"cg_tol": 1e-12, "cg_max_iter": 500})
    fit_influence_solve(inputs)  # fit, then score: the scorer only loads the fit
    scores, fit = influence_scores(inputs)
    G = explicit_gauss_newton(train)
    g = torch.cat([torch.autograd.grad(_explicit_loss(model, batches, {n: p for n, p in model.named_parameters()}),
                                       [dict(model.named_parameters())[n]])[0].reshape(-1) for n in block]).double()
    s = torch.linalg.solve(G.double() + 1e-3 * torch.eye(G.shape[0], dtype=torch.float64), g)
    theta = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in block]).double()
    got = torch.cat([scores[n].reshape(-1) for n in block])
    torch.testing.assert_close(got, -s * theta, rtol=1e-6, atol=1e-12)
    assert fit.damping == 1e-3 and fit.residuals[-1] <= 1e-10
    assert get_scorer("influence").signed


@pytest.mark.parametrize("solver", ["woodbury", "cg"])
def test_influence_solver_precision_float64(setup, solver):
    """solver_precision float64 on a float32 model: the solve runs on a float64 copy (right-hand side, factors
    or products, solution all float64) and matches the explicit float64 solve; float32 keeps float32; the
    caller's model is untouched and the two fits have different names."""
    import copy as _copy

    from mft_engine.scoring.curvature.hvp import explicit_gauss_newton
    from mft_engine.scoring.scorers.influence import InfluenceOptions, influence_scores

    model64, batches, state = setup
    model = _copy.deepcopy(model64).float()
    block = ["classifier.weight", "classifier.bias", "bert.pooler.dense.bias"]

    def run(precision):
        inputs = ScoringInputs(model=model, names=block, state=state, train=Objective(model, batches[:1], block),
                               score=Objective(model, batches, block), damping=1e-3,
                               options={"influence_solver": solver, "solver_precision": precision,
                                        "cg_tol": 1e-13, "cg_max_iter": 500})
        fit = fit_influence_solve(inputs)
        return fit, influence_scores(inputs)[0], inputs

    f64, s64, in64 = run("float64")
    f32, _, _ = run("float32")
    assert f64.name == f32.name + "_float64"
    assert all(t.dtype == torch.float64 for t in f64.solution.values())
    assert all(t.dtype == torch.float32 for t in f32.solution.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if solver == "woodbury":
        low = in64.peek("train_gn_lowrank_float64")
        assert low.b.dtype == torch.float64 and next(low.objective.model.parameters()).dtype == torch.float64
    # the explicit float64 solve on the same (float32-valued) weights
    wide = _copy.deepcopy(model).double()
    G = explicit_gauss_newton(Objective(wide, batches[:1], block)).double()
    own = dict(wide.named_parameters())
    loss = _explicit_loss(wide, batches, {n: p for n, p in wide.named_parameters()})
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, [own[n] for n in block])])
    s = torch.linalg.solve(G + 1e-3 * torch.eye(G.shape[0], dtype=torch.float64), g)
    theta = torch.cat([own[n].detach().reshape(-1) for n in block])
    torch.testing.assert_close(torch.cat([s64[n].reshape(-1) for n in block]), -s * theta, rtol=1e-8, atol=1e-14)
    assert f64.true_residual < 1e-8
    with pytest.raises(ConfigError, match="solver_precision"):
        InfluenceOptions(solver_precision="float16")
