"""`mft run` end to end on real SST-2 from ../shared/data/glue: pretrained MiniLM with a new head (200
samples; the chance warning), and the default fine-tuned classifier (minilm-sst2)."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine.cli import main
from mft_engine.masking import Mask
from mft_engine.models import load_model

pytestmark = pytest.mark.integration


def test_minilm_sst2_results_folder(tmp_path, shared_glue):
    out = tmp_path / "results"
    code = main(["run", "--model", "minilm", "--data-dir", str(shared_glue), "--samples", "200",
                 "--fraction", "0.05,0.1", "--out", str(out), "--quiet"])
    assert code == 0
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.startswith("mft_") and not run_dir.name.endswith(".partial")
    for f in ("results.json", "summary.txt", "layers.csv", "gradient_statistics.json", "mask_0.05.safetensors",
              "mask_0.1.safetensors", "accuracy.png", "collection_loss.png", "layer_zeroed.png", "logs/run.log"):
        assert (run_dir / f).is_file(), f
    assert not (run_dir / "gradient_state.safetensors").exists() and not (run_dir / "training_loss.png").exists()
    summary = (run_dir / "summary.txt").read_text()
    assert "NEW, UNTRAINED classification head" in summary
    assert "WARNING: the classifier is at chance" in summary, summary
    rec = json.loads((run_dir / "results.json").read_text())
    assert rec["data"]["samples_used"] == 192 and rec["data"]["rows_used"] == list(range(192))
    assert rec["collection"]["batch_sizes"] == [32] * 6
    assert rec["before"]["n"] == 872
    c = rec["counts"]
    assert c["total"] == 22_713_986
    assert 0 < c["detrimental_eligible"] <= c["eligible"] < c["total"]
    for f in rec["fractions"]:
        assert f["k"] == -(-int(round(f["fraction"] * 1000)) * c["detrimental_eligible"] // 1000)
        assert {"accuracy", "precision", "recall", "f1", "confusion_matrix"} <= set(f["after"])
        assert "control" in f
    assert {"versions", "machine", "timings", "config"} <= set(rec)
    assert rec["chance"]["at_chance"] and rec["model"]["kind"] == "minilm"
    t = rec["timings"]
    parts = sum(v for k, v in t.items() if k != "total_s")
    assert abs(parts - t["total_s"]) <= 0.05 * t["total_s"], t
    assert rec["versions"]["torch"].startswith("2.13")

    # The masked model: zeroed parameters are zero, and restore is exact.
    lm = load_model("minilm", 2, seed=rec["config"]["seed"])
    pristine = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    mask = Mask.load(run_dir / "mask_0.1.safetensors")
    saved = mask.values.clone()
    mask.values = None
    mask.apply(lm.model)
    assert torch.equal(mask.values, saved), "rebuilt model must be the run's model"
    flat = torch.cat([lm.model.get_parameter(n).detach().reshape(-1) for n in mask.names])
    assert bool((flat[mask.indices] == 0).all())
    assert all("classifier" not in n and "pooler" not in n for n in mask.names)
    mask.restore(lm.model)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, pristine[n]), n

    # export writes a checkpoint that loads as --model DIR with the mask applied
    assert main(["export", str(run_dir), str(tmp_path / "exported"), "--fraction", "0.1"]) == 0
    back = load_model(str(tmp_path / "exported"), 2)
    flat = torch.cat([back.model.get_parameter(n).detach().reshape(-1) for n in mask.names])
    assert bool((flat[mask.indices] == 0).all())


def test_the_default_run_studies_the_fine_tuned_classifier(tmp_path, shared_glue):
    """`mft run` with its defaults but fewer samples (the model, "before" and the summary do not depend on them)."""
    out = tmp_path / "results"
    assert main(["run", "--data-dir", str(shared_glue), "--samples", "64", "--out", str(out), "--quiet"]) == 0
    (run_dir,) = list(out.iterdir())
    rec = json.loads((run_dir / "results.json").read_text())
    assert rec["config"]["model"] == "minilm-sst2" and rec["model"]["kind"] == "bundled"
    assert rec["before"]["n"] == 872 and rec["before"]["accuracy"] >= 0.85, rec["before"]
    assert not rec["chance"]["at_chance"]
    summary = (run_dir / "summary.txt").read_text()
    assert "classifier: a fine-tuned classifier" in summary and "minilm-sst2" in summary
    assert "at chance" not in summary
