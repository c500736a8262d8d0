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
    assert set(rec) >= {"scorers", "base_rate", "n_params", "noise_floor", "n_below_noise", "additivity", "params_per_s"}
    assert rec["n_params"] == 120
    names = {"gradient", "magnitude", "taylor", "taylor2", "fisher-taylor", "wanda", "ria", "influence", "obs"}
    assert set(rec["scorers"]) == names
    for name, v in rec["scorers"].items():
        assert set(v) == {"signed", "sign_accuracy", "balanced_accuracy", "mcc", "spearman", "top100_precision"}
        if v["signed"]:
            assert 0.0 <= v["balanced_accuracy"] <= 1.0
        else:
            assert v["sign_accuracy"] is None and v["balanced_accuracy"] is None and v["mcc"] is None
    assert rec["scorers"]["magnitude"]["signed"] is False and rec["scorers"]["influence"]["signed"] is True
    assert rec["noise_floor"] >= 0 and rec["params_per_s"] > 0
    assert rec["additivity"]["k"] == 100 and rec["additivity"]["scorer"] == rec["best_signed"]
    assert len(rec["damping_sweep"]) == 1
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.startswith("validate_")
    for f in ("results.json", "summary.txt", "ground_truth.csv", "scorers.csv", "damping_sweep.csv",
              "scorer_vs_truth.png", "logs/run.log"):
        assert (run_dir / f).is_file(), f
    full = json.loads((run_dir / "results.json").read_text())
    assert full["influence_fit"]["residuals"] and full["influence_fit"]["damping"] > 0
    rows = (run_dir / "ground_truth.csv").read_text().splitlines()
    assert len(rows) == 121 and rows[0].startswith("parameter,index,delta_loss")


def test_validate_scorer_reuses_an_earlier_ground_truth(study_glue, tmp_path, capsys):
    """--ground-truth takes ΔL and the noise floor from an earlier folder; the Woodbury influence is judged
    against them; a run with another seed (other sampled parameters) is refused before any work."""
    out = tmp_path / "results"
    base = [*COMMON, "--data-dir", str(study_glue), "--n-params", "60", "--no-additivity", "--damping-sweep", ""]
    assert main(["validate-scorer", *base, "--scorers", "taylor", "--out", str(out), "--json"]) == 0
    first = _json(capsys)
    assert main(["validate-scorer", *base, "--scorers", "taylor,influence", "--solver", "woodbury",
                 "--ground-truth", first["out_dir"], "--out", str(out), "--json"]) == 0
    second = _json(capsys)
    assert second["scorers"]["taylor"] == first["scorers"]["taylor"]
    assert second["noise_floor"] == first["noise_floor"] and second["base_rate"] == first["base_rate"]
    full = json.loads((tmp_path / "results" / second["out_dir"].split("/")[-1] / "results.json").read_text())
    assert full["ground_truth_from"] == first["out_dir"]
    # fp32 Woodbury: its residual is amplified by the condition number (see lowrank.py), so only recorded.
    assert full["influence_fit"]["solver"] == "woodbury" and full["influence_fit"]["true_residual"] >= 0
    a = [r.split(",")[:3] for r in (tmp_path / "results" / first["out_dir"].split("/")[-1] / "ground_truth.csv").read_text().splitlines()]
    b = [r.split(",")[:3] for r in (tmp_path / "results" / second["out_dir"].split("/")[-1] / "ground_truth.csv").read_text().splitlines()]
    assert a == b
    _fail(["validate-scorer", *base, "--seed", "7", "--ground-truth", first["out_dir"]], tmp_path / "x", capsys,
          "--ground-truth", "seed")
    _fail(["validate-scorer", *base, "--ground-truth", str(tmp_path)], tmp_path / "y", capsys, "--ground-truth")


def test_influence_sweep_folder(study_glue, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["influence", *COMMON, "--data-dir", str(study_glue), "--scorers", "gradient,influence,magnitude",
                 "--n-removed", "10,100", "--resamples", "200", "--out", str(out), "--json"])
    assert code == 0
    rec = _json(capsys)
    sweeps = rec["sweeps"]
    assert {(r["scorer"], r["n_removed"]) for r in sweeps} == {
        (s, n) for s in ("gradient", "influence", "magnitude", "random") for n in (10, 100)}
    for r in sweeps:
        assert r["evaluation_ci_low"] <= r["evaluation_accuracy"] <= r["evaluation_ci_high"]
        assert 0.0 <= r["scoring_accuracy"] <= 1.0
    (fp,) = rec["false_positive"]
    assert fp["gradient_detrimental"] >= fp["detrimental_and_beneficial"] >= 0
    if fp["gradient_detrimental"]:
        assert fp["false_positive_rate"] == pytest.approx(
            (fp["gradient_detrimental"] - fp["detrimental_and_beneficial"]) / fp["gradient_detrimental"])
    (run_dir,) = list(out.iterdir())
    for f in ("results.json", "summary.txt", "removal_sweeps.csv", "baselines.csv", "false_positive.csv",
              "removal_curves.png"):
        assert (run_dir / f).is_file(), f


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
    base = ["influence", *COMMON, "--data-dir", str(study_glue)]
    _fail([*base, "--n-removed", "10,100000000"], tmp_path, capsys, "--n-removed", "eligible")
    _fail([*base, "--checkpoints", str(tmp_path / "missing.json")], tmp_path, capsys, "--checkpoints")
    bad = tmp_path / "checkpoints.json"
    bad.write_text(json.dumps({"targets": [{"target": 0.9, "reached": False, "path": None}]}))
    _fail([*base, "--checkpoints", str(bad)], tmp_path, capsys, "no reached target")
