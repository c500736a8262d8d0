"""mft::zero_topk_ (select and zero in one pass) + mft::restore_, against select_topk + zero_masked_, for
k = 10% of the detrimental bert-base parameters."""
from mft_engine import ops
from mft_engine.masking.selection import k_for

LR = 2e-5


def _k(thetas, grads):
    return k_for(0.1, int(ops.detrimental_count(thetas, grads, LR).sum()))


def test_zero_topk_fused(benchmark, bert_thetas_grads):
    thetas, grads = bert_thetas_grads
    k = _k(thetas, grads)

    def run():
        idx, saved, _, _ = ops.zero_topk_(thetas, grads, LR, k)
        ops.restore_(thetas, idx, saved)
    benchmark(run)


def test_select_topk_then_zero_masked(benchmark, bert_thetas_grads):
    thetas, grads = bert_thetas_grads
    k = _k(thetas, grads)

    def run():
        idx, _, _ = ops.select_topk(thetas, grads, LR, k)
        saved = ops.zero_masked_(thetas, idx)
        ops.restore_(thetas, idx, saved)
    benchmark(run)
