"""mft::select_topk (with the counting pass) against the pinned torch.topk formulation, same inputs."""
from mft_engine import ops
from mft_engine.bench.zeroing import torch_score
from mft_engine.masking.selection import k_for

LR = 2e-5


def _k(thetas, grads):
    return k_for(0.1, int(ops.detrimental_count(thetas, grads, LR).sum()))


def test_select_topk_fused(benchmark, bert_thetas_grads):
    thetas, grads = bert_thetas_grads
    k = _k(thetas, grads)
    benchmark(lambda: ops.select_topk(thetas, grads, LR, k))


def test_select_topk_torch_cat_topk(benchmark, bert_thetas_grads):
    import torch

    thetas, grads = bert_thetas_grads
    k = _k(thetas, grads)
    benchmark(lambda: torch.topk(torch.cat([torch_score(t, g, LR).reshape(-1) for t, g in zip(thetas, grads)]), k))


def test_detrimental_count(benchmark, bert_thetas_grads):
    thetas, grads = bert_thetas_grads
    benchmark(lambda: ops.detrimental_count(thetas, grads, LR))
