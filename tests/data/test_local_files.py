"""Local CSV / TSV / JSONL tasks with named columns and label maps."""

from __future__ import annotations

import json

import pytest

from mft_engine.data import load_local, load_local_split, local_split_path
from mft_engine.errors import ConfigError, DataError, DataNotFoundError


def test_csv_with_quotes_string_labels_sorted(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('review,stars\n"Great, really ""great"" ",pos\nmeh,neutral\nawful,neg\n')
    data = load_local(path, text_column="review", label_column="stars")
    assert data.texts == ['Great, really "great"', "meh", "awful"]
    assert data.task.labels == ("neg", "neutral", "pos") and data.labels == [2, 1, 0]
    assert data.task.label_map() == {"neg": 0, "neutral": 1, "pos": 2}
    assert data.text_pairs is None and data.source == str(path) and data.row_ids == [0, 1, 2]


def test_tsv_pairs_int_labels_kept(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('a\tb\ty\nsays "hi\tthere\t2\nx\tz\t0\n\n')
    data = load_local(path, text_column="a", text_pair_column="b", label_column="y")
    assert data.texts == ['says "hi', "x"] and data.text_pairs == ["there", "z"]
    assert data.labels == [2, 0] and data.task.labels == ("0", "1", "2")
    assert data.task.metrics == ("accuracy",)


def test_jsonl_labels_and_map_reuse(tmp_path):
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in [{"text": "a", "label": "yes"}, {"text": "b", "label": "no"}]))
    dev.write_text(json.dumps({"text": "c", "label": "yes"}) + "\n\n")
    tr = load_local(train)
    assert tr.texts == ["a", "b"] and tr.labels == [1, 0]
    assert load_local(dev, labels=tr.task.labels, split="dev").labels == [1]
    dev.write_text(json.dumps({"text": "c", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"line 1 has unknown label 'maybe'"):
        load_local(dev, labels=tr.task.labels)


def test_jsonl_numeric_labels_and_regression(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"s": "a", "y": 1}\n{"s": "b", "y": 0.0}\n{"s": "c", "y": true}\n')
    assert load_local(path, text_column="s", label_column="y").labels == [1, 0, 1]
    path.write_text('{"s": "a", "y": 0.5}\n{"s": "b", "y": 3}\n')
    auto = load_local(path, text_column="s", label_column="y", regression=None)
    assert auto.is_regression and auto.labels == [0.5, 3.0] and auto.task.metrics == ("pearson", "spearman")


@pytest.mark.parametrize(
    "name, content, kw, error, match",
    [
        ("a.csv", "text,label\nx,1\ny,2,3\n", {}, DataError, r"line 3 has 3 columns"),
        ("a.csv", "text,other\nx,1\n", {}, DataError, r"no column 'label'"),
        ("a.csv", "text,label\n", {}, DataError, "no data rows"),
        ("a.csv", "text,label\nx,0\ny,0\n", {}, DataError, "single label"),
        ("a.jsonl", '{"text": "x", "label": 1}\n{oops\n', {}, DataError, r"line 2 is not valid JSON"),
        ("a.jsonl", '{"text": 3, "label": 1}\n', {}, DataError, r"column 'text' is 3"),
        ("a.csv", "text,label\nx,high\n", {"regression": True}, DataError, "finite number"),
        ("a.txt", "x", {}, ConfigError, "file_format"),
    ],
)
def test_bad_local_files(tmp_path, name, content, kw, error, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(error, match=match) as info:
        load_local(path, text_column="text", **kw)
    if error is DataError:
        assert str(path) in str(info.value)


def test_missing_local_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        load_local(tmp_path / "nope.csv", text_column="text")


def test_split_files_beside_each_other(tmp_path):
    (tmp_path / "my_train.csv").write_text("sentence,label\na,1\nb,0\n")
    with pytest.raises(DataNotFoundError, match="my_dev.csv"):
        local_split_path(tmp_path / "my_train.csv", "validation")
    (tmp_path / "my_validation.csv").write_text("sentence,label\nc,1\n")
    assert local_split_path(tmp_path / "my_train.csv", "dev") == tmp_path / "my_validation.csv"
    dev = load_local_split(tmp_path / "my_train.csv", "validation")
    assert dev.texts == ["c"] and dev.split == "validation" and dev.task.labels == ("0", "1")
