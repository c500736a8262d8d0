"""Collection on minilm / SST-2 (64 samples for pytest-benchmark; `mft bench collect` runs 512)."""
import pytest


@pytest.mark.parametrize("reduction", ["batch-sum", "mean"])
def test_collect_engine_vs_plain(benchmark, reduction):
    from mft_engine.bench.collect import run

    result = benchmark.pedantic(lambda: run(samples=64, reduction=reduction, repeats=1), rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
