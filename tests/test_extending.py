"""A method and a scorer added from one file each (tests/train/toy_method.py, tests/scoring/toy_scorer.py),
run through `mft finetune`, `mft compare` and `mft validate-scorer`.

Each runs in its own interpreter: registering a method or scorer is global, and the other tests check the
built-in registries exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .cli.test_bad_input import sst2_folder
from .train.conftest import keyword_rows

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


METHOD = """
import json, sys
import tests.train.toy_method  # the one line that adds the method
from mft_engine.cli import main
from mft_engine.errors import ConfigError
from mft_engine.train import FinetuneConfig

cfg = FinetuneConfig.of(method="toy-top-bias", toy_layers=2)
assert cfg.method_options().toy_layers == 2 and cfg.to_dict()["toy_layers"] == 2 and cfg.lr == 1e-3
assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg
try:
    FinetuneConfig.of(method="toy-top-bias", toy_layers=0)
    raise SystemExit("toy_layers=0 was accepted")
except ConfigError as e:
    assert "--toy-layers 0" in str(e), e
code = main(["finetune", "--method", "toy-top-bias", "--model", "bert-tiny-random", "--data-dir", sys.argv[1],
             "--max-steps", "3", "--quiet", "--no-save-model", "--out", sys.argv[2], "--json"])
assert code == 0, code
run = next(p for p in __import__("pathlib").Path(sys.argv[2]).iterdir() if p.name.startswith("finetune_"))
code = main(["compare", str(run), "--out", sys.argv[2], "--json"])
assert code == 0, code
"""


def test_a_method_in_one_file_runs_through_finetune_and_compare(tmp_path):
    data = sst2_folder(tmp_path / "glue", train_rows=keyword_rows(64, 0), dev_rows=keyword_rows(40, 1))
    out = tmp_path / "results"
    done = _python(METHOD, str(data), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = out.glob("finetune_toy-top-bias_*")
    rec = json.loads((run / "results.json").read_text())
    assert rec["method"] == "toy-top-bias" and rec["method_label"] == "toy-top-bias (top 1)"
    assert rec["config"]["toy_layers"] == 1 and rec["method_notes"] == {"toy_layers": 1}
    # bert-tiny's top layer has 6 Linear biases (3 × 128, 128, 512, 128) and 2 LayerNorm biases (128 each),
    # plus the classifier (128 × 2 + 2)
    assert rec["trainable_params"] == 3 * 128 + 128 + 512 + 128 + 2 * 128 + 128 * 2 + 2
    (table,) = out.glob("compare_*/methods.md")
    assert "toy-top-bias (top 1)" in table.read_text()


SCORER = """
import json, sys
import torch
import tests.scoring.toy_scorer  # the one line that adds the scorer
from mft_engine.cli import main
from mft_engine.errors import ConfigError
from mft_engine.scoring import ScoringInputs, get_scorer

lin = torch.nn.Linear(3, 2)
inputs = ScoringInputs(model=lin, names=["weight"], options={"toy_power": 3.0})
got = get_scorer("toy-power").score(inputs)["weight"]
torch.testing.assert_close(got, lin.weight.detach().double().abs() ** 3)
for bad, needle in (({"toy_power": "x"}, "config field toy_power"), ({"toy_power": -1.0}, "toy_power=-1.0")):
    try:
        get_scorer("toy-power").score(ScoringInputs(model=lin, names=["weight"], options=bad))
        raise SystemExit(f"{bad} was accepted")
    except ConfigError as e:
        assert needle in str(e), e
try:
    ScoringInputs(model=lin, names=["weight"], options={"toy_pwr": 2.0})
    raise SystemExit("an unknown option was accepted")
except ConfigError as e:
    assert "toy_pwr" in str(e), e
code = main(["validate-scorer", "--model", "bert-tiny-random", "--task", "sst2", "--data-dir", sys.argv[1],
             "--samples", "32", "--batch-size", "8", "--n-params", "60", "--scorers", "toy-power,magnitude",
             "--damping-sweep", "", "--no-additivity", "--out", sys.argv[2], "--json"])
assert code == 0, code
"""


def test_a_scorer_in_one_file_runs_through_validate_scorer(tmp_path, capfd):
    data = sst2_folder(tmp_path / "glue", train_rows=keyword_rows(40, 0), dev_rows=keyword_rows(60, 1, flip=0.2))
    out = tmp_path / "results"
    done = _python(SCORER, str(data), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rec = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(rec["scorers"]) == {"toy-power", "magnitude"}
    # |θ|² ranks the sampled parameters exactly as |θ| does: the same rank correlation with |ΔL|, on each set
    for side in ("scoring", "heldout"):
        assert rec["scorers"]["toy-power"][side]["spearman"] == rec["scorers"]["magnitude"][side]["spearman"]
    assert rec["scorers"]["toy-power"]["signed"] is False
