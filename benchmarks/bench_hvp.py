"""Gauss-Newton-vector products on minilm / SST-2, 32 sentences: batched_gnvp vs a loop of gnvp
(`mft bench hvp` runs the same with --repeats 3)."""


def test_hvp_batched_vs_loop(benchmark):
    from mft_engine.bench.hvp import run

    result = benchmark.pedantic(lambda: run(samples=32, vectors=8, repeats=1), rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
