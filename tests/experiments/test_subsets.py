"""How the studies choose rows: difficulty subsets (data-centric), class-balanced nested orders and the k values
(few-shot), and the study configs' checks."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mft_engine.errors import ConfigError
from mft_engine.experiments.data_centric import (
    DataCentricConfig,
    largest_remainder,
    parse_mix,
    select_by_difficulty,
)
from mft_engine.experiments.few_shot import FewShotConfig, balanced_order
from mft_engine.experiments.noise import NoiseConfig
from mft_engine.experiments.transfer import TransferConfig

# 30 rows: labels 0 (20 rows) and 1 (10 rows); losses distinct, increasing with the position within a class
LABELS = [0, 0, 1] * 10
LOSSES = np.linspace(0.1, 3.0, 30)


def test_largest_remainder_sums_exactly():
    assert largest_remainder(10, [2, 1]) == [7, 3]
    assert largest_remainder(7, [0.15, 0.7, 0.15]) == [1, 5, 1]
    assert sum(largest_remainder(13, [3, 3, 3])) == 13


@pytest.mark.parametrize("strategy", ["uniform", "easy", "hard", "middle", "mixed"])
def test_every_strategy_keeps_size_and_label_mix(strategy):
    rows = select_by_difficulty(LOSSES, LABELS, 9, strategy, seed=1)
    assert len(rows) == len(set(rows)) == 9 and rows == sorted(rows)
    assert Counter(LABELS[r] for r in rows) == {0: 6, 1: 3}
    assert rows == select_by_difficulty(LOSSES, LABELS, 9, strategy, seed=1)


def test_easy_hard_middle_pick_by_loss_within_each_class():
    by_class = {c: sorted((p for p in range(30) if LABELS[p] == c), key=lambda p: LOSSES[p]) for c in (0, 1)}
    easy = select_by_difficulty(LOSSES, LABELS, 9, "easy")
    hard = select_by_difficulty(LOSSES, LABELS, 9, "hard")
    middle = select_by_difficulty(LOSSES, LABELS, 9, "middle")
    assert easy == sorted(by_class[0][:6] + by_class[1][:3])
    assert hard == sorted(by_class[0][-6:] + by_class[1][-3:])
    assert middle == sorted(by_class[0][7:13] + by_class[1][3:6])
    assert LOSSES[easy].mean() < LOSSES[middle].mean() < LOSSES[hard].mean()


def test_mixed_draws_the_shares_from_the_thirds():
    losses = np.arange(60, dtype=float)
    labels = [0] * 60
    rows = select_by_difficulty(losses, labels, 20, "mixed", seed=3, mix=(0.1, 0.8, 0.1))
    thirds = Counter(r // 20 for r in rows)
    assert thirds == {0: 2, 1: 16, 2: 2}
    assert rows != select_by_difficulty(losses, labels, 20, "mixed", seed=4, mix=(0.1, 0.8, 0.1))
    # a third too small for its share: topped up from the class's other rows
    top = select_by_difficulty(losses[:6], [0] * 6, 5, "mixed", mix=(0, 1, 0))
    assert len(top) == 5


def test_regression_rows_form_one_group():
    rows = select_by_difficulty(LOSSES, [0.5] * 30, 4, "hard", regression=True)
    assert rows == [26, 27, 28, 29]


def test_selection_checks_its_input():
    with pytest.raises(ConfigError, match="subset size 31"):
        select_by_difficulty(LOSSES, LABELS, 31, "easy")
    with pytest.raises(ConfigError, match="'hardest'"):
        select_by_difficulty(LOSSES, LABELS, 3, "hardest")
    with pytest.raises(ConfigError, match="--mix"):
        parse_mix("1,2")
    assert parse_mix("1,2,1") == (0.25, 0.5, 0.25)


def test_balanced_order_prefixes_are_balanced_and_nested():
    labels = [0] * 12 + [1] * 5 + [2] * 3
    order = balanced_order(labels, seed=5)
    assert sorted(order) == list(range(20)) and order == balanced_order(labels, seed=5)
    assert order != balanced_order(labels, seed=6)
    for k in range(1, 21):
        counts = Counter(labels[p] for p in order[:k])
        left = [c for c in (0, 1, 2) if counts[c] < labels.count(c)]
        got = [counts[c] for c in left]
        assert not got or max(got) - min(got) <= 1, (k, counts)
    assert Counter(labels[p] for p in order[:9]) == {0: 3, 1: 3, 2: 3}
    assert Counter(labels[p] for p in order[:12]) == {0: 5, 1: 4, 2: 3} or \
        Counter(labels[p] for p in order[:12]) == {0: 4, 1: 5, 2: 3}


def test_few_shot_k_values():
    assert FewShotConfig.of(min_k=16).k_values(100) == [16, 32, 64, 100]
    assert FewShotConfig.of(min_k=16, max_k=40, include_full=False).k_values(100) == [16, 32]
    assert FewShotConfig.of(ks="50,10,10").k_values(50) == [10, 50]
    with pytest.raises(ConfigError, match="--ks 80 exceeds the pool of 50"):
        FewShotConfig.of(ks="10,80").k_values(50)
    with pytest.raises(ConfigError, match="--min-k 64 exceeds"):
        FewShotConfig.of(min_k=64, include_full=False).k_values(50)


@pytest.mark.parametrize("cls,kw,needle", [
    (DataCentricConfig, {"strategies": "easy,tough"}, "--strategies 'tough'"),
    (DataCentricConfig, {"subset_size": 0}, "--subset-size 0"),
    (DataCentricConfig, {"mix": "a,b,c"}, "--mix"),
    (DataCentricConfig, {"lr": -1.0}, "--lr"),
    (NoiseConfig, {"levels": "0.1,1.5"}, "--levels 1.5"),
    (NoiseConfig, {"kinds": "typo"}, "--kinds 'typo'"),
    (NoiseConfig, {"augment_share": 2.0}, "--augment-share"),
    (FewShotConfig, {"seeds": "1,x"}, "--seeds"),
    (FewShotConfig, {"max_k": 8}, "--max-k 8"),
    (TransferConfig, {"placements": "attn-qkv,mlp"}, "--placements 'mlp'"),
    (TransferConfig, {"method": "full"}, "--method 'full'"),
    (TransferConfig, {"lora_rank": 0}, "--lora-rank 0"),
])
def test_config_checks(cls, kw, needle):
    with pytest.raises(ConfigError) as e:
        cls(**kw)
    assert needle in str(e.value)


def test_configs_normalise_lists():
    assert NoiseConfig.of(levels="0.3,0.1,0.3").levels == "0.1,0.3"
    assert NoiseConfig.of(kinds="all").kinds.split(",")[-1] == "mixed"
    assert TransferConfig.of().placement_list == ["attn-qkv", "attn-full", "ffn-only", "full"]
    assert TransferConfig.of().to_dict()["target_task"] == "mrpc"
