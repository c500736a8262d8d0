"""A hand-written BERT classifier forward over packed examples that can restart from cached activations.

What ground truth (scoring/ground_truth/oracle.py) runs instead of the HF forward, so that zeroing one parameter
re-runs only what lies downstream of it. It reproduces HF `BertForSequenceClassification` in eval mode
(absolute positions, post-LayerNorm encoder, pooler on the first token, no dropout) to rounding.

Layout: the examples of all batches are packed without padding, sorted by length, as rows of one
[T, H] matrix (T = real tokens); sequences of equal length are contiguous, so attention runs per
length group as [B, heads, S, S] batched matmuls with no mask. HF masks padded keys with the dtype's
minimum, whose softmax weight is exactly 0, so dropping the padding changes nothing but rounding.
Every tensor of the forward may carry a leading stack dimension K (perturbed copies run together).
The last layer only feeds the pooler through its first token, so it is run for the [CLS] rows only
(keys and values still span all tokens): 1/6 of a layer's cost instead of all of it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...errors import DataError, ModelError

Tensor = torch.Tensor


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run the enclosed torch ops on one thread. The per-length-group loops issue hundreds of small ops;
    with OpenMP on 2 cores that another process also uses, each waits at a barrier for the busy core
    (one MiniLM layer's attention: 1.98 s instead of 0.18 s). Large matmuls elsewhere keep every thread."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass(frozen=True)
class Group:
    """`count` sequences of `length` tokens each: token rows [tok0, tok0 + count·length), sequences [seq0, seq0 + count)."""

    length: int
    count: int
    tok0: int
    seq0: int

    @property
    def tok1(self) -> int:
        return self.tok0 + self.count * self.length

    @property
    def seq1(self) -> int:
        return self.seq0 + self.count


@dataclass
class PackedExamples:
    """N examples packed without padding: per-token ids [T] (int64), per-example labels and lengths [N].

    Sequences are sorted by length (stable in input order); `groups` cover them in order (by default one per
    length); `cls_rows` [N] is each sequence's first token row.
    """

    input_ids: Tensor
    token_type_ids: Tensor
    position_ids: Tensor
    labels: Tensor
    lengths: Tensor
    groups: list[Group] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cls_rows = torch.cumsum(self.lengths, 0) - self.lengths
        if not self.groups:
            self.groups = _groups(self.lengths.tolist())

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_seqs(self) -> int:
        return int(self.labels.shape[0])

    def seq_of_token(self) -> Tensor:
        """The sequence index of every token row, [T] int64."""
        return torch.repeat_interleave(torch.arange(self.n_seqs), self.lengths)

    def subset(self, seqs: Tensor) -> tuple[PackedExamples, Tensor]:
        """The examples at sorted sequence indices `seqs` (order kept, so groups stay contiguous), and the
        token rows [T_sub] of this packing that they occupy. Cost: O(T)."""
        keep = torch.zeros(self.n_seqs, dtype=torch.bool)
        keep[seqs] = True
        rows = torch.nonzero(keep[self.seq_of_token()]).flatten()
        sub = PackedExamples(self.input_ids[rows], self.token_type_ids[rows], self.position_ids[rows],
                             self.labels[seqs], self.lengths[seqs])
        return sub, rows

    def regrouped(self, max_count: int) -> PackedExamples:
        """The same examples with length groups cut into pieces of ≤ `max_count` sequences: other attention
        batch shapes (and so other rounding), for measuring the noise floor."""
        groups = []
        for g in self.groups:
            for c0 in range(0, g.count, max_count):
                c = min(max_count, g.count - c0)
                groups.append(Group(g.length, c, g.tok0 + c0 * g.length, g.seq0 + c0))
        return PackedExamples(self.input_ids, self.token_type_ids, self.position_ids, self.labels, self.lengths,
                              groups)


def _groups(lengths: list[int]) -> list[Group]:
    groups, tok, seq = [], 0, 0
    while seq < len(lengths):
        s, end = lengths[seq], seq
        while end < len(lengths) and lengths[end] == s:
            end += 1
        groups.append(Group(s, end - seq, tok, seq))
        tok += s * (end - seq)
        seq = end
    return groups


def pack_examples(batches: list[dict[str, Tensor]]) -> PackedExamples:
    """Pack HF batch dicts (input_ids [B, S], attention_mask [B, S] optional, token_type_ids optional,
    labels [B] int64) into one PackedExamples, dropping the padding.

    Padding must be on the right (each mask row is ones then zeros, at least one 1): HF gives position
    ids by absolute index and pools token 0, so left padding would not be a plain padding. Positions are
    0..len−1 as in HF. Cost: O(total padded tokens), on the CPU.
    """
    seqs = []
    for bi, b in enumerate(batches):
        ids = b["input_ids"].cpu()
        mask = b.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.cpu()
        tt = b.get("token_type_ids")
        tt = torch.zeros_like(ids) if tt is None else tt.cpu()
        labels = b["labels"].cpu()
        if labels.dtype != torch.int64:
            raise DataError(f"batch {bi} has labels of dtype {labels.dtype}; expected int64 class indices")
        lens = mask.sum(1)
        for r in range(ids.shape[0]):
            n = int(lens[r])
            if n < 1 or not bool(mask[r, :n].all()) or bool(mask[r, n:].any()):
                raise DataError(f"batch {bi} row {r} has an attention_mask that is not right padding (ones, then "
                                "zeros, at least one 1)")
            seqs.append((n, len(seqs), ids[r, :n], tt[r, :n], labels[r]))
    if not seqs:
        raise DataError("no examples to evaluate: the batches are empty")
    seqs.sort(key=lambda s: (s[0], s[1]))
    return PackedExamples(torch.cat([s[2] for s in seqs]), torch.cat([s[3] for s in seqs]),
                          torch.cat([torch.arange(s[0]) for s in seqs]), torch.stack([s[4] for s in seqs]),
                          torch.tensor([s[0] for s in seqs]))


@dataclass
class LayerWeights:
    """One encoder layer's parameters (views of the model's tensors, so zeroing the model is seen here)."""

    q_w: Tensor
    q_b: Tensor
    k_w: Tensor
    k_b: Tensor
    v_w: Tensor
    v_b: Tensor
    ao_w: Tensor
    ao_b: Tensor
    ln1_w: Tensor
    ln1_b: Tensor
    ln1_eps: float
    i_w: Tensor
    i_b: Tensor
    o_w: Tensor
    o_b: Tensor
    ln2_w: Tensor
    ln2_b: Tensor
    ln2_eps: float


@dataclass
class BertWeights:
    """The parameters of an HF BertForSequenceClassification, as views, plus its shape constants."""

    word: Tensor
    position: Tensor
    token_type: Tensor
    emb_ln_w: Tensor
    emb_ln_b: Tensor
    emb_eps: float
    layers: list[LayerWeights]
    pool_w: Tensor
    pool_b: Tensor
    cls_w: Tensor
    cls_b: Tensor
    heads: int
    act: object

    @property
    def hidden(self) -> int:
        return int(self.word.shape[1])

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def scale(self) -> float:
        return self.head_dim ** -0.5

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> BertWeights:
        """Views of `model`'s parameters. Raises ModelError unless it is a BERT encoder classifier with a
        pooler and absolute positions (what HF's BertForSequenceClassification builds by default)."""
        bert, head = getattr(model, "bert", None), getattr(model, "classifier", None)
        cfg = getattr(model, "config", None)
        if bert is None or head is None or getattr(bert, "pooler", None) is None or cfg is None:
            raise ModelError(f"{type(model).__name__} is not a BERT classifier with a pooler (bert.*, classifier)")
        if cfg.is_decoder or getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise ModelError("ground truth supports encoder-only BERT with absolute position embeddings")
        if getattr(cfg, "problem_type", None) not in (None, "single_label_classification") or cfg.num_labels < 2:
            raise ModelError("ground truth needs a single-label classifier (cross-entropy, ≥ 2 labels)")
        d = lambda p: p.detach()
        layers = []
        for lay in bert.encoder.layer:
            s, o = lay.attention.self, lay.attention.output
            layers.append(LayerWeights(
                d(s.query.weight), d(s.query.bias), d(s.key.weight), d(s.key.bias), d(s.value.weight),
                d(s.value.bias), d(o.dense.weight), d(o.dense.bias), d(o.LayerNorm.weight), d(o.LayerNorm.bias),
                o.LayerNorm.eps, d(lay.intermediate.dense.weight), d(lay.intermediate.dense.bias),
                d(lay.output.dense.weight), d(lay.output.dense.bias), d(lay.output.LayerNorm.weight),
                d(lay.output.LayerNorm.bias), lay.output.LayerNorm.eps))
        e = bert.embeddings
        return cls(d(e.word_embeddings.weight), d(e.position_embeddings.weight), d(e.token_type_embeddings.weight),
                   d(e.LayerNorm.weight), d(e.LayerNorm.bias), e.LayerNorm.eps, layers, d(bert.pooler.dense.weight),
                   d(bert.pooler.dense.bias), d(head.weight), d(head.bias), cfg.num_attention_heads,
                   bert.encoder.layer[0].intermediate.intermediate_act_fn)


@dataclass
class LayerCache:
    """Activations of one layer in the base forward. Rows are all T tokens, or the N [CLS] rows when the
    layer ran `cls_only` (the last one); `x` (the input) and `scores` always span all keys.

    x [T, H] · scores: per group [B, heads, S_q, S] (scaled, pre-softmax; S_q = S or 1) · ctx [R, H] ·
    p1 = dense(ctx) + x [R, H], with LayerNorm mean1/rstd1 [R] · a = LN1(p1) [R, H] · pre = intermediate
    pre-activation [R, I] · p2 = dense(act(pre)) + a [R, H], mean2/rstd2 [R] · y = LN2(p2) [R, H].
    """

    cls_only: bool
    x: Tensor
    scores: list[Tensor]
    ctx: Tensor
    p1: Tensor
    mean1: Tensor
    rstd1: Tensor
    a: Tensor
    pre: Tensor
    p2: Tensor
    mean2: Tensor
    rstd2: Tensor
    y: Tensor


@dataclass
class ForwardCache:
    """Everything a restart needs: the embedding sum and its LN statistics, per-layer caches, and the head
    (h_cls = last layer output [N, H], u = pooler pre-activation, pooled, logits [N, C], ce [N])."""

    emb_sum: Tensor
    emb_mean: Tensor
    emb_rstd: Tensor
    layers: list[LayerCache]
    u: Tensor
    pooled: Tensor
    logits: Tensor
    ce: Tensor

    def nbytes(self) -> int:
        """Bytes held by the cached tensors (the y of layer l is the x of layer l + 1, counted once)."""
        seen, total = set(), 0
        tensors = [self.emb_sum, self.emb_mean, self.emb_rstd, self.u, self.pooled, self.logits, self.ce]
        for c in self.layers:
            tensors += [c.x, c.ctx, c.p1, c.mean1, c.rstd1, c.a, c.pre, c.p2, c.mean2, c.rstd2, c.y, *c.scores]
        for t in tensors:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total


def ln_stats(p: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """LayerNorm's mean and 1/sqrt(var + eps) over the last dim (biased variance, as torch's layer_norm)."""
    mean = p.mean(-1)
    return mean, torch.rsqrt(p.var(-1, unbiased=False) + eps)


def embed(w: BertWeights, packed: PackedExamples) -> Tensor:
    """The embedding sum word + token type + position, [T, H] (HF's order of additions); LN is applied by the caller."""
    return (w.word[packed.input_ids] + w.token_type[packed.token_type_ids]) + w.position[packed.position_ids]


def attention(w: BertWeights, q: Tensor, k: Tensor, v: Tensor, packed: PackedExamples, cls_only: bool,
              scores: list[Tensor] | None = None) -> Tensor:
    """Per-sequence multi-head attention: q [K, T or N, H] (N when `cls_only`: one query per sequence),
    k, v [K, T, H] → context [K, T or N, H]. Appends each group's scaled scores [B, heads, S_q, S] of stack
    entry 0 to `scores` when given. Cost: Σ_groups 4·B·S_q·S·H flops per stack entry, in one contiguous
    bmm per product (strided 5-D matmuls were 5-10× slower for these small blocks)."""
    out = q.new_empty(q.shape)
    with serial():
        for g in packed.groups:
            _group_attention(w, q, k, v, g, cls_only, out, scores)
    return out


def _group_attention(w: BertWeights, q: Tensor, k: Tensor, v: Tensor, g: Group, cls_only: bool, out: Tensor,
                     scores: list[Tensor] | None) -> None:
    # One length group: [K·B·heads] contiguous blocks, one bmm per product, softmax, context into `out`.
    K, nh, dh = k.shape[0], w.heads, w.head_dim
    b, s = K * g.count, g.length
    sq = 1 if cls_only else s
    r0, r1 = (g.seq0, g.seq1) if cls_only else (g.tok0, g.tok1)
    qq = q[:, r0:r1].reshape(b, sq, nh, dh).transpose(1, 2).reshape(b * nh, sq, dh)
    kt = k[:, g.tok0:g.tok1].reshape(b, s, nh, dh).permute(0, 2, 3, 1).reshape(b * nh, dh, s)
    vv = v[:, g.tok0:g.tok1].reshape(b, s, nh, dh).transpose(1, 2).reshape(b * nh, s, dh)
    sc = torch.bmm(qq, kt) * w.scale
    if scores is not None:
        scores.append(sc[:g.count * nh].view(g.count, nh, sq, s))
    ctx = torch.bmm(torch.softmax(sc, -1), vv)
    out[:, r0:r1] = ctx.view(K, g.count, nh, sq, dh).transpose(2, 3).reshape(K, g.count * sq, nh * dh)


def layer_forward(w: BertWeights, index: int, x: Tensor, packed: PackedExamples, cls_only: bool,
                  keep: bool = False) -> tuple[Tensor, LayerCache | None]:
    """Encoder layer `index` on x [K, T, H] → output [K, T, H] (or [K, N, H] of the [CLS] rows when
    `cls_only`), and, when `keep` (K must be 1), its LayerCache. Cost per stack entry: 2·T·(4H² + 2HI) flops
    plus attention (24·H²·T for I = 4H); `cls_only`: 4·H²·T (keys, values) + 2·N·(2H² + 2HI)."""
    lw = w.layers[index]
    xq = x[:, packed.cls_rows] if cls_only else x
    q = F.linear(xq, lw.q_w, lw.q_b)
    k = F.linear(x, lw.k_w, lw.k_b)
    v = F.linear(x, lw.v_w, lw.v_b)
    scores = [] if keep else None
    ctx = attention(w, q, k, v, packed, cls_only, scores)
    p1 = F.linear(ctx, lw.ao_w, lw.ao_b) + xq
    a = F.layer_norm(p1, (p1.shape[-1],), lw.ln1_w, lw.ln1_b, lw.ln1_eps)
    pre = F.linear(a, lw.i_w, lw.i_b)
    p2 = F.linear(w.act(pre), lw.o_w, lw.o_b) + a
    y = F.layer_norm(p2, (p2.shape[-1],), lw.ln2_w, lw.ln2_b, lw.ln2_eps)
    if not keep:
        return y, None
    m1, r1 = ln_stats(p1[0], lw.ln1_eps)
    m2, r2 = ln_stats(p2[0], lw.ln2_eps)
    return y, LayerCache(cls_only, x[0], scores, ctx[0], p1[0], m1, r1, a[0], pre[0], p2[0], m2, r2, y[0])


def encoder_from(w: BertWeights, start: int, x: Tensor, packed: PackedExamples) -> Tensor:
    """Run layers start..L−1 on the input x [K, T, H] of layer `start`; the last layer for the [CLS] rows
    only. Returns the last layer's output at the [CLS] rows, [K, N, H]."""
    last = len(w.layers) - 1
    for i in range(start, last + 1):
        x, _ = layer_forward(w, i, x, packed, cls_only=(i == last))
    return x


def head_ce(w: BertWeights, h_cls: Tensor, labels: Tensor) -> Tensor:
    """Per-example cross-entropy [K, N] from the last layer's [CLS] rows h_cls [K, N, H]: pooler dense +
    tanh, classifier, CE against labels [N]. Cost: 2·N·H·(H + C) flops per stack entry."""
    logits = F.linear(torch.tanh(F.linear(h_cls, w.pool_w, w.pool_b)), w.cls_w, w.cls_b)
    return ce_of(logits, labels)


def ce_of(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example cross-entropy of logits [..., N, C] against labels [N] → [..., N]."""
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, labels.repeat(flat.shape[0] // labels.shape[0]), reduction="none").reshape(lead)


def forward_ce(w: BertWeights, packed: PackedExamples) -> Tensor:
    """Per-example cross-entropy [N] of the whole model, no caching. Cost: one forward (last layer CLS-only)."""
    emb = embed(w, packed)
    x = F.layer_norm(emb, (w.hidden,), w.emb_ln_w, w.emb_ln_b, w.emb_eps)
    return head_ce(w, encoder_from(w, 0, x[None], packed), packed.labels)[0]


def forward_cached(w: BertWeights, packed: PackedExamples) -> ForwardCache:
    """One forward that keeps every activation a restart needs (see LayerCache). Cost: one forward (the
    last layer CLS-only) and memory per layer of T·(6H + I)·itemsize + heads·Σ_seq S²·itemsize bytes,
    i.e. ~340 MB for a MiniLM layer (H 384, I 1536) over 11k tokens in float64."""
    emb = embed(w, packed)
    mean, rstd = ln_stats(emb, w.emb_eps)
    x = F.layer_norm(emb, (w.hidden,), w.emb_ln_w, w.emb_ln_b, w.emb_eps)[None]
    caches = []
    last = len(w.layers) - 1
    for i in range(last + 1):
        x, c = layer_forward(w, i, x, packed, cls_only=(i == last), keep=True)
        caches.append(c)
    u = F.linear(x[0], w.pool_w, w.pool_b)
    pooled = torch.tanh(u)
    logits = F.linear(pooled, w.cls_w, w.cls_b)
    return ForwardCache(emb, mean, rstd, caches, u, pooled, logits, ce_of(logits, packed.labels))


# ---------------------------------------------------------------------------------------------------------
# Restarting one layer after one of its parameter entries moved.

#: The modules of an encoder layer, by their HF name inside `encoder.layer.<i>.`.
LAYER_MODULES = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
                 "attention.output.dense": "attn_out", "attention.output.LayerNorm": "ln1",
                 "intermediate.dense": "inter", "output.dense": "out", "output.LayerNorm": "ln2"}


@dataclass(frozen=True)
class Change:
    """Entry (i, j) of a Linear weight, entry i of a bias, or entry i of a LayerNorm weight/bias of one
    layer module (a LAYER_MODULES value) moved by `d` (new − old). j is the input column (−1 when none)."""

    module: str
    weight: bool
    i: int
    j: int
    d: float


def _ln_column(p: Tensor, mean: Tensor, rstd: Tensor, ch: Change) -> Tensor | float:
    # A LayerNorm weight entry scales the normalised feature i; a bias entry shifts it.
    return (p[:, ch.i] - mean) * rstd * ch.d if ch.weight else ch.d


def _linear_column(inp: Tensor, ch: Change) -> Tensor | float:
    # W_ij moved by d changes output feature i by d·x_j on every row; b_i moved by d shifts it by d.
    return inp[:, ch.j] * ch.d if ch.weight else ch.d


def attention_self_change(w: BertWeights, index: int, c: LayerCache, packed: PackedExamples, ch: Change) -> Tensor:
    """The change of p1 = dense(ctx) + x [R, H] when an entry of the query, key or value projection moves.

    Only the head holding output feature i is affected. Value: one context column changes, by P_h·Δv_i
    (linear), so Δp1 is rank one. Query/key: the head's scores change by scale·Δq_i ⊗ k_i (or q_i ⊗ Δk_i),
    its softmax is recomputed, and Δctx_h = (P'_h − P_h)·V_h. Cost: O(T·H·d_head + Σ_seq S²·d_head) flops,
    a few percent of a layer. (A key bias entry shifts each query's scores by a constant, which softmax
    ignores: it gives 0 up to rounding here, and the oracle short-cuts it to exactly 0.)
    """
    lw = w.layers[index]
    dh = w.head_dim
    h = ch.i // dh
    hs = slice(h * dh, (h + 1) * dh)
    x = c.x
    xq = x[packed.cls_rows] if c.cls_only else x
    rows = xq.shape[0]
    full = lambda v, n: v if torch.is_tensor(v) else torch.full((n,), v, dtype=x.dtype, device=x.device)
    if ch.module == "value":
        dv = full(_linear_column(x, ch), x.shape[0])
        dcol = x.new_empty(rows)
        with serial():
            for g, sc in zip(packed.groups, c.scores):
                sq = sc.shape[2]
                r0 = g.seq0 if c.cls_only else g.tok0
                p = torch.softmax(sc[:, h], -1)
                dcol[r0:r0 + g.count * sq] = torch.bmm(p, dv[g.tok0:g.tok1].view(g.count, g.length, 1)).reshape(-1)
        return dcol[:, None] * lw.ao_w[:, ch.i][None, :]
    if ch.module == "query":
        dq = full(_linear_column(xq, ch), rows)
        other = F.linear(x, lw.k_w[ch.i:ch.i + 1], lw.k_b[ch.i:ch.i + 1])[:, 0]   # k_i on every key row
    else:
        dq = F.linear(xq, lw.q_w[ch.i:ch.i + 1], lw.q_b[ch.i:ch.i + 1])[:, 0]     # q_i on every query row
        other = full(_linear_column(x, ch), x.shape[0])                          # Δk_i
    vh = F.linear(x, lw.v_w[hs], lw.v_b[hs])
    dctx = x.new_empty(rows, dh)
    with serial():
        for g, sc in zip(packed.groups, c.scores):
            sq = sc.shape[2]
            r0 = g.seq0 if c.cls_only else g.tok0
            s = sc[:, h]
            ds = dq[r0:r0 + g.count * sq].view(g.count, sq, 1) * other[g.tok0:g.tok1].view(g.count, 1, g.length)
            dp = torch.softmax(s + ds * w.scale, -1) - torch.softmax(s, -1)
            dctx[r0:r0 + g.count * sq] = torch.bmm(dp, vh[g.tok0:g.tok1].view(g.count, g.length, dh)).reshape(-1, dh)
    return F.linear(dctx, lw.ao_w[:, hs])


def restart_layer(w: BertWeights, index: int, c: LayerCache, packed: PackedExamples, changes: list[Change]) -> Tensor:
    """Layer `index`'s output [K, R, H] (R = T, or N [CLS] rows for the last layer) with change k applied
    alone in stack entry k, from the layer's cache.

    Each change enters at the first activation it touches and is carried in difference form
    (a' = a + Δa, pre' = pre + Δa·W_int^T, p2' = p2 + (act(pre') − act(pre))·W_out^T + Δa), so nothing is
    recomputed that cannot change and unchanged parts keep their cached bits. Cost per change: query/key/
    value and attention-output entries pay the feed-forward block (4·R·H·I flops); attention LayerNorm
    entries half of it (the intermediate update is rank one); intermediate, output and output-LayerNorm
    entries O(R·H). Memory: K·R·(I + 4H) values.
    """
    lw = w.layers[index]
    hidden = c.a.shape[-1]
    out: list[Tensor | None] = [None] * len(changes)
    p1_at, p1_new, ln1_at, ln1_da, ln1_dpre, p2_at, p2_new = [], [], [], [], [], [], []
    for k, ch in enumerate(changes):
        m = ch.module
        if m in ("query", "key", "value"):
            p1_at.append(k)
            p1_new.append(c.p1 + attention_self_change(w, index, c, packed, ch))
        elif m == "attn_out":
            p = c.p1.clone()
            p[:, ch.i] += _linear_column(c.ctx, ch)
            p1_at.append(k)
            p1_new.append(p)
        elif m == "ln1":
            col = _ln_column(c.p1, c.mean1, c.rstd1, ch)
            col = col if torch.is_tensor(col) else torch.full_like(c.mean1, col)
            da = torch.zeros_like(c.a)
            da[:, ch.i] = col
            ln1_at.append(k)
            ln1_da.append(da)
            ln1_dpre.append(col[:, None] * lw.i_w[:, ch.i][None, :])      # rank one: Δa_i ⊗ W_int[:, i]
        elif m == "inter":
            pre_i = c.pre[:, ch.i]
            dact = w.act(pre_i + _linear_column(c.a, ch)) - w.act(pre_i)
            p2_at.append(k)
            p2_new.append(c.p2 + dact[:, None] * lw.o_w[:, ch.i][None, :])
        elif m == "out":
            p = c.p2.clone()
            p[:, ch.i] += w.act(c.pre[:, ch.j]) * ch.d if ch.weight else ch.d   # act_j from its pre-activation
            p2_at.append(k)
            p2_new.append(p)
        elif m == "ln2":
            y = c.y.clone()
            y[:, ch.i] += _ln_column(c.p2, c.mean2, c.rstd2, ch)
            out[k] = y
        else:
            raise ValueError(f"unknown layer module {m!r}")
    da_parts, dpre_parts, a_at = [], [], []
    if p1_at:
        a_new = F.layer_norm(torch.stack(p1_new), (hidden,), lw.ln1_w, lw.ln1_b, lw.ln1_eps)
        da = a_new - c.a
        da_parts.append(da)
        dpre_parts.append(F.linear(da, lw.i_w))
        a_at += p1_at
    if ln1_at:
        da_parts.append(torch.stack(ln1_da))
        dpre_parts.append(torch.stack(ln1_dpre))
        a_at += ln1_at
    if a_at:
        da = torch.cat(da_parts)
        dact = w.act(c.pre + torch.cat(dpre_parts)) - w.act(c.pre)
        p2_new += list(c.p2 + (F.linear(dact, lw.o_w) + da))
        p2_at += a_at
    if p2_at:
        y = F.layer_norm(torch.stack(p2_new), (hidden,), lw.ln2_w, lw.ln2_b, lw.ln2_eps)
        for k, yk in zip(p2_at, y):
            out[k] = yk
    return torch.stack(out)
