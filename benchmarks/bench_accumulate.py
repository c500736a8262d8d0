"""mft::accumulate_ against the eager four-op update it fuses, over bert-base gradient shapes."""
import torch

from mft_engine import ops


def _state(grads):
    return ([torch.zeros_like(g) for g in grads], [torch.zeros_like(g) for g in grads],
            [torch.zeros(g.shape, dtype=torch.int32) for g in grads], [torch.zeros(g.shape, dtype=torch.int32) for g in grads])


def test_accumulate_fused(benchmark, bert_thetas_grads):
    _, grads = bert_thetas_grads
    g, sq, pos, neg = _state(grads)

    def run():
        for i, gr in enumerate(grads):
            ops.accumulate_(g[i], sq[i], pos[i], neg[i], gr)
    benchmark(run)


def test_accumulate_eager(benchmark, bert_thetas_grads):
    _, grads = bert_thetas_grads
    g, sq, pos, neg = _state(grads)

    def run():
        for i, gr in enumerate(grads):
            g[i] += gr
            sq[i] += gr * gr
            pos[i] += gr > 0
            neg[i] += gr < 0
    benchmark(run)
