"""Fixtures of the fine-tuning tests: bert-tiny-random built once and copied, and a tiny SST-2-format
folder that a random bert-tiny learns in tens of steps (a sentiment word decides the label)."""
from __future__ import annotations

import copy
import random

import pytest

from ..cli.test_bad_input import sst2_folder

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible"]
FILLER = ["the", "movie", "film", "was", "plot", "acting", "a", "really", "story"]


def keyword_rows(n: int, seed: int, flip: float = 0.0) -> list[str]:
    """n TSV rows `sentence\\tlabel`: three filler words and one sentiment word; a `flip` share of labels
    is inverted (a ceiling on the reachable accuracy)."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        words = r.sample(FILLER, 3) + [r.choice(POSITIVE if y else NEGATIVE)]
        r.shuffle(words)
        label = 1 - y if r.random() < flip else y
        rows.append(" ".join(words) + f"\t{label}")
    return rows


@pytest.fixture(scope="session")
def keyword_glue(tmp_path_factory):
    """A GLUE root holding SST-2/ with 256 training rows and 200 dev rows, 20% of dev labels flipped."""
    root = tmp_path_factory.mktemp("keyword_glue")
    return sst2_folder(root, train_rows=keyword_rows(256, 0), dev_rows=keyword_rows(200, 1, flip=0.2))


@pytest.fixture(scope="session")
def _bert_tiny_random():
    from mft_engine.models import load_model

    return load_model("bert-tiny-random", 2, seed=0)


@pytest.fixture
def bert_tiny(_bert_tiny_random):
    """A fresh copy of bert-tiny-random (2 layers, hidden 128, 2 heads, intermediate 512, 2 labels) and its tokenizer."""
    return copy.deepcopy(_bert_tiny_random.model), _bert_tiny_random.tokenizer
