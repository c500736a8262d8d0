"""Shared fixtures: a tiny random BERT classifier and synthetic batches (offline, seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"


def tiny_bert(num_labels: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(cfg).eval()


def synthetic_batch(n: int, t: int, seed: int, vocab: int = 100, num_labels: int = 2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, num_labels, (n,), generator=g)}


@pytest.fixture
def tiny_model():
    return tiny_bert()


@pytest.fixture
def shared_glue():
    if not (SHARED_GLUE / "SST-2" / "train.tsv").is_file():
        pytest.skip("../shared/data/glue is not present")
    return SHARED_GLUE
