"""`mft run` options on bert-tiny-random with a small SST-2-format folder: what results.json records."""
from __future__ import annotations

import json

import torch

from mft_engine.cli import main
from mft_engine.masking import Mask

from .test_bad_input import sst2_folder

BASE = ["--model", "bert-tiny-random", "--quiet", "--no-control"]


def _run(tmp_path, name, *args):
    out = tmp_path / name
    g = tmp_path / "g"
    if not g.exists():
        rows = [f"{'nice' if i % 2 else 'poor'} film {i} " + "x " * (i % 7) + f"\t{i % 2}" for i in range(40)]
        sst2_folder(g, train_rows=rows)
    assert main(["run", *BASE, "--data-dir", str(g), "--out", str(out), *args]) == 0
    (d,) = list(out.iterdir())
    return d, json.loads((d / "results.json").read_text())


def test_batch_sum_drops_last_partial_batch_unless_kept(tmp_path):
    _, rec = _run(tmp_path, "a", "--samples", "30", "--batch-size", "8")
    assert rec["data"]["samples_used"] == 24 and rec["collection"]["batch_sizes"] == [8, 8, 8]
    assert rec["data"]["rows_used"] == list(range(24))
    _, rec = _run(tmp_path, "b", "--samples", "30", "--batch-size", "8", "--keep-last")
    assert rec["collection"]["batch_sizes"] == [8, 8, 8, 6]


def test_seeded_order_and_mean_reduction(tmp_path):
    _, rec = _run(tmp_path, "a", "--samples", "20", "--sample-order", "seeded", "--reduction", "mean", "--eval-mode",
                  "--seed", "3")
    rows = rec["data"]["rows_used"]
    assert len(rows) == 20 and rows != list(range(20)) and len(set(rows)) == 20
    assert rec["collection"]["reduction"] == "mean" and rec["collection"]["train_mode"] is False
    assert sum(rec["collection"]["batch_sizes"]) == 20


def test_same_seed_same_mask_and_state_reuse(tmp_path):
    d1, r1 = _run(tmp_path, "a", "--samples", "16", "--batch-size", "8", "--save-state")
    d2, r2 = _run(tmp_path, "b", "--samples", "16", "--batch-size", "8")
    m1, m2 = Mask.load(d1 / "mask.safetensors"), Mask.load(d2 / "mask.safetensors")
    assert torch.equal(m1.indices, m2.indices), "same seed, data, config and machine: same mask"
    d3, r3 = _run(tmp_path, "c", "--samples", "16", "--batch-size", "8", "--state",
                  str(d1 / "gradient_state.safetensors"))
    assert torch.equal(Mask.load(d3 / "mask.safetensors").indices, m1.indices)
    assert r3["collection"]["reused_state"]


def test_several_fractions_literal_update_and_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("samples: 16\nbatch-size: 8\nfraction: [0.5, 0.01]\nrank_by: update\nliteral: true\n")
    d, rec = _run(tmp_path, "a", "--config", str(cfg), "--precision", "bf16")
    assert [f["fraction"] for f in rec["fractions"]] == [0.01, 0.5]
    assert (d / "mask_0.01.safetensors").is_file() and (d / "mask_0.5.safetensors").is_file()
    assert rec["config"]["rank_by"] == "update" and rec["config"]["literal"] is True
    assert rec["config"]["precision"] == "bf16"
    k = [f["k"] for f in rec["fractions"]]
    assert k[0] < k[1] <= rec["counts"]["detrimental_eligible"]


def test_influence_exclusion_and_patterns(tmp_path):
    d, rec = _run(tmp_path, "a", "--samples", "8", "--batch-size", "8", "--exclude", "influence")
    names = Mask.load(d / "mask.safetensors").names
    assert all(not any(x in n for x in ("classifier", "pooler", "LayerNorm", "embeddings")) for n in names)
    d, rec = _run(tmp_path, "b", "--samples", "8", "--batch-size", "8", "--exclude", "*.layer.0.*,classifier,pooler")
    names = Mask.load(d / "mask.safetensors").names
    assert not any(".layer.0." in n for n in names) and any(".layer.1." in n for n in names)


def test_info_names_the_kernel_path(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kernel_path"] in ("scalar", "avx2", "avx512")
    import torch

    assert data["torch"] == torch.__version__  # the torch it was built against and runs with (2.9 to 2.13)
