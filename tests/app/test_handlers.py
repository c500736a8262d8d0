"""The app's handlers on real folders written by mft run / finetune / export (bert-tiny-random), without a
browser: what each tab computes, that it reads the folders' files, and that bad input is one clear error
with nothing written to the model folders."""
from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch

from mft_engine.app import (
    AppInputError,
    ModelStore,
    compare_batch,
    compare_text,
    describe_folder,
    find_folders,
    inspect_folder,
    predict_batch,
    predict_text,
)
from mft_engine.app import store as store_module
from mft_engine.app.inspection import module_of, zeroed_grid
from mft_engine.app.tables import MAX_TEXT_CHARS
from mft_engine.masking import Mask

from .conftest import snapshot

SENTENCE = "a gripping, beautifully acted film"


@pytest.fixture(scope="module")
def store(app_folders):
    return ModelStore([app_folders.run, app_folders.finetune, app_folders.export], bundled=False)


def key(store, label_part: str) -> str:
    hits = [k for label, k in store.choices() if label_part in label]
    assert len(hits) == 1, (label_part, store.choices())
    return hits[0]


def test_folders_are_described_from_their_files(app_folders):
    run = describe_folder(app_folders.run)
    assert run.kind == "run"
    assert [c.variant for c in run.choices] == ["base", "mask:0.05", "mask:0.1"]
    ft = describe_folder(app_folders.finetune)
    assert ft.kind == "finetune" and [c.variant for c in ft.choices] == ["adapters", "merged"]
    assert describe_folder(app_folders.export).kind == "checkpoint"
    kinds = {i.path.name: i.kind for i in find_folders(app_folders.root)}
    assert kinds == {app_folders.run.name: "run", app_folders.finetune.name: "finetune",
                     app_folders.export.name: "checkpoint"}


def test_masked_model_has_the_runs_mask_applied(app_folders, store):
    record = json.loads((app_folders.run / "results.json").read_text())
    clf = store.get(key(store, "mask 10%"))
    mask = Mask.load(app_folders.run / "mask_0.1.safetensors")
    params = dict(clf.model.named_parameters())
    flat = torch.cat([params[n].detach().reshape(-1) for n in mask.names])
    assert torch.count_nonzero(flat[mask.indices]) == 0
    assert clf.counts["zeroed"] == record["counts"]["zeroed"]["0.1"] == len(mask)
    base = store.get(key(store, "no mask"))
    assert torch.count_nonzero(torch.cat([dict(base.model.named_parameters())[n].detach().reshape(-1)
                                          for n in mask.names])[mask.indices]) > 0


def test_predict_text_gives_label_confidence_latency_and_counts(store):
    p = predict_text(store, key(store, "mask 5%"), SENTENCE)
    assert set(p.probs) == {"negative", "positive"}
    assert sum(p.probs.values()) == pytest.approx(1.0)
    assert p.label == max(p.probs, key=p.probs.get) and p.confidence == p.probs[p.label]
    assert p.latency_ms > 0
    assert p.counts["total"] == 4_386_178 and p.counts["zeroed"] > 0 and p.counts["stored_bytes"] > 0


def test_the_exported_model_predicts_as_the_runs_masked_model(store):
    """mft export wrote the run's model with its 0.1 mask applied: both routes give the same probabilities."""
    a = predict_text(store, key(store, "mask 10%"), SENTENCE)
    b = predict_text(store, key(store, "exported"), SENTENCE)
    assert b.probs == pytest.approx(a.probs, abs=1e-5)
    assert b.counts["zeroed"] == a.counts["zeroed"]


def test_lora_adapters_and_merged_agree(app_folders, store):
    record = json.loads((app_folders.finetune / "results.json").read_text())
    a = predict_text(store, key(store, "lora adapters"), SENTENCE)
    m = predict_text(store, key(store, "lora merged"), SENTENCE)
    assert m.probs == pytest.approx(a.probs, abs=1e-5)
    assert a.counts["trainable"] == record["trainable_params"] and a.counts["stored_bytes"] == record["stored_bytes"]


def test_models_load_once_across_threads(app_folders, monkeypatch):
    calls = []
    real = store_module.load_choice

    def counting(choice, info):
        calls.append(choice.key)
        return real(choice, info)

    monkeypatch.setattr(store_module, "load_choice", counting)
    s = ModelStore([app_folders.run], bundled=False)
    k = key(s, "no mask")
    got = []
    threads = [threading.Thread(target=lambda: got.append(s.get(k))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [k] and all(g is got[0] for g in got)


def test_batch_metrics_match_the_predictions(app_folders, store, tmp_path):
    done = []
    r = predict_batch(store, key(store, "no mask"), app_folders.good_csv, "sentence", "label",
                      on_progress=lambda d, n: done.append((d, n)), out_dir=tmp_path)
    truth = ["positive", "negative", "negative", "positive", "positive"]
    assert r.labels == truth and done[-1] == (5, 5) and len(done) == 5
    assert r.metrics["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(r.predicted, truth)]))
    assert set(r.metrics["recall_per_class"]) == {"negative", "positive"}
    assert {"f1", "mcc"} <= set(r.metrics)
    assert 0 < r.mean_ms and r.p95_ms >= np.median([row[-1] for row in r.rows])
    with r.csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert r.csv_path.parent == tmp_path and len(rows) == 5
    assert [row["predicted"] for row in rows] == r.predicted
    assert float(rows[0]["p_negative"]) + float(rows[0]["p_positive"]) == pytest.approx(1.0, abs=1e-5)


def test_inspect_draws_the_runs_files(app_folders):
    record = json.loads((app_folders.run / "results.json").read_text())
    r = inspect_folder(app_folders.run)
    assert r.kind == "run" and r.fractions == [0.05, 0.1] and r.fraction == 0.1
    assert r.heatmap is not None and r.heatmap.size[0] > 400 and r.curves is not None
    by_layer = {row[0]: row[2] for row in r.table_rows}
    assert by_layer == {g["layer"]: g["zeroed"] for g in record["per_layer"]}  # the largest fraction's
    small = inspect_folder(app_folders.run, fraction=0.05)
    assert sum(row[2] for row in small.table_rows) == record["counts"]["zeroed"]["0.05"]
    assert f"{record['before']['accuracy']:.4g}" in r.summary

    ft = inspect_folder(app_folders.finetune)
    fr = json.loads((app_folders.finetune / "results.json").read_text())
    assert ft.kind == "finetune" and ft.curves is not None  # training_loss.png
    assert ft.table_rows[0][0] == "evaluation half"
    assert ft.table_rows[0][ft.table_header.index("accuracy")] == f"{fr['metrics']['accuracy']:.4g}"


def test_heatmap_grid_cells():
    rows = [{"parameter": "bert.encoder.layer.0.attention.self.query.weight", "numel": "100", "z": "10"},
            {"parameter": "bert.encoder.layer.0.attention.self.query.bias", "numel": "10", "z": "1"},
            {"parameter": "bert.encoder.layer.1.output.dense.weight", "numel": "50", "z": "0"},
            {"parameter": "bert.embeddings.word_embeddings.weight", "numel": "1000", "z": "5"},
            {"parameter": "classifier.weight", "numel": "4", "z": "4"}]
    layers, modules, grid = zeroed_grid(rows, "z")
    assert layers == ["layer.0", "layer.1", "embeddings", "classifier"]
    assert modules == ["attention.self.query", "output.dense", "word_embeddings", "classifier"]
    assert grid[0][0] == pytest.approx(11 / 110) and np.isnan(grid[0][1]) and grid[1][1] == 0.0
    assert grid[2][2] == pytest.approx(0.005) and grid[3][3] == 1.0
    assert module_of("bert.pooler.dense.weight") == ("pooler", "dense")


def test_compare_text_and_csv(app_folders, store, tmp_path):
    a, b = key(store, "no mask"), key(store, "mask 10%")
    t = compare_text(store, a, b, SENTENCE)
    assert t.agree == (t.a.label == t.b.label)
    assert t.latency_diff_ms == pytest.approx(t.b.latency_ms - t.a.latency_ms)
    c = compare_batch(store, a, b, app_folders.good_csv, "sentence", "label", out_dir=tmp_path)
    differ = [i + 1 for i in range(5) if c.a.predicted[i] != c.b.predicted[i]]
    assert [row[0] for row in c.rows] == differ and c.n_disagree == len(differ)
    assert c.agreement == pytest.approx(1 - len(differ) / 5)
    assert c.accuracy_diff == pytest.approx(c.b.metrics["accuracy"] - c.a.metrics["accuracy"])
    assert c.mean_ms_diff == pytest.approx(c.b.mean_ms - c.a.mean_ms)


def test_bad_input_is_one_clear_error_and_writes_nothing(app_folders, store, tmp_path):
    before = snapshot(app_folders.run, app_folders.finetune, app_folders.export)
    k = key(store, "no mask")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("review,label\nfine,1\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("sentence,label\ntrès bien,1\n".encode("latin-1"))
    big = tmp_path / "big.csv"
    big.write_bytes(b"sentence,label\n" + b"a fine film indeed,1\n" * (10 * 2**20 // 21))
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("sentence,label\nfine,1\nmeh,maybe\n", encoding="utf-8")
    not_results = tmp_path / "holiday_photos"
    not_results.mkdir()
    (not_results / "a.txt").write_text("x")

    cases = [
        (lambda: predict_batch(store, k, no_column, "sentence"), "no column 'sentence'"),
        (lambda: predict_batch(store, k, empty, "sentence"), "is empty"),
        (lambda: predict_batch(store, k, latin, "sentence"), "not UTF-8"),
        (lambda: predict_batch(store, k, big, "sentence"), "MiB"),
        (lambda: predict_batch(store, k, bad_label, "sentence", "label"), "row 2: label 'maybe'"),
        (lambda: predict_batch(store, k, None, "sentence"), "no file uploaded"),
        (lambda: predict_text(store, k, "x" * 100_000), f"at most {MAX_TEXT_CHARS:,}"),
        (lambda: predict_text(store, k, "   "), "empty"),
        (lambda: predict_text(store, None, SENTENCE), "pick a model"),
        (lambda: store.add_folder(not_results), "neither a results folder"),
        (lambda: inspect_folder(not_results), "neither a results folder"),
        (lambda: inspect_folder(app_folders.export), "a model folder, not a results folder"),
        (lambda: inspect_folder(tmp_path / "missing"), "does not exist"),
        (lambda: compare_text(store, k, k, SENTENCE), "two different models"),
    ]
    for call, words in cases:
        with pytest.raises(AppInputError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)
    # the store keeps serving after all of it
    assert predict_text(store, k, SENTENCE).label in ("negative", "positive")
    assert snapshot(app_folders.run, app_folders.finetune, app_folders.export) == before


def test_mft_app_without_gradio_names_the_extra(monkeypatch, capsys):
    import importlib.util

    from mft_engine.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["app"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'mft: error: mft app needs gradio: pip install -e ".[app]"'


def test_mft_app_help_shows_the_safe_defaults(capsys):
    from mft_engine.cli import main

    assert main(["app", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--models" in out and "127.0.0.1" in out and "--no-share" in out and "--port" in out


def test_the_bundled_model_is_the_fine_tuned_classifier():
    """The app's bundled entry is `--model minilm-sst2`: a classifier that works, not an untrained head."""
    s = ModelStore([], bundled=True)
    k = key(s, "minilm-sst2")
    good = predict_text(s, k, "a gripping, beautifully acted film that moved me")
    bad = predict_text(s, k, "a dull, tedious mess with nothing to say")
    assert good.label == "positive" and good.confidence > 0.9
    assert bad.label == "negative" and bad.confidence > 0.9
    assert good.counts["total"] == 22_713_986 and good.counts["stored_bytes"] > 90_000_000
