"""Where data comes from: data_dir > MFT_DATA_DIR > embedded SST-2 > the Hub > a clear error."""

from __future__ import annotations

import importlib.machinery
import lzma
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import write_glue
from mft_engine.data import load_data, load_embedded, load_task, read_glue_split, sources
from mft_engine.errors import ConfigError, DataNotFoundError

SHARED_GLUE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"


def _sst2(root: Path, sentence: str) -> Path:
    return write_glue(root, {"SST-2": {"train.tsv": f"sentence\tlabel\n{sentence} \t1\n",
                                       "dev.tsv": f"sentence\tlabel\n{sentence} \t0\n"}})


@pytest.fixture
def hub_down(monkeypatch):
    monkeypatch.setattr(sources, "hub_unavailable_reason", lambda timeout=1.5: "huggingface.co cannot be reached")


def test_data_dir_beats_env_beats_embedded(tmp_path, monkeypatch):
    explicit, env = _sst2(tmp_path / "a", "from data_dir"), _sst2(tmp_path / "b", "from env")
    monkeypatch.setenv("MFT_DATA_DIR", str(env))
    assert load_task("sst2", "train", data_dir=explicit).texts == ["from data_dir"]
    got = load_task("sst2", "validation")
    assert got.texts == ["from env"] and got.source == str(env / "SST-2" / "dev.tsv")
    monkeypatch.delenv("MFT_DATA_DIR")
    assert load_task("sst2", "validation").source == "embedded"


def test_env_root_without_the_task_falls_through(tmp_path, monkeypatch, hub_down):
    monkeypatch.setenv("MFT_DATA_DIR", str(write_glue(tmp_path, {"RTE": {"train.tsv": "x"}})))
    assert load_task("sst-2", "dev").source == "embedded"
    with pytest.raises(DataNotFoundError, match=r"MFT_DATA_DIR=.* has no MRPC folder"):
        load_task("mrpc", "train")


def test_bad_env_dir_and_explicit_dir_do_not_fall_back(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="SST-2"):
        load_task("sst2", "train", data_dir=tmp_path)  # explicit: no silent switch to the embedded copy
    monkeypatch.setenv("MFT_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match=r"MFT_DATA_DIR=.*missing is not a directory"):
        load_task("sst2", "train")


def test_no_source_error_names_the_options(hub_down):
    with pytest.raises(DataNotFoundError) as info:
        load_task("MRPC", "validation")
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ("--data-dir", "MFT_DATA_DIR", "Hub", "nyu-mll/glue", "MRPC/dev.tsv", "cannot be reached"):
        assert needle in msg


def test_hub_unavailable_reasons(monkeypatch):
    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert "HF_HUB_OFFLINE" in sources.hub_unavailable_reason()  # set by conftest
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout: False)
    assert "cannot be reached" in sources.hub_unavailable_reason()
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout: True)
    assert sources.hub_unavailable_reason() is None


def test_hub_path_maps_config_split_and_columns(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return {"premise": ["p0 ", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0], "idx": [0, 1]}

    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(sources, "hub_unavailable_reason", lambda timeout=1.5: None)
    data = load_task("MNLI", "validation")
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched")]
    assert data.texts == ["p0", "p1"] and data.text_pairs == ["h0", "h1"] and data.labels == [2, 0]
    assert data.source == "hub:nyu-mll/glue/mnli/validation_matched"
    fake.load_dataset = lambda name, config, split: {"sentence": ["s"], "label": [-1]}
    with pytest.raises(Exception, match="test splits have no labels"):
        load_task("cola", "train")


def test_load_data_from_config(tmp_path, hub_down):
    assert load_data(SimpleNamespace(task="SST-2", data_dir=None), "dev").source == "embedded"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    (folder / "dev.csv").write_text("text,label\nfine,pos\n")
    cfg = SimpleNamespace(task=str(folder), data_dir=None, text_column=None, text_pair_column=None,
                          label_column=None)
    train, dev = load_data(cfg, "train"), load_data(cfg, "validation")
    assert train.task.labels == dev.task.labels == ("neg", "pos") and dev.labels == [1]
    with pytest.raises(ConfigError, match="neither a known task"):
        load_data(SimpleNamespace(task=str(tmp_path / "nope.csv")), "train")


def test_embedded_files_are_small():
    total = sum(p.stat().st_size for p in sources.BUNDLED_DIR.glob("*.xz"))
    assert 400_000 < total < 1_000_000


@pytest.mark.skipif(not (SHARED_GLUE / "SST-2").is_dir(), reason="../shared/data/glue/SST-2 absent")
@pytest.mark.parametrize("split,file,rows", [("train", "train.tsv", 67349), ("validation", "dev.tsv", 872)])
def test_embedded_sst2_equals_the_shared_glue_copy(split, file, rows):
    name = sources.EMBEDDED["sst2"][split]
    assert lzma.decompress((sources.BUNDLED_DIR / name).read_bytes()) == (SHARED_GLUE / "SST-2" / file).read_bytes()
    embedded, shared = load_embedded("sst2", split), read_glue_split(SHARED_GLUE, "sst2", split)
    assert len(embedded) == len(shared) == rows
    assert embedded.texts == shared.texts and embedded.labels == shared.labels
    assert not any(t != t.strip() for t in embedded.texts)


@pytest.mark.skipif(not (SHARED_GLUE / "MRPC").is_dir(), reason="../shared/data/glue/MRPC absent")
def test_shared_mrpc_reads():
    train, dev = load_task("mrpc", "train", SHARED_GLUE), load_task("mrpc", "dev", SHARED_GLUE)
    # Counted from the files themselves: this copy's train.tsv has 3,667 rows (the Hub's has 3,668).
    for data, file in ((train, "train.tsv"), (dev, "dev.tsv")):
        lines = (SHARED_GLUE / "MRPC" / file).read_text(encoding="utf-8-sig").splitlines()
        assert len(data) == sum(1 for line in lines[1:] if line.strip())
    assert len(dev) == 408
    assert set(train.labels) == {0, 1} and train.text_pairs is not None
