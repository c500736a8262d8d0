"""`mft validate-scorer` and `mft influence` end to end on bert-tiny-random with tiny SST-2/MRPC folders,
and their bad input (one line, exit 2, no results folder)."""
from __future__ import annotations

import json

import pytest

from mft_engine.cli import main

from ..cli.test_bad_input import assert_clean_failure, sst2_folder
from ..train.conftest import keyword_rows

COMMON = ["--model", "bert-tiny-random", "--task", "sst2", "--samples", "32", "--batch-size", "8", "--obs-samples", "50",
          "--cg-max-iter", "5"]


@pytest.fixture(scope="module")
def study_glue(tmp_path_factory):
    """SST-2 with 40 training and 110 dev rows: a scoring half of 55 covers OBS's 50 gradients."""
    return sst2_folder(tmp_path_factory.mktemp("scoring_glue"), train_rows=keyword_rows(40, 0),
                       dev_rows=keyword_rows(110, 1, flip=0.2))


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


def test_validate_scorer_json_and_folder(study_glue, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["validate-scorer", *COMMON, "--data-dir", str(study_glue), "--n-params", "120",
                 "--damping-sweep", "1e-2", "--out", str(out), "--json"])
    assert code == 0
    rec = _json(capsys)
    assert set(rec) >= {"scorers", "base_rate", "n_params", "noise_floor", "n_below_noise", "additivity", "params_per_s",
                        "sets", "oracle", "gradient_influence_disagreement"}
    assert rec["n_params"] == 120
    names = {"gradient", "magnitude", "taylor", "taylor-train", "taylor2", "fisher-taylor", "wanda", "ria", "influence",
             "obs"}
    assert set(rec["scorers"]) == names
    assert set(rec["sets"]) == {"scoring", "heldout"} and set(rec["oracle"]) == {"scoring", "heldout"}
    assert all(s["stack_copies"] >= 1 for s in rec["sets"].values())
    for v in rec["scorers"].values():
        assert set(v) == {"signed", "target", "scoring", "heldout"}
        for side in ("scoring", "heldout"):
            f = v[side]
            if v["signed"]:
                assert v["target"] == "ΔL" and f["balanced_accuracy"] is not None and f["false_positive_rate"] is not None
            else:
                assert v["target"] == "|ΔL|" and f["sign_accuracy"] is None and f["balanced_accuracy"] is None
                assert f["mcc"] is None and f["false_positive_rate"] is None
            assert f["random_ci_low"] <= f["random_mean_delta"] <= f["random_ci_high"]
    assert rec["scorers"]["magnitude"]["signed"] is False and rec["scorers"]["influence"]["signed"] is True
    assert rec["oracle"]["scoring"]["balanced_accuracy"] == 1.0   # ΔL against itself
    g = rec["gradient_influence_disagreement"]
    assert g["gradient_detrimental"] >= g["detrimental_and_beneficial"] >= 0
    assert rec["noise_floor"] >= 0 and rec["params_per_s"] > 0
    assert rec["additivity"]["k"] == 100 and rec["additivity"]["scorer"] == rec["best_signed"]
    assert len(rec["damping_sweep"]) == 1
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.startswith("validate_")
    for f in ("results.json", "summary.txt", "ground_truth.csv", "scorers.csv", "damping_sweep.csv",
              "scorer_vs_truth.png", "logs/run.log", "per_example_scoring.npy", "per_example_heldout.npy"):
        assert (run_dir / f).is_file(), f
    full = json.loads((run_dir / "results.json").read_text())
    assert full["influence_fit"]["residuals"] and full["influence_fit"]["damping"] > 0
    peaks = full["device"]["peak_memory"]["bytes"]
    assert list(peaks) == ["prepare", "ground_truth", "scorers", "additivity"] and min(peaks.values()) > 0
    rows = (run_dir / "ground_truth.csv").read_text().splitlines()
    assert len(rows) == 121 and rows[0].startswith("parameter,index,delta_loss,class,delta_loss_heldout,class_heldout")


def test_validate_scorer_reuses_an_earlier_ground_truth(study_glue, tmp_path, capsys):
    """--ground-truth takes ΔL and the noise floor from an earlier folder; the Woodbury influence is judged
    against them; a run with another seed (other sampled parameters) is refused before any work."""
    out = tmp_path / "results"
    base = [*COMMON, "--data-dir", str(study_glue), "--n-params", "60", "--no-additivity", "--damping-sweep", ""]
    assert main(["validate-scorer", *base, "--scorers", "taylor", "--out", str(out), "--json"]) == 0
    first = _json(capsys)
    assert main(["validate-scorer", *base, "--scorers", "taylor,influence", "--solver", "woodbury",
                 "--solver-precision", "float64", "--ground-truth", first["out_dir"], "--out", str(out), "--json"]) == 0
    second = _json(capsys)
    assert second["scorers"]["taylor"] == first["scorers"]["taylor"]
    assert second["noise_floor"] == first["noise_floor"] and second["base_rate"] == first["base_rate"]
    full = json.loads((tmp_path / "results" / second["out_dir"].split("/")[-1] / "results.json").read_text())
    assert full["ground_truth_from"] == first["out_dir"]
    # --solver-precision float64: the factors and the solution stay float64, so the residual of the full system
    # is small; an fp32 Woodbury's is amplified by the condition number (see lowrank.py). Measured on this set-up
    # (λ = 1.1e-10): 441 with float32, 8.7e-6 with float64.
    assert full["influence_fit"]["solver"] == "woodbury" and full["influence_fit"]["name"].endswith("_float64")
    assert full["influence_fit"]["true_residual"] < 1e-4
    a = [r.split(",")[:3] for r in (tmp_path / "results" / first["out_dir"].split("/")[-1] / "ground_truth.csv").read_text().splitlines()]
    b = [r.split(",")[:3] for r in (tmp_path / "results" / second["out_dir"].split("/")[-1] / "ground_truth.csv").read_text().splitlines()]
    assert a == b
    _fail(["validate-scorer", *base, "--seed", "7", "--ground-truth", first["out_dir"]], tmp_path / "x", capsys,
          "--ground-truth", "seed")
    _fail(["validate-scorer", *base, "--ground-truth", str(tmp_path)], tmp_path / "y", capsys, "--ground-truth")


def test_influence_sweep_folder(study_glue, tmp_path, capsys):
    """Every (scorer, arm, N) cell, each compared with the unmasked model on the same rows; the figures
    agree with each other (Δ = after − before = (c − b) / n, Holm ≥ raw p, the matched step's norm)."""
    out = tmp_path / "results"
    code = main(["influence", *COMMON, "--data-dir", str(study_glue), "--scorers", "gradient,influence,magnitude",
                 "--n-removed", "10,3000", "--resamples", "200", "--heldout-rows", "last:8", "--out", str(out),
                 "--json"])
    assert code == 0
    rec = _json(capsys)
    sweeps = rec["sweeps"]
    scorers = ("gradient", "influence", "magnitude")
    assert {(r["scorer"], r["arm"], r["n_removed"]) for r in sweeps} == {
        *((s, a, n) for s in scorers for a in ("zero", "matched") for n in (10, 3000)),
        *(("random", "random", n) for n in (10, 3000))}
    (base,) = rec["baselines"]
    assert base["heldout_n"] == 8 and base["evaluation_n"] == 55 and base["scoring_n"] == 55
    for r in sweeps:
        for s, n in (("heldout", 8), ("evaluation", 55)):
            d = r[f"{s}_delta_accuracy"]
            assert d == pytest.approx(r[f"{s}_accuracy"] - base[f"{s}_accuracy"], abs=1e-12)
            assert d == pytest.approx((r[f"{s}_mcnemar_c"] - r[f"{s}_mcnemar_b"]) / n, abs=1e-12)
            assert r[f"{s}_delta_loss"] == pytest.approx(r[f"{s}_loss"] - base[f"{s}_loss"], abs=1e-9)
            assert r[f"{s}_delta_accuracy_ci_low"] - 1e-12 <= d <= r[f"{s}_delta_accuracy_ci_high"] + 1e-12
            for m, raw in (("accuracy", r[f"{s}_p_accuracy_exact"]), ("loss", r[f"{s}_p_loss"])):
                assert 0.0 <= raw <= r[f"{s}_p_{m}_holm"] <= 1.0
            assert r[f"{s}_p_accuracy_mid"] <= r[f"{s}_p_accuracy_exact"]
        assert "scoring_p_loss" not in r and 0.0 <= r["scoring_accuracy"] <= 1.0  # in-sample: untested
        if r["arm"] == "matched" and r["gradient_norm"] > 0:
            assert r["step_norm"] == pytest.approx(r["zeroed_norm"], rel=1e-9)
            assert -1.0 <= r["cosine_zeroing_descent"] <= 1.0
    # a zero arm at N=3000 on a random model changes the loss; a 10-parameter one of zeros may not
    assert any(r["evaluation_delta_loss"] != 0.0 for r in sweeps if r["n_removed"] == 3000)
    assert rec["comparisons"]["family_size"] == len(sweeps) * 2 * 2
    assert {c["scorer"] for c in rec["chosen_n"]} == set(scorers)
    assert all(c["chosen_n"] in (10, 3000) and c["reported_on"] == "heldout" for c in rec["chosen_n"])
    assert rec["verdict"] and rec["cells"] == {"computed": len(sweeps), "finished_earlier": 0, "processes": 1}
    (fp,) = rec["gradient_influence_disagreement"]
    assert fp["gradient_detrimental"] >= fp["detrimental_and_beneficial"] >= 0
    if fp["gradient_detrimental"]:
        assert fp["gradient_influence_disagreement"] == pytest.approx(
            (fp["gradient_detrimental"] - fp["detrimental_and_beneficial"]) / fp["gradient_detrimental"])
    (run_dir,) = list(out.iterdir())
    for f in ("results.json", "summary.txt", "removal_sweeps.csv", "baselines.csv", "chosen_n.csv",
              "gradient_influence_disagreement.csv", "removal_curves.png", "sweep_state.json",
              "cells/bert-tiny-random/magnitude__zero__n10.json"):
        assert (run_dir / f).is_file(), f
    full = json.loads((run_dir / "results.json").read_text())
    assert full["sets"]["heldout"] == {"split": "train", "n": 8, "rows": "32:40", "tested": True}
    assert full["sets"]["scoring"]["tested"] is False
    assert full["checkpoints"][0]["finetune_rows_check"]["known"] is False


def test_influence_zero_arm_equals_a_plain_forward(study_glue, tmp_path, capsys):
    """The magnitude zero arm's evaluation-half Δloss and accuracy equal an independent recomputation: the N
    smallest |θ| of the eligible tensors (ties to the lower flat index) zeroed in a fresh copy of the
    checkpoint, one example per forward. The checkpoint is bert-tiny-random with its head scaled ×1000, so
    that the loss feels the encoder (the random head's near-uniform logits hide changes of ~1e-6): zeroing
    the next N instead moves Δloss by ~1e-3, far outside the tolerance."""
    import torch
    import torch.nn.functional as F

    from mft_engine.data import load_splits
    from mft_engine.data.batching import validation_halves
    from mft_engine.data.config import DataConfig
    from mft_engine.masking import eligible_parameters
    from mft_engine.models import load_model
    from mft_engine.selection_spec import exclude_patterns

    lm = load_model("bert-tiny-random", 2, seed=42, max_length=128)
    with torch.no_grad():
        lm.model.classifier.weight.mul_(1000.0)
    ckpt = tmp_path / "sharp_head"
    lm.model.save_pretrained(str(ckpt))
    lm.tokenizer.save_pretrained(str(ckpt))
    capsys.readouterr()
    n = 20000
    out = tmp_path / "results"
    assert main(["influence", *COMMON, "--model", str(ckpt), "--data-dir", str(study_glue), "--scorers", "magnitude",
                 "--arms", "zero", "--n-removed", str(n), "--resamples", "50", "--out", str(out), "--json"]) == 0
    (row,) = _json(capsys)["sweeps"]
    model = load_model(str(ckpt), 2, seed=42, max_length=128).model.float().eval()
    val = load_splits(DataConfig(task="sst2", data_dir=str(study_glue))).val
    _, rows = validation_halves(len(val), 42)

    def evaluate() -> tuple[float, float]:
        losses, correct = [], []
        with torch.no_grad():
            for r in rows:
                enc = lm.tokenizer(val.texts[r], truncation=True, max_length=128, return_tensors="pt")
                logits = model(**enc).logits.double()
                losses.append(float(F.cross_entropy(logits, torch.tensor([val.labels[r]]))))
                correct.append(int(logits.argmax(-1)) == val.labels[r])
        return sum(losses) / len(losses), sum(correct) / len(correct)

    loss0, _ = evaluate()
    eligible = eligible_parameters(list(model.named_parameters()), exclude_patterns("influence"))
    flat = torch.cat([p.detach().abs().reshape(-1).double() for _, p in eligible])
    chosen = torch.sort(flat, stable=True).indices[:n]
    with torch.no_grad():
        start = 0
        for _, p in eligible:
            mine = chosen[(chosen >= start) & (chosen < start + p.numel())] - start
            p.view(-1)[mine] = 0.0
            start += p.numel()
    loss1, acc1 = evaluate()
    assert abs(loss1 - loss0) > 1e-3  # the check has power: this N moves the loss
    assert row["evaluation_delta_loss"] == pytest.approx(loss1 - loss0, abs=5e-5)
    assert row["evaluation_loss"] == pytest.approx(loss1, abs=5e-5)
    assert row["evaluation_accuracy"] == acc1


def test_influence_resumes_finished_cells(study_glue, tmp_path, capsys):
    """A rerun with the same --name reads finished cells back and computes only the missing one, to the same
    figures; other settings are refused (one line, exit 2) with the folder left as it was."""
    out = tmp_path / "results"
    args = ["influence", *COMMON, "--data-dir", str(study_glue), "--scorers", "gradient,magnitude",
            "--matched-gradient", "train", "--n-removed", "10,3000", "--resamples", "100", "--name", "r",
            "--out", str(out)]
    assert main([*args, "--json"]) == 0
    first = _json(capsys)
    folder = out / "influence_r"
    assert first["out_dir"] == str(folder) and first["cells"]["computed"] == 10
    matched = [r for r in first["sweeps"] if r["arm"] == "matched"]
    assert len(matched) == 4 and all(r["matched_gradient"] == "train" for r in matched)
    assert all(r["step_norm"] == pytest.approx(r["zeroed_norm"], rel=1e-9) for r in matched if r["gradient_norm"])
    (folder / "cells/bert-tiny-random/magnitude__zero__n3000.json").unlink()
    assert main([*args, "--json"]) == 0
    second = _json(capsys)
    assert second["cells"] == {"computed": 1, "finished_earlier": 9, "processes": 1}
    assert second["sweeps"] == first["sweeps"]
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert main([*args, "--n-removed", "10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n-removed" in err[0] and "Traceback" not in err[0]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def _fail(args, tmp_path, capsys, *needles):
    out = tmp_path / "results"
    code = main([*args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, out, *needles)


@pytest.mark.parametrize("args,needles", [
    (["--damping", "0"], ("--damping",)),
    (["--damping", "-1e-3"], ("--damping",)),
    (["--scorers", "gradient,hessian-magic"], ("--scorers", "hessian-magic")),
    (["--n-params", "100000000"], ("--n-params", "eligible")),
    (["--solver", "newton"], ("--solver",)),
    (["--obs-samples", "10"], ("--obs-samples",)),
    (["--solver-precision", "float16"], ("--solver-precision",)),
    (["--held-out", "train-first:5"], ("--held-out",)),
    (["--held-out", "train-last:20"], ("--held-out", "overlaps")),   # rows 20..39 include --samples 32's
    (["--held-out", "train-last:500"], ("--held-out", "training split")),
    (["--resamples", "5"], ("--resamples",)),
    (["--stack-mib", "0"], ("--stack-mib",)),
])
def test_validate_scorer_bad_input(study_glue, tmp_path, capsys, args, needles):
    _fail(["validate-scorer", *COMMON, "--data-dir", str(study_glue), *args], tmp_path, capsys, *needles)


def test_checkpoint_whose_labels_do_not_match_the_task(study_glue, tmp_path, capsys, bert_tiny):
    from transformers import BertForSequenceClassification

    model, tok = bert_tiny
    cfg = model.config
    cfg.num_labels = 3
    three = BertForSequenceClassification(cfg)
    ckpt = tmp_path / "three_labels"
    three.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    capsys.readouterr()  # transformers' "Writing model shards" bar
    args = ["--model", str(ckpt), "--task", "sst2", "--data-dir", str(study_glue), "--samples", "32"]
    _fail(["validate-scorer", *args], tmp_path, capsys, "labels")
    _fail(["influence", *args], tmp_path, capsys, "labels")


def test_influence_bad_input(study_glue, tmp_path, capsys):
    base = ["influence", *COMMON, "--data-dir", str(study_glue), "--scorers", "magnitude"]
    _fail([*base, "--n-removed", "10,100000000"], tmp_path, capsys, "--n-removed", "eligible")
    _fail([*base, "--heldout-rows", "0:8"], tmp_path / "h1", capsys, "--heldout-rows", "--samples")
    _fail([*base, "--heldout-rows", "30:100"], tmp_path / "h2", capsys, "--heldout-rows", "40")
    _fail([*base, "--heldout-rows", "the end"], tmp_path / "h3", capsys, "--heldout-rows")
    _fail([*base, "--arms", "zero,shuffle"], tmp_path / "a", capsys, "--arms", "shuffle")
    _fail([*base, "--matched-gradient", "hessian"], tmp_path / "m", capsys, "--matched-gradient")
    _fail([*base, "--resume", str(tmp_path)], tmp_path / "r", capsys, "--resume")
    _fail([*base, "--checkpoints", str(tmp_path / "missing.json")], tmp_path, capsys, "--checkpoints")
    bad = tmp_path / "checkpoints.json"
    bad.write_text(json.dumps({"targets": [{"target": 0.9, "reached": False, "path": None}]}))
    _fail([*base, "--checkpoints", str(bad)], tmp_path, capsys, "no reached target")


#: taylor's balanced accuracy of the sign on the scoring half (in-sample: it fits ∇L_score there), bert-tiny-random,
#: float64 ground truth, the run of test_verdicts_that_can_fail below: measured 1.000 (200 parameters; see its
#: docstring); the threshold leaves room for other BLAS rounding, not for a sign error (which gives ~0).
TAYLOR_BALANCED_ACCURACY = 0.95


def test_verdicts_that_can_fail(study_glue, tmp_path):
    """Issue 17's tests, on bert-tiny-random with float64 ground truth, through the pipeline (API):
    taylor's scoring-half balanced accuracy >= TAYLOR_BALANCED_ACCURACY; the sign-flipped taylor <= 1 − it;
    an unsigned scorer's ρ equals scipy's spearmanr(score, |ΔL|) on both sets; the held-out ΔL (measured in
    chunks of 20 examples) equals a plain forward / zero / forward on those examples to 1e-10; the results
    record the rows of each set, and the held-out training rows are none of g's. Fail when the sign
    convention is flipped (in the scorer or in the judge)."""
    import csv

    import numpy as np
    from scipy.stats import spearmanr

    from mft_engine.experiments.scoring_setup import prepare_bench
    from mft_engine.experiments.truth_sets import truth_sets
    from mft_engine.experiments.validate_scorer import ValidateConfig, validate_scorers
    from mft_engine.scoring.ground_truth import naive_delta
    from mft_engine.scoring.ground_truth.judge import judge_scorer

    cfg = ValidateConfig.of(model="bert-tiny-random", task="sst2", data_dir=str(study_glue), samples=32, batch_size=8,
                            n_params=200, scorers="taylor,magnitude", additivity=False, damping_sweep="",
                            held_out="evaluation,train-last:8", truth_chunk_examples=20, resamples=200,
                            out=str(tmp_path / "results"))
    result = validate_scorers(cfg)
    rec = result.record
    taylor, magnitude = rec["scorers"]["taylor"], rec["scorers"]["magnitude"]
    assert taylor["scoring"]["balanced_accuracy"] >= TAYLOR_BALANCED_ACCURACY, taylor
    with (result.out_dir / "ground_truth.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    delta = {s: np.array([float(r[c]) for r in rows]) for s, c in (("scoring", "delta_loss"),
                                                                      ("heldout", "delta_loss_heldout"))}
    flipped = judge_scorer("taylor-flipped", True, -np.array([float(r["taylor"]) for r in rows]), delta["scoring"],
                           rec["sets"]["scoring"]["noise_floor"])
    assert flipped.balanced_accuracy <= 1 - TAYLOR_BALANCED_ACCURACY
    harm = np.array([float(r["magnitude"]) for r in rows])
    for side in ("scoring", "heldout"):
        assert magnitude[side]["spearman"] == pytest.approx(spearmanr(harm, np.abs(delta[side])).statistic, abs=1e-12)

    parts = rec["rows"]["heldout"]
    assert [p["which"] for p in parts] == ["evaluation half", "last 8 rows"] and parts[1]["rows"] == list(range(32, 40))
    assert not set(parts[1]["rows"]) & set(rec["gradient_rows"]) and len(rec["gradient_rows"]) == 32
    assert rec["sets"]["heldout"]["n_examples"] == 55 + 8 and rec["sets"]["heldout"]["chunks"] > 1
    bench = prepare_bench(cfg)
    (_, heldout) = truth_sets(cfg, bench)
    for j in (0, 57, 123, 199):
        name, idx = rows[j]["parameter"], int(rows[j]["index"])
        assert abs(delta["heldout"][j] - naive_delta(bench.model, heldout.batches, name, idx)) <= 1e-10
