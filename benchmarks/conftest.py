"""pytest-benchmark suite: `pytest benchmarks --benchmark-only`. Shapes default to bert-base
(MFT_BENCH_MODEL=bert-tiny-random for a quick run). Ratios, not absolute times, are what to compare."""
import os

import pytest
import torch


@pytest.fixture(scope="session")
def bert_thetas_grads():
    from mft_engine.bench.zeroing import random_bert
    from mft_engine.config import EXCLUDE_PRESETS
    from mft_engine.masking import eligible_parameters

    m = random_bert(os.environ.get("MFT_BENCH_MODEL", "bert-base-random"))
    thetas = [p.detach() for _, p in eligible_parameters(m, EXCLUDE_PRESETS["original"])]
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(t.shape, generator=gen) * 0.01 for t in thetas]
    return thetas, grads
