"""Provenance of a gradient state: model fingerprints, file hashes, rows, and the first difference named."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from mft_engine.collect.provenance import (FIRST_ROWS, build_provenance, file_sha256, model_fingerprint,
                                           provenance_difference, rows_sha256)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(cfg)


def linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def prov(**kw):
    base = dict(model_fingerprint="a" * 64, rows=list(range(32)), data_files={"train": "b" * 64},
                reduction="batch-sum", batch_size=8, train_mode=True, seed=42, precision="fp32", max_length=128)
    return build_provenance(**{**base, **kw})


# ------------------------------------------------------------------------------------------- fingerprint

def test_fingerprint_is_stable_across_two_identical_models():
    a, b = tiny_bert(), tiny_bert()
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(a)
    assert model_fingerprint(a) != model_fingerprint(tiny_bert(seed=1))
    assert len(model_fingerprint(a)) == 64


def test_fingerprint_changes_when_one_weight_moves_one_ulp():
    m = tiny_bert()
    before = model_fingerprint(m)
    w = m.classifier.weight
    with torch.no_grad():
        old = w[1, 3].clone()
        w[1, 3] = torch.nextafter(old, torch.tensor(float("inf")))
    assert w[1, 3] != old and (w[1, 3] - old).abs() < 1e-6
    assert model_fingerprint(m) != before
    with torch.no_grad():
        w[1, 3] = old
    assert model_fingerprint(m) == before


def test_fingerprint_changes_when_a_name_changes():
    class Renamed(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear):
            super().__init__()
            self.other = inner  # same tensors, another name

    class Same(torch.nn.Module):
        def __init__(self, inner: torch.nn.Linear):
            super().__init__()
            self.lin = inner

    lin = linear()
    assert model_fingerprint(Same(lin)) != model_fingerprint(Renamed(lin))
    assert model_fingerprint(Same(lin)) == model_fingerprint(Same(linear()))


def test_fingerprint_changes_when_the_dtype_or_shape_changes():
    lin = linear()
    fp32 = model_fingerprint(lin)
    assert model_fingerprint(linear().to(torch.float64)) != fp32
    bf16 = model_fingerprint(linear().to(torch.bfloat16))  # numpy has no bf16: hashed through a byte view
    assert bf16 != fp32 and bf16 == model_fingerprint(linear().to(torch.bfloat16))

    # the same bytes under another shape are another model
    reshaped = linear()
    reshaped.weight = torch.nn.Parameter(lin.weight.detach().reshape(4, 3).clone())
    assert model_fingerprint(reshaped) != fp32


def test_fingerprint_covers_frozen_parameters_and_ignores_memory_layout():
    m = linear()
    before = model_fingerprint(m)
    m.weight.requires_grad_(False)
    assert model_fingerprint(m) == before
    strided = linear()
    strided.weight = torch.nn.Parameter(m.weight.detach().t().contiguous().t())  # same values, column-major
    assert not strided.weight.is_contiguous() and model_fingerprint(strided) == before
    with torch.no_grad():
        m.weight.mul_(2)
    assert model_fingerprint(m) != before


# ----------------------------------------------------------------------------------------- files and rows

def test_file_sha256_streams_the_bytes(tmp_path):
    p = tmp_path / "train.tsv"
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(p)) == file_sha256(p)
    with pytest.raises(OSError):
        file_sha256(tmp_path / "missing.tsv")


def test_rows_are_a_count_a_hash_and_the_first_few():
    rows = list(range(67349))
    p = prov(rows=rows)
    assert p["rows"] == {"count": 67349, "sha256": rows_sha256(rows), "first": rows[:FIRST_ROWS]}
    assert len(json.dumps(p)) < 1000  # small enough for a safetensors header
    assert json.loads(json.dumps(p)) == p
    assert rows_sha256([0, 1, 2]) != rows_sha256([0, 2, 1])  # order matters
    assert rows_sha256([0, 1, 2]) == hashlib.sha256(b"[0,1,2]").hexdigest()


def test_rows_may_be_numpy_integers():
    import numpy as np

    p = prov(rows=[np.int64(5), np.int64(7)])
    assert p["rows"]["first"] == [5, 7] and p["rows"]["sha256"] == rows_sha256([5, 7])
    assert provenance_difference(p, prov(rows=[5, 7])) is None


# ------------------------------------------------------------------------------------------- differences

def test_the_same_provenance_agrees():
    assert provenance_difference(prov(), prov()) is None


def test_row_counts_are_named_with_their_first_rows():
    assert provenance_difference(prov(), prov(rows=list(range(64)))) == (
        "it was collected on 32 rows (first 0, 1, 2, 3, 4) and this run uses 64 rows (first 0, 1, 2, 3, 4)")
    assert provenance_difference(prov(rows=[0, 1]), prov(rows=[0, 1, 2])) == (
        "it was collected on 2 rows (0, 1) and this run uses 3 rows (0, 1, 2)")


def test_the_same_number_of_other_rows_is_named():
    seeded = [9, 3, 7] + list(range(100, 129))
    assert provenance_difference(prov(), prov(rows=seeded)) == (
        "it was collected on 32 rows (first 0, 1, 2, 3, 4) and this run uses 32 other rows (first 9, 3, 7, 100, 101)")
    later = list(range(31)) + [99]
    assert provenance_difference(prov(), prov(rows=later)) == (
        "it was collected on 32 rows and this run uses 32 different rows (both start 0, 1, 2, 3, 4)")


@pytest.mark.parametrize("change,expected", [
    (dict(model_fingerprint="c" * 64), "the model differs (fingerprint aaaaaaaaaaaa… vs cccccccccccc…)"),
    (dict(data_files={"train": "d" * 64}), "the train data differs (sha256 bbbbbbbbbbbb… vs dddddddddddd…)"),
    (dict(data_files={"train": "b" * 64, "validation": "e" * 64}),
     "it was collected with data files train and this run has data files train, validation"),
    (dict(reduction="mean"), "it was collected with --reduction batch-sum and this run uses mean"),
    (dict(batch_size=4), "it was collected with --batch-size 8 and this run uses 4"),
    (dict(train_mode=False),
     "it was collected in train mode (dropout on) and this run collects in eval mode (dropout off)"),
    (dict(seed=7), "it was collected with --seed 42 and this run uses 7"),
    (dict(precision="bf16"), "it was collected with --precision fp32 and this run uses bf16"),
    (dict(max_length=16), "it was collected with --max-length 128 and this run uses 16"),
    (dict(version=2), "its provenance is version 1 and this run records version 2"),
])
def test_each_difference_is_named(change, expected):
    assert provenance_difference(prov(), prov(**change)) == expected


def test_the_first_difference_wins_in_a_fixed_order():
    order = [dict(model_fingerprint="c" * 64), dict(data_files={"train": "d" * 64}), dict(rows=[1, 2]),
             dict(reduction="mean"), dict(batch_size=4), dict(train_mode=False), dict(seed=7),
             dict(precision="bf16"), dict(max_length=16)]
    words = ["model", "train data", "rows", "--reduction", "--batch-size", "eval mode", "--seed", "--precision",
             "--max-length"]
    for i, word in enumerate(words):
        changed = {k: v for change in order[i:] for k, v in change.items()}
        assert word in provenance_difference(prov(), prov(**changed)), (word, changed)


def test_a_missing_or_partial_saved_provenance_is_a_difference():
    assert provenance_difference(None, prov()) == "it records nothing of what it was built from"
    partial = {k: v for k, v in prov().items() if k != "seed"}
    assert provenance_difference(partial, prov()) == "it was collected with --seed None and this run uses 42"
