"""IMDB: a registered task read from a local folder (CSV or JSONL) or the Hub (`stanfordnlp/imdb`), whose
"validation" split is IMDB's test split; offline and without a folder, one clear error (exit 2 in the CLI)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from mft_engine.cli import main
from mft_engine.data import get_task, load_task, sources, task_names
from mft_engine.errors import DataError, DataNotFoundError

from ..cli.test_bad_input import assert_clean_failure

TRAIN = [("A wonderful, \"moving\" film.<br /><br />Loved it", 1), ("Dull, and far too long.", 0),
         ("Bad acting; worse plot", 0)]
TEST = [("Not great, not terrible.", 0), ("A masterpiece, truly", 1)]


def _csv(rows):
    def q(t):
        return '"' + t.replace('"', '""') + '"'
    return "text,label\n" + "".join(f"{q(t)},{y}\n" for t, y in rows)


def _jsonl(rows):
    return "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)


def _imdb(folder, fmt):
    folder.mkdir(parents=True)
    write = _csv if fmt == "csv" else _jsonl
    (folder / f"train.{fmt}").write_text(write(TRAIN), encoding="utf-8")
    (folder / f"test.{fmt}").write_text(write(TEST), encoding="utf-8")
    return folder


def test_registry_lists_imdb():
    assert "imdb" in task_names()
    spec = get_task("IMDB")
    assert spec.num_labels == 2 and spec.text_columns == ("text",) and spec.label_column == "label"
    assert spec.label_names == ("negative", "positive") and spec.metrics == ("accuracy", "f1", "mcc")
    assert spec.hub_dataset == "stanfordnlp/imdb" and spec.hub_split("validation") == "test"
    assert spec.hub_split("train") == "train" and spec.split_files("dev") == ("test.csv", "test.jsonl")
    assert get_task("sst2").hub_dataset == "nyu-mll/glue"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("nested", [True, False])
def test_local_folder(tmp_path, fmt, nested):
    root = tmp_path / "data"
    folder = _imdb(root / "IMDB" if nested else root, fmt)
    train = load_task("imdb", "train", data_dir=root)
    dev = load_task("imdb", "validation", data_dir=root)
    assert train.texts == [t for t, _ in TRAIN] and train.labels == [1, 0, 0]
    assert dev.texts == [t for t, _ in TEST] and dev.labels == [0, 1]
    assert dev.split == "validation" and dev.source == str(folder / f"test.{fmt}")
    assert train.task is get_task("imdb") and dev.num_labels == 2 and train.text_pairs is None


def test_local_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"no IMDB folder.*train\.csv and test\.csv.*text,label"):
        load_task("imdb", "train", data_dir=tmp_path)
    folder = tmp_path / "imdb"
    folder.mkdir()
    (folder / "train.csv").write_text(_csv(TRAIN))
    with pytest.raises(DataNotFoundError, match=r"no test\.csv or test\.jsonl .*test split serves as validation"):
        load_task("imdb", "dev", data_dir=tmp_path)
    (folder / "test.csv").write_text("text,label\nok,2\n")
    with pytest.raises(DataError, match=r"test\.csv line 2 has unknown label '2'"):
        load_task("imdb", "dev", data_dir=tmp_path)


def _fake_datasets(monkeypatch, rows):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return rows[split]

    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(sources, "hub_unavailable_reason", lambda timeout=1.5: None)
    return calls


def test_hub_maps_validation_to_test(monkeypatch):
    calls = _fake_datasets(monkeypatch, {
        "train": {"text": [" good film ", "bad film"], "label": [1, 0]},
        "test": {"text": ["so-so", "superb"], "label": [0, 1]},
    })
    dev = load_task("imdb", "validation")
    assert calls == [("stanfordnlp/imdb", "plain_text", "test")]
    assert dev.texts == ["so-so", "superb"] and dev.labels == [0, 1] and dev.split == "validation"
    assert dev.source == "hub:stanfordnlp/imdb/plain_text/test"
    train = load_task("imdb", "train")
    assert calls[-1] == ("stanfordnlp/imdb", "plain_text", "train")
    assert train.texts == ["good film", "bad film"] and train.labels == [1, 0] and train.num_labels == 2


def test_offline_error_names_task_hub_reason_and_folder():
    # conftest sets HF_HUB_OFFLINE=1, so hub_unavailable_reason answers without touching the network.
    with pytest.raises(DataNotFoundError) as info:
        load_task("imdb", "validation")
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ("imdb validation", "stanfordnlp/imdb", sources.hub_unavailable_reason(), "--data-dir",
                   "IMDB/", "train.csv and test.csv", "train.jsonl and test.jsonl", "text,label",
                   "test split serves as validation"):
        assert needle in msg, needle


def test_cli_offline_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sources, "hub_unavailable_reason", lambda timeout=1.5: "HF_HUB_OFFLINE is set")
    out = tmp_path / "results"
    code = main(["finetune", "--method", "full", "--model", "bert-tiny-random", "--task", "imdb", "--quiet",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, out, "imdb", "Hub", "stanfordnlp/imdb", "HF_HUB_OFFLINE is set", "--data-dir")
