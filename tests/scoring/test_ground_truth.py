"""Ground truth of single-parameter removal: the fast oracle against the HF forward, zero, HF forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mft_engine.errors import ConfigError, DataError
from mft_engine.models import load_model
from mft_engine.scoring.ground_truth import RemovalOracle, naive_delta, naive_joint_delta, naive_loss

TOKENS = 60  # token ids 1000..1059 (plus [CLS] 101 / [SEP] 102), so embedding rows are shared by examples


def make_batches(num_labels: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Three batches of different widths, right padding, sentence pairs in token_type_ids."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, width in ((5, 9), (4, 14), (3, 6)):
        lengths = torch.randint(3, width + 1, (n,), generator=g)
        lengths[0] = width                                      # one row without padding
        ids = torch.randint(1000, 1000 + TOKENS, (n, width), generator=g)
        ids[:, 0] = 101
        pos = torch.arange(width)[None, :]
        mask = (pos < lengths[:, None]).long()
        ids[torch.arange(n), lengths - 1] = 102
        tt = ((pos >= (lengths[:, None] // 2)) & (mask == 1)).long()
        out.append({"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": tt * mask,
                    "labels": torch.randint(0, num_labels, (n,), generator=g)})
    return out


def perturbed_tiny(num_labels: int = 2, seed: int = 0) -> torch.nn.Module:
    """bert-tiny-random with LayerNorm, biases, head and q/k scales moved off their init, so that every
    parameter kind changes the loss."""
    model = load_model("bert-tiny-random", num_labels, seed=seed).model
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "query.weight" in name or "key.weight" in name:
                p.mul_(5)
            elif name == "classifier.weight":
                p.copy_(0.5 * r)
    return model


@pytest.fixture(scope="module")
def model():
    return perturbed_tiny()


@pytest.fixture(scope="module")
def batches():
    return make_batches()


@pytest.fixture(scope="module")
def oracle(model, batches):
    return RemovalOracle(model, batches)


def items_for_every_tensor(model, batches) -> list[tuple[str, int]]:
    """For each parameter tensor: its largest-|value| entry and a random one; for the embeddings, rows the
    data reads (and one it does not)."""
    rng = np.random.default_rng(0)
    hidden = model.config.hidden_size
    used = torch.cat([b["input_ids"][b["attention_mask"] == 1] for b in batches]).unique()
    items = []
    for name, p in model.named_parameters():
        flat = p.detach().view(-1)
        if name.endswith("word_embeddings.weight"):
            rows = [1003, 101, 29000]                           # a content token, [CLS], a token never read
            items += [(name, r * hidden + int(rng.integers(hidden))) for r in rows]
            assert 1003 in used.tolist() and 29000 not in used.tolist()
            continue
        if name.endswith("position_embeddings.weight"):
            items += [(name, r * hidden + int(rng.integers(hidden))) for r in (0, 7, 13, 300)]
            continue
        items.append((name, int(flat.abs().argmax())))
        items.append((name, int(rng.integers(flat.numel()))))
    return items


def test_base_loss_matches_hf_forward(oracle, model, batches):
    ref = naive_loss(model, batches, torch.float64)
    assert abs(oracle.base_loss - ref) <= 1e-13 * ref
    assert oracle.n == sum(len(b["labels"]) for b in batches)
    assert oracle.cache_bytes > 0


def test_every_parameter_tensor_matches_naive(oracle, model, batches):
    items = items_for_every_tensor(model, batches)
    names = {n for n, _ in model.named_parameters()}
    assert {n for n, _ in items} == names
    done = []
    fast = oracle.delta(items, on_item=done.append)
    assert done[-1] == len(items) and done == sorted(done)
    assert oracle.last_rate > 0 and sum(t["items"] for t in oracle.timings.values()) <= len(items)
    tol = 1e-12 * oracle.base_loss
    bad = []
    nonzero = 0
    for (name, idx), f in zip(items, fast):
        ref = naive_delta(model, batches, name, idx)
        nonzero += abs(ref) > 1e-9
        if abs(f - ref) > tol:
            bad.append((name, idx, f, ref))
    assert not bad, bad
    assert nonzero >= len(items) - 12   # the key biases, the unread word row, position 300 and chance give ~0


def _per_example_ce(model, batches) -> torch.Tensor:
    """Per-example CE through the HF forward in float64, in the oracle's packed order (length, then position)."""
    import copy

    import torch.nn.functional as F

    from mft_engine.scoring.objective import math_attention, model_inputs

    m = copy.deepcopy(model).double().eval()
    ce, keys = [], []
    with torch.no_grad(), math_attention():
        for b in batches:
            ce.append(F.cross_entropy(m(**model_inputs(b)).logits, b["labels"], reduction="none"))
            keys += b["attention_mask"].sum(1).tolist()
    ce = torch.cat(ce)
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    return ce[order]


def test_per_example_changes_are_the_hf_per_example_loss_changes(oracle, model, batches):
    """delta_per_example: ΔL exactly as delta gives it, and each row the per-example CE change of the HF
    forward, zero, forward (packed order), averaging to ΔL; items that touch few sequences fill only those."""
    hidden = model.config.hidden_size
    items = oracle.random_items(5, seed=3) + [("classifier.bias", 1), ("bert.pooler.dense.weight", 5),
                                              ("bert.embeddings.word_embeddings.weight", 1003 * hidden + 2),
                                              ("bert.embeddings.word_embeddings.weight", 29000 * hidden + 2),
                                              ("bert.embeddings.LayerNorm.weight", 4)]
    d, changes = oracle.delta_per_example(items)
    assert np.array_equal(d, oracle.delta(items))
    assert changes.shape == (len(items), oracle.n) and changes.dtype == np.float64
    np.testing.assert_allclose(changes.mean(1), d, rtol=1e-9, atol=1e-16)
    assert not changes[-2].any()                      # a word row no example reads
    base = _per_example_ce(model, batches)
    params = dict(model.named_parameters())
    for k in (0, 5, 7):                               # a layer entry, the classifier, an embedding row
        name, idx = items[k]
        flat = params[name].data.view(-1)
        old = flat[idx].item()
        flat[idx] = 0.0
        try:
            ref = (_per_example_ce(model, batches) - base).numpy()
        finally:
            flat[idx] = old
        np.testing.assert_allclose(changes[k], ref, rtol=0, atol=1e-12 * oracle.base_loss)
    assert np.count_nonzero(changes[7]) < oracle.n    # the row is read by some sequences only


def test_stacking_does_not_change_results(model, batches, oracle):
    items = oracle.random_items(12, seed=3)
    single = RemovalOracle(model, batches, stack_bytes=1).delta(items)
    assert np.allclose(oracle.delta(items), single, rtol=0, atol=1e-14 * oracle.base_loss)


def test_stacking_budget_follows_the_device(monkeypatch):
    from mft_engine.scoring.ground_truth import oracle as mod

    assert mod.default_stack_bytes(torch.device("cpu")) == mod.CPU_STACK_BYTES
    cuda = torch.device("cuda", 0)
    for free, want in ((40 << 30, 10 << 30),                    # a quarter of what is free
                       (200 << 30, mod.CUDA_STACK_MAX_BYTES),   # capped
                       (100 << 20, mod.CPU_STACK_BYTES)):       # never below the CPU's
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 << 30))
        assert mod.default_stack_bytes(cuda) == want
    with pytest.raises(ConfigError, match="stacking budget 0"):
        RemovalOracle(perturbed_tiny(), make_batches(), stack_bytes=0)


def test_out_of_memory_halves_the_stack(model, batches, oracle, monkeypatch, caplog):
    items = [it for it in oracle.random_items(40, seed=5) if it[0].startswith("bert.encoder.layer.1.")]
    assert len(items) >= 5
    o = RemovalOracle(model, batches, stack_bytes=1 << 40)
    assert o.stack_copies >= len(items)
    real, seen = o._layer_deltas, []

    def tight(layer, changes):  # a device that holds two perturbed copies at most
        seen.append(len(changes))
        if len(changes) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(layer, changes)

    monkeypatch.setattr(o, "_layer_deltas", tight)
    with caplog.at_level("WARNING", logger="mft_engine"):
        got, changes = o.delta_per_example(items)
    # the first stack failed, and the stacks of two that followed covered every item it held once
    assert seen[0] > 2 and o.stack_copies == 2 and sum(n for n in seen if n <= 2) == seen[0]
    assert "ran out of device memory" in caplog.text
    want, want_changes = oracle.delta_per_example(items)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * oracle.base_loss)
    np.testing.assert_allclose(changes, want_changes, rtol=0, atol=1e-13)

    def none_fits(layer, changes):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(o, "_layer_deltas", none_fits)
    with pytest.raises(torch.OutOfMemoryError):     # one copy that does not fit is the user's to see
        o.delta(items[:1])


def test_zero_valued_parameter_gives_exact_zero(batches):
    m = perturbed_tiny()
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    with torch.no_grad():
        dict(m.named_parameters())[name].view(-1)[17] = 0.0
    o = RemovalOracle(m, batches)
    assert o.delta([(name, 17)])[0] == 0.0
    assert o.delta([("bert.encoder.layer.1.attention.self.key.bias", 3)])[0] == 0.0   # softmax shift


def test_joint_delta(oracle, model, batches):
    one = ("bert.encoder.layer.0.attention.output.dense.weight", 555)
    assert abs(oracle.joint_delta([one]) - oracle.delta([one])[0]) <= 1e-12 * oracle.base_loss
    several = oracle.random_items(6, seed=5) + [("classifier.bias", 1), ("bert.embeddings.LayerNorm.weight", 4)]
    ref = naive_joint_delta(model, batches, several)
    assert abs(oracle.joint_delta(several) - ref) <= 1e-12 * oracle.base_loss
    assert oracle.joint_delta([]) == 0.0
    # the oracle's internal copy is restored exactly: the same item gives the same ΔL after the joint call
    assert oracle.delta([one])[0] == oracle.delta([one])[0]


def test_noise_floor_float64_is_tiny(oracle):
    floor = oracle.noise_floor(n_repeats=4, seed=1)
    assert floor["n_noop"] == 8 and floor["n_regroup"] == 4
    assert floor["max"] < 1e-13 * oracle.base_loss
    assert floor["relative_max"] < 1e-13 and "float32_allowed" not in floor


def test_noise_floor_from_parts_measured_elsewhere_is_the_same(oracle):
    """What several processes do: each measures some of the parts, and the floor assembled from them is the
    one-process floor bit for bit (every part is the same computation wherever it runs)."""
    whole = oracle.noise_floor(n_repeats=3, seed=2)
    parts = oracle.noise_parts(n_repeats=3, seed=2)
    assert len(parts) == 1 + 3 + 4 and all(c > 0 for c in parts.values())
    assert parts["noop_stacked"] == pytest.approx(sum(parts[f"noop_alone_{k}"] for k in range(3)))
    some = {p: oracle.measure_noise(p, n_repeats=3, seed=2) for p in list(parts)[::2]}
    assert oracle.noise_floor(n_repeats=3, seed=2, measured=some) == whole
    every = {p: oracle.measure_noise(p, n_repeats=3, seed=2) for p in parts}
    assert oracle.noise_floor(n_repeats=3, seed=2, measured=every) == whole
    with pytest.raises(ValueError, match="unknown noise part"):
        oracle.measure_noise("noop_sideways")


def test_item_costs_follow_what_an_item_reruns(oracle):
    n_layers = len(oracle.weights.layers)
    emb, row = "bert.embeddings.word_embeddings.weight", oracle.weights.hidden
    read = int(oracle.packed.input_ids[5])
    unread = next(t for t in range(1000, 30000) if not bool((oracle.packed.input_ids == t).any()))
    items = [(f"bert.encoder.layer.{L}.attention.self.query.weight", 3) for L in range(n_layers)]
    items += [(f"bert.encoder.layer.0.{m}", 3) for m in ("intermediate.dense.weight", "attention.self.key.bias")]
    items += [("bert.embeddings.LayerNorm.weight", 1), (emb, read * row), (emb, unread * row), ("classifier.weight", 1)]
    c = oracle.item_costs(items)
    layers = c[:n_layers]
    assert np.all(np.diff(layers) < 0)  # an earlier layer re-runs more
    assert c[n_layers] < layers[0]      # the feed-forward side of a layer re-runs less than its attention side
    assert c[n_layers + 1] < 0.1        # a key bias changes nothing
    ln, word, none, head = c[n_layers + 2:]
    assert abs(ln - layers[0]) < 0.2 and layers[0] > 1  # the whole encoder, or all of it but a query
    assert 0 < word <= ln and none < 0.1 and head < 0.1


def test_float32_oracle_agrees_with_float64(model, batches, oracle):
    o32 = RemovalOracle(model, batches, dtype=torch.float32)
    items = oracle.random_items(10, seed=7) + [("classifier.weight", 3), ("bert.pooler.dense.bias", 9)]
    d64, d32 = oracle.delta(items), o32.delta(items)
    assert np.all(np.abs(d32 - d64) <= 1e-5 * oracle.base_loss + 1e-2 * np.abs(d64))
    floor = o32.noise_floor(n_repeats=2, pilot=6, reference=oracle)
    assert floor["pilot_max_abs_diff"] < 1e-5 * oracle.base_loss
    assert isinstance(floor["float32_allowed"], bool) and floor["pilot_median_abs_delta"] > 0
    # the pilot on given items (a pipeline's judged items and their float32 ΔL): figures over exactly those
    given = o32.noise_floor(n_repeats=2, pilot=100, reference=oracle, pilot_items=items, pilot_delta=d32)
    assert given["pilot_n"] == len(items)
    assert given["pilot_max_abs_diff"] == pytest.approx(float(np.max(np.abs(d32 - d64))), rel=0, abs=0)
    flips = int(np.sum(np.sign(d32) != np.sign(d64)))
    assert given["pilot_sign_disagreements"] == flips and given["pilot_sign_disagreement_rate"] == flips / len(items)
    assert 0.0 <= given["pilot_sign_disagreement_ci_low"] <= flips / len(items) <= given["pilot_sign_disagreement_ci_high"]
    assert given["noop_alone_max"] == 0.0   # structurally zero: a stack of one with d = 0 is the cached computation
    assert given["noop_max"] == given["noop_stacked_max"] < 1e-6 * oracle.base_loss


def test_three_classes():
    m = perturbed_tiny(num_labels=3, seed=2)
    b = make_batches(num_labels=3, seed=2)
    o = RemovalOracle(m, b)
    items = o.random_items(8, seed=2) + [("classifier.weight", 200), ("classifier.bias", 2),
                                         ("bert.pooler.dense.weight", 77),
                                         ("bert.embeddings.token_type_embeddings.weight", 130)]
    fast = o.delta(items)
    for (name, idx), f in zip(items, fast):
        assert abs(f - naive_delta(m, b, name, idx)) <= 1e-12 * o.base_loss, name


def test_callers_model_unchanged(batches):
    m = perturbed_tiny().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    o = RemovalOracle(m, batches)
    o.delta(o.random_items(4) + [("classifier.bias", 0)])
    o.joint_delta(o.random_items(3))
    naive_delta(m, batches, "classifier.bias", 0)
    assert m.training and next(m.parameters()).dtype == torch.float32
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_inputs(oracle, model, batches):
    with pytest.raises(ConfigError, match="not in the model"):
        oracle.delta([("bert.nothing.weight", 0)])
    with pytest.raises(ConfigError, match="out of range"):
        oracle.delta([("classifier.bias", 2)])
    left = {k: v.clone() for k, v in batches[0].items()}
    left["attention_mask"][1] = left["attention_mask"][1].flip(0)
    if bool(left["attention_mask"][1].all()):
        left["attention_mask"][1, 0] = 0
    with pytest.raises(DataError, match="right padding"):
        RemovalOracle(model, [left])


def test_key_bias_restart_is_a_no_op_up_to_rounding(oracle):
    """The oracle short-cuts key-bias entries to 0; the restart path itself agrees (softmax shift invariance)."""
    from mft_engine.scoring.ground_truth.bert_forward import Change, restart_layer

    c = oracle.cache.layers[0]
    d = -float(oracle.weights.layers[0].k_b[5])
    y = restart_layer(oracle.weights, 0, c, oracle.packed, [Change("key", False, 5, -1, d)])
    assert d != 0 and torch.allclose(y[0], c.y, rtol=0, atol=1e-13)
