"""Hessian- and Gauss-Newton-vector products against explicit matrices and finite differences (float64)."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine.errors import ConfigError
from mft_engine.models import load_model
from mft_engine.scoring.curvature.hvp import (
    auto_gnvp_method,
    batched_gnvp,
    batched_hvp,
    default_damping,
    dot,
    explicit_gauss_newton,
    explicit_hessian,
    flatten,
    gauss_newton_diagonal,
    gnvp,
    hvp,
    mean_diagonal,
    random_like,
    unflatten,
)
from mft_engine.scoring.objective import Objective, eval_objective

from ..conftest import synthetic_batch

HEAD = ["classifier.weight", "classifier.bias"]
# A block that crosses the non-linear parts: the head, a LayerNorm and an attention bias (P = 514).
BLOCK = HEAD + ["bert.encoder.layer.1.output.LayerNorm.weight", "bert.encoder.layer.0.attention.self.query.bias"]


def tiny_objective(names, num_labels=2, seed=0):
    model = load_model("bert-tiny-random", num_labels, seed=seed).model
    # Two batches with padding (random lengths), so the 1/n weighting across batches is exercised.
    batches = [synthetic_batch(5, 9, seed + 1, vocab=1000, num_labels=num_labels),
               synthetic_batch(4, 7, seed + 2, vocab=1000, num_labels=num_labels)]
    return eval_objective(model, batches, names, dtype=torch.float64)


@pytest.fixture(scope="module")
def block():
    obj = tiny_objective(BLOCK)
    return obj, explicit_hessian(obj), explicit_gauss_newton(obj)


def vector(obj, seed):
    return random_like(obj.params(), torch.Generator().manual_seed(seed))


def flat(obj, p):
    return flatten(p, obj.names)


def test_flatten_roundtrip_and_dot(block):
    obj, _, _ = block
    v, w = vector(obj, 1), vector(obj, 2)
    back = unflatten(flat(obj, v), obj.params())
    assert list(back) == obj.names and all(torch.equal(back[n], v[n]) for n in obj.names)
    assert torch.allclose(dot(v, w), flat(obj, v) @ flat(obj, w))
    with pytest.raises(ConfigError, match="does not match"):
        unflatten(torch.zeros(3, dtype=torch.float64), obj.params())


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_hvp_matches_explicit_hessian(block, mode):
    obj, H, _ = block
    assert torch.allclose(H, H.T, atol=1e-12)
    for seed in (1, 2):
        v = vector(obj, seed)
        got = flat(obj, hvp(obj, v, mode=mode))
        assert torch.allclose(got, H @ flat(obj, v), rtol=1e-9, atol=1e-11)


def test_hvp_matches_central_differences_of_the_gradient(block):
    obj, _, _ = block
    theta, v = obj.params(), vector(obj, 3)
    eps = 1e-5
    plus = obj.gradient({n: theta[n] + eps * v[n] for n in obj.names})
    minus = obj.gradient({n: theta[n] - eps * v[n] for n in obj.names})
    fd = (flat(obj, plus) - flat(obj, minus)) / (2 * eps)
    for mode in ("reverse", "forward"):
        got = flat(obj, hvp(obj, v, mode=mode))
        assert torch.allclose(got, fd, rtol=1e-6, atol=1e-8), (mode, (got - fd).abs().max())


def test_hessian_is_indefinite_but_gauss_newton_is_psd(block):
    _obj, H, G = block
    assert torch.allclose(G, G.T, atol=1e-12)
    eg = torch.linalg.eigvalsh(G)
    assert eg.min() >= -1e-10 * eg.max()
    # The LayerNorm / attention directions carry negative curvature in H, which G drops.
    assert torch.linalg.eigvalsh(H).min() < -1e-6 * eg.max()


def test_gnvp_matches_explicit_gauss_newton(block):
    obj, _, G = block
    for seed in (4, 5):
        v = vector(obj, seed)
        gv = gnvp(obj, v)
        assert torch.allclose(flat(obj, gv), G @ flat(obj, v), rtol=1e-9, atol=1e-11)
        assert float(dot(v, gv)) >= 0.0


def test_gauss_newton_equals_hessian_on_the_head():
    # The logits are affine in the classifier's weight and bias, so G = H exactly there: an independent
    # check of explicit_gauss_newton's J_eᵀ H_z J_e against autograd's Hessian.
    obj = tiny_objective(HEAD)
    assert torch.allclose(explicit_gauss_newton(obj), explicit_hessian(obj), rtol=1e-9, atol=1e-12)


def test_block_restriction_is_the_diagonal_block(block):
    obj, H, G = block
    sub_names = ["bert.encoder.layer.1.output.LayerNorm.weight"]
    sub = Objective(obj.model, obj.batches, sub_names)
    start = 2 * 128 + 2  # after the head's weight and bias in flatten order
    idx = slice(start, start + 128)
    v = vector(sub, 6)
    vb = v[sub_names[0]]
    assert torch.allclose(gnvp(sub, v)[sub_names[0]], G[idx, idx] @ vb, rtol=1e-9, atol=1e-11)
    assert torch.allclose(hvp(sub, v)[sub_names[0]], H[idx, idx] @ vb, rtol=1e-9, atol=1e-11)


def test_batched_products_equal_loops(block):
    obj, _, _ = block
    vs = [vector(obj, s) for s in range(10, 14)]
    loops = {"gn": [flat(obj, gnvp(obj, v)) for v in vs], "h": [flat(obj, hvp(obj, v)) for v in vs]}
    runs = [("gn", lambda c: batched_gnvp(obj, vs, chunk_size=c, method="vmap")),
            ("gn", lambda c: batched_gnvp(obj, vs, method="factors")),
            ("gn", lambda c: batched_gnvp(obj, vs)),
            ("h", lambda c: batched_hvp(obj, vs, chunk_size=c))]
    for kind, run in runs:
        for chunk in (None, 3):
            got = run(chunk)
            assert len(got) == len(vs) and all(list(g) == obj.names for g in got)
            for g, ref in zip(got, loops[kind]):
                assert torch.allclose(flat(obj, g), ref, rtol=1e-10, atol=1e-13)
    assert batched_gnvp(obj, []) == []
    assert auto_gnvp_method(obj, 1) == "vmap" and auto_gnvp_method(obj, 2) == "factors"
    with pytest.raises(ConfigError, match="method"):
        batched_gnvp(obj, vs, method="dense")


def test_factor_products_in_small_blocks_and_three_classes(monkeypatch):
    import mft_engine.scoring.curvature.hvp as hvp_module

    obj = tiny_objective(["classifier.weight", "bert.encoder.layer.0.output.dense.bias"], num_labels=3, seed=2)
    vs = [vector(obj, s) for s in range(20, 26)]
    # Blocks of 4 factors: 9 examples × 3 classes = 27 factors, so 7 blocks, the last one partial.
    row_bytes = sum(v.numel() for v in vs[0].values()) * 8
    monkeypatch.setattr(hvp_module, "FACTOR_BLOCK_BYTES", 4 * row_bytes)
    got = batched_gnvp(obj, vs, method="factors")
    G = explicit_gauss_newton(obj)
    for g, v in zip(got, vs):
        assert torch.allclose(flat(obj, g), G @ flat(obj, v), rtol=1e-9, atol=1e-12)


def test_gauss_newton_diagonal_is_exact_for_two_classes(block):
    obj, _, G = block
    diag = gauss_newton_diagonal(obj)
    assert list(diag) == obj.names
    assert torch.allclose(flat(obj, diag), torch.diagonal(G), rtol=1e-9, atol=1e-14)
    lam, mean = default_damping(obj)
    assert mean == pytest.approx(float(torch.diagonal(G).mean()), rel=1e-9)
    assert lam == pytest.approx(1e-3 * mean)
    assert mean_diagonal(obj, diagonal=diag) == pytest.approx(mean, rel=1e-12)


def test_gauss_newton_diagonal_is_exact_for_three_classes():
    obj = tiny_objective(["classifier.bias", "bert.encoder.layer.1.output.LayerNorm.bias"], num_labels=3, seed=1)
    # A left-padded batch too: each example is cut after its last real token only, so it stays exact.
    left = synthetic_batch(4, 8, 9, vocab=1000, num_labels=3)
    left = {k: (v.flip(1) if v.dim() == 2 else v) for k, v in left.items()}
    obj = Objective(obj.model, [*obj.batches, left], obj.names)
    G = explicit_gauss_newton(obj)
    assert torch.allclose(flat(obj, gauss_newton_diagonal(obj)), torch.diagonal(G), rtol=1e-9, atol=1e-14)
    v = vector(obj, 7)
    assert torch.allclose(flat(obj, gnvp(obj, v)), G @ flat(obj, v), rtol=1e-9, atol=1e-12)


def test_bad_inputs_are_named(block):
    obj, _, _ = block
    v = vector(obj, 8)
    with pytest.raises(ConfigError, match="mode"):
        hvp(obj, v, mode="sideways")
    with pytest.raises(ConfigError, match="lacks parameters"):
        gnvp(obj, {n: v[n] for n in obj.names[1:]})
    with pytest.raises(ConfigError, match="shape"):
        gnvp(obj, {**v, "classifier.bias": torch.zeros(3, dtype=torch.float64)})
    big = Objective(obj.model, obj.batches, ["bert.encoder.layer.0.attention.self.query.weight"])
    with pytest.raises(ConfigError, match="at most"):
        explicit_hessian(big)


def test_products_work_inside_no_grad(block):
    obj, H, G = block
    v = vector(obj, 9)
    with torch.no_grad():
        assert torch.allclose(flat(obj, hvp(obj, v)), H @ flat(obj, v), rtol=1e-9, atol=1e-11)
        assert torch.allclose(flat(obj, hvp(obj, v, mode="forward")), H @ flat(obj, v), rtol=1e-9, atol=1e-11)
        assert torch.allclose(flat(obj, gnvp(obj, v)), G @ flat(obj, v), rtol=1e-9, atol=1e-11)
        assert torch.allclose(flat(obj, gauss_newton_diagonal(obj)), torch.diagonal(G), rtol=1e-9, atol=1e-14)


def test_bench_hvp_cli_prints_one_json_object(capsys):
    from mft_engine.cli import main

    code = main(["bench", "hvp", "--model", "bert-tiny-random", "--samples", "4", "--vectors", "2",
                 "--repeats", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["product"] == "gauss-newton" and data["vectors"] == 2 and data["samples"] == 4
    for key in ("loop_per_vector_s", "batched_per_vector_s", "speedup", "gradient_s", "parameters", "machine"):
        assert key in data, key
    assert data["speedup"] == pytest.approx(data["loop_per_vector_s"] / data["batched_per_vector_s"])
    assert data["max_rel_diff"] < 1e-4 and data["vmap_max_rel_diff"] < 1e-4
    assert data["batched_method"] == "factors" and "vmap_speedup" in data
    assert main(["bench", "hvp", "--vectors", "0"]) == 2
