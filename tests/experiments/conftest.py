"""Fixtures of the study tests: a GLUE root with tiny SST-2 (a sentiment word decides the label) and MRPC
(a pair is equivalent when the second sentence repeats the first) folders, in the original formats."""
from __future__ import annotations

import random

import pytest

from ..cli.test_bad_input import sst2_folder
from ..train.conftest import _bert_tiny_random, bert_tiny, keyword_rows  # noqa: F401  (fixtures)

MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "home", "late", "rain", "fell"]


def mrpc_rows(n: int, seed: int) -> list[str]:
    """n MRPC rows `Quality\\t#1 ID\\t#2 ID\\t#1 String\\t#2 String`, labels alternating 0/1."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        a = r.sample(WORDS, 5)
        b = list(a) if y else r.sample(WORDS, 5)
        rows.append(f"{y}\t{1000 + i}\t{2000 + i}\t{' '.join(a)}\t{' '.join(b)}")
    return rows


def mrpc_folder(root, train_rows: int = 32, dev_rows: int = 16):
    d = root / "MRPC"
    d.mkdir(parents=True)
    (d / "train.tsv").write_text(MRPC_HEADER + "\n".join(mrpc_rows(train_rows, 0)) + "\n", encoding="utf-8")
    (d / "dev.tsv").write_text(MRPC_HEADER + "\n".join(mrpc_rows(dev_rows, 1)) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def study_glue(tmp_path_factory):
    """A GLUE root holding SST-2/ (48 train, 20 dev rows) and MRPC/ (32 train, 16 dev rows)."""
    root = tmp_path_factory.mktemp("study_glue")
    sst2_folder(root, train_rows=keyword_rows(48, 0), dev_rows=keyword_rows(20, 1, flip=0.2))
    return mrpc_folder(root)
