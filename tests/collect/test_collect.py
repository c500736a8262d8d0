import torch
import torch.nn.functional as F

from mft_engine.collect import Batch, GradientState, collect_gradients
from mft_engine.data import split_by_length

from ..conftest import synthetic_batch, tiny_bert


def plain_loop(model, batches):
    """The formulation the issue pins: after each backward, g += grad, sq += grad², pos/neg counts."""
    named = [(n, p) for n, p in model.named_parameters()]
    g = {n: torch.zeros_like(p) for n, p in named}
    sq = {n: torch.zeros_like(p) for n, p in named}
    pos = {n: torch.zeros(p.shape, dtype=torch.int32) for n, p in named}
    neg = {n: torch.zeros(p.shape, dtype=torch.int32) for n, p in named}
    for b in batches:
        model.zero_grad(set_to_none=True)
        inputs = {k: v for k, v in b.items() if k != "labels"}
        loss = F.cross_entropy(model(**inputs).logits.float(), b["labels"], reduction="sum") / b["labels"].shape[0]
        loss.backward()
        for n, p in named:
            g[n] += p.grad
            sq[n] += p.grad * p.grad
            pos[n] += (p.grad > 0).int()
            neg[n] += (p.grad < 0).int()
    model.zero_grad(set_to_none=True)
    return g, sq, pos, neg


def test_sums_equal_plain_loop_bit_for_bit():
    model = tiny_bert()
    batches = [synthetic_batch(8, 12, seed=s) for s in range(3)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = collect_gradients(model, batches, train_mode=False)
    g, sq, pos, neg = plain_loop(model, batches)
    for n in state.names:
        assert torch.equal(state.grad_sum[n], g[n]), n
        assert torch.equal(state.sq_sum[n], sq[n]), n
        assert torch.equal(state.pos_count[n], pos[n]), n
        assert torch.equal(state.neg_count[n], neg[n]), n
        assert torch.equal(model.get_parameter(n), before[n]), "collection must not update weights"
    assert state.batch_sizes == [8, 8, 8]
    assert len(state.batch_losses) == 3


def test_parts_give_the_batch_gradient():
    model = tiny_bert()
    b = synthetic_batch(12, 10, seed=3)
    whole = collect_gradients(model, [b], train_mode=False)
    lengths = b["attention_mask"].sum(1).tolist()
    parts = split_by_length(list(range(12)), lengths, max_pad_waste=0.1)
    assert sorted(r for p in parts for r in p) == list(range(12))
    sub = [{k: v[p][:, : max(lengths[i] for i in p)] if v.dim() == 2 else v[p] for k, v in b.items()} for p in parts]
    split = collect_gradients(model, [Batch(sub, 12.0)], train_mode=False)
    for n in whole.names:
        torch.testing.assert_close(split.grad_sum[n], whole.grad_sum[n], rtol=1e-4, atol=1e-6)
    assert abs(split.batch_losses[0] - whole.batch_losses[0]) < 1e-5


def test_activation_statistics_count_real_tokens_only():
    model = tiny_bert()
    b = synthetic_batch(4, 9, seed=5)
    state = collect_gradients(model, [b], train_mode=False)
    real = int(b["attention_mask"].sum())
    q = "bert.encoder.layer.0.attention.self.query"
    assert state.act_tokens[q] == real
    assert state.act_tokens["classifier"] == 4
    # Σx² of the first layer's query input, recomputed from the embeddings output on real tokens.
    with torch.no_grad():
        emb = model.bert.embeddings(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"])
    m = b["attention_mask"].bool()
    ref = emb[m].double().square().sum(0)
    torch.testing.assert_close(state.act_sq[q], ref, rtol=1e-5, atol=1e-6)


def test_train_mode_is_seeded_and_restored():
    model = tiny_bert()
    batches = [synthetic_batch(6, 8, seed=s) for s in range(2)]
    torch.manual_seed(1)
    a = collect_gradients(model, batches, train_mode=True)
    torch.manual_seed(1)
    b = collect_gradients(model, batches, train_mode=True)
    ev = collect_gradients(model, batches, train_mode=False)
    assert not model.training
    n = "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(a.grad_sum[n], b.grad_sum[n])
    assert not torch.equal(a.grad_sum[n], ev.grad_sum[n]), "dropout must be on in train mode"


def test_state_roundtrip(tmp_path):
    model = tiny_bert()
    st = collect_gradients(model, [synthetic_batch(4, 6, seed=0)], train_mode=False, meta={"x": 1})
    st.save(tmp_path / "s.safetensors", extra_tensors={"rng": torch.get_rng_state()})
    back, extra = GradientState.load(tmp_path / "s.safetensors", with_extra=True)
    assert back.names == st.names and back.meta == {"x": 1}
    assert torch.equal(extra["rng"], torch.get_rng_state())
    for n in st.names:
        assert torch.equal(back.grad_sum[n], st.grad_sum[n])
        assert torch.equal(back.neg_count[n], st.neg_count[n])
    for m in st.act_sq:
        assert torch.equal(back.act_sq[m], st.act_sq[m])
    assert back.batch_losses == st.batch_losses
    stats = back.statistics()
    assert set(stats) == set(st.names)
    sc = back.sign_consistency(st.names[0])
    assert float(sc.max()) <= 1.0


def test_skip_resumes_to_identical_sums():
    model = tiny_bert()
    batches = [synthetic_batch(5, 7, seed=s) for s in range(4)]
    full = collect_gradients(model, batches, train_mode=False)
    saved = {}
    part = collect_gradients(model, batches[:2], train_mode=False)
    saved["state"] = part
    rest = collect_gradients(model, batches, state=part, skip=2, train_mode=False)
    for n in full.names:
        assert torch.equal(rest.grad_sum[n], full.grad_sum[n])
        assert torch.equal(rest.sq_sum[n], full.sq_sum[n])
    assert rest.batch_sizes == full.batch_sizes


def test_sparse_embedding_gradients_match_dense():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=2000, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64)).eval()
    batches = [synthetic_batch(6, 10, seed=s, vocab=40) for s in range(3)]  # a few rows touched, with repeats
    dense = collect_gradients(model, batches, train_mode=False, sparse_embeddings=False)
    sparse = collect_gradients(model, batches, train_mode=False, sparse_embeddings=True)
    assert not model.bert.embeddings.word_embeddings.sparse, "the module must be restored"
    w = "bert.embeddings.word_embeddings.weight"
    for n in dense.names:
        if n == w:
            torch.testing.assert_close(sparse.grad_sum[n], dense.grad_sum[n], rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(sparse.sq_sum[n], dense.sq_sum[n], rtol=1e-5, atol=1e-12)
            touched = dense.grad_sum[n].abs().sum(1) > 0
            assert int(touched.sum()) < 40 and bool((sparse.grad_sum[n][~touched] == 0).all())
            assert torch.equal(sparse.pos_count[n] + sparse.neg_count[n] > 0, dense.pos_count[n] + dense.neg_count[n] > 0)
        else:
            assert torch.equal(sparse.grad_sum[n], dense.grad_sum[n]), n


def test_flat_gradients_equal_the_per_tensor_path_bit_for_bit():
    """The dense gradients live in one buffer and one accumulate_ adds a batch (FlatGrads): over batches
    split into parts, the sums equal those of per-tensor accumulation of freshly allocated gradients."""
    from mft_engine import ops

    model = tiny_bert()
    batches = []
    for s in range(3):
        b = synthetic_batch(12, 10, seed=10 + s)
        halves = [{k: v[:6] for k, v in b.items()}, {k: v[6:] for k, v in b.items()}]
        batches.append(Batch(halves, 12.0))
    state = collect_gradients(model, batches, train_mode=False, activation_stats=False)
    named = list(model.named_parameters())
    ref = GradientState.zeros_like([(n, p.detach()) for n, p in named])
    for b in batches:
        for part in b.parts:
            inputs = {k: v for k, v in part.items() if k != "labels"}
            (F.cross_entropy(model(**inputs).logits.float(), part["labels"], reduction="sum") / 12.0).backward()
        for n, p in named:
            ops.accumulate_(ref.grad_sum[n], ref.sq_sum[n], ref.pos_count[n], ref.neg_count[n], p.grad)
            p.grad = None
    for n in state.names:
        for a, b in ((state.grad_sum, ref.grad_sum), (state.sq_sum, ref.sq_sum), (state.pos_count, ref.pos_count),
                     (state.neg_count, ref.neg_count)):
            assert torch.equal(a[n], b[n]), n
    ptrs = {state.grad_sum[n].untyped_storage().data_ptr() for n in state.names}
    assert len(ptrs) == 1, "the sums are views of one buffer"
    assert all(p.grad is None for _, p in named), "collection leaves no gradient behind"


def test_a_gradient_put_in_place_of_its_view_still_counts_once():
    """If something replaces p.grad during backward (here a hook, after the first of a batch's two parts),
    the later parts add into the replacement, not the view: FlatGrads adds the replacement, once."""
    batches = []
    for s in range(2):
        b = synthetic_batch(8, 12, seed=s)
        batches.append(Batch([{k: v[:4] for k, v in b.items()}, {k: v[4:] for k, v in b.items()}], 8.0))
    model = tiny_bert()
    p = model.get_parameter("classifier.weight")
    handle = p.register_post_accumulate_grad_hook(lambda t: setattr(t, "grad", t.grad.clone()))
    try:
        hooked = collect_gradients(model, batches, train_mode=False)
    finally:
        handle.remove()
    plain = collect_gradients(tiny_bert(), batches, train_mode=False)
    for n in plain.names:
        for a, b in ((hooked.grad_sum, plain.grad_sum), (hooked.sq_sum, plain.sq_sum),
                     (hooked.pos_count, plain.pos_count), (hooked.neg_count, plain.neg_count)):
            assert torch.equal(a[n], b[n]), n
