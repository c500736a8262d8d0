"""mft::zero_masked_ + mft::restore_ for k = 10% of the detrimental bert-base parameters."""
from mft_engine import ops
from mft_engine.masking.selection import k_for

LR = 2e-5


def test_zero_and_restore(benchmark, bert_thetas_grads):
    thetas, grads = bert_thetas_grads
    k = k_for(0.1, int(ops.detrimental_count(thetas, grads, LR).sum()))
    idx, _, _ = ops.select_topk(thetas, grads, LR, k)

    def run():
        saved = ops.zero_masked_(thetas, idx)
        ops.restore_(thetas, idx, saved)
    benchmark(run)
