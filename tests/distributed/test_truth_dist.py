"""Ground truth in shards: validate-scorer under torchrun (2 gloo processes) measures the same ΔL as one
process, each rank writing its own shards; an interrupted run resumed with --resume measures only the
shards it had not finished. Items are split by estimated cost, in contiguous blocks."""
import csv
import glob
import json
import re
import os

import numpy as np
import pytest

from mft_engine.cli import main
from mft_engine.collect.distributed import World
from mft_engine.experiments.truth_sets import item_block, noise_share
from mft_engine.scoring.ground_truth import RemovalOracle

from ..cli.test_bad_input import sst2_folder
from ..train.conftest import keyword_rows
from .launch import main_one_thread, torchrun_cli

ARGS = ["validate-scorer", "--model", "bert-tiny-random", "--samples", "16", "--batch-size", "8", "--n-params", "60",
        "--scorers", "gradient,magnitude", "--damping-sweep", "", "--no-additivity", "--held-out", "evaluation",
        "--truth-chunk-examples", "16", "--max-length", "32", "--eval-batch-tokens", "64", "--quiet"]


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return sst2_folder(tmp_path_factory.mktemp("truth_glue"), train_rows=keyword_rows(40, 0),
                       dev_rows=keyword_rows(64, 1, flip=0.2))


def _delta(folder) -> dict[str, list[float]]:
    with open(f"{folder}/ground_truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: [float(r[c]) for r in rows] for c in ("delta_loss", "delta_loss_heldout")}


def test_blocks_are_contiguous_cover_every_item_and_balance_cost():
    costs = np.array([4.0 - L for L in range(4) for _ in range(10)] + [0.01] * 8)
    blocks = [item_block(costs, World(r, 2)) for r in range(2)]
    assert [i for b in blocks for i in b] == list(range(len(costs)))
    loads = [costs[b.start:b.stop].sum() for b in blocks]
    assert abs(loads[0] - loads[1]) <= 4  # within one item's cost
    assert item_block(costs, World()) == range(len(costs))
    assert sorted(len(item_block(np.ones(1), World(r, 3))) for r in range(3)) == [0, 0, 1]  # fewer items than ranks
    assert [len(item_block(np.zeros(0), World(r, 2))) for r in range(2)] == [0, 0]


def test_noise_parts_go_to_the_rank_with_less_work():
    parts = {"a": 5.0, "b": 3.0, "c": 2.0, "d": 1.0}
    costs = np.array([10.0, 1.0, 1.0, 1.0])  # rank 0's block holds the costly item
    shares = [noise_share(parts, costs, World(r, 2)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(parts)
    assert shares[0] == ["c"] and shares[1] == ["a", "b", "d"]  # loads end 12 and 12
    assert noise_share(parts, costs, World()) == list(parts)


def test_resume_measures_only_the_unfinished_shards(glue, tmp_path, monkeypatch, capsys):
    real = RemovalOracle.delta_per_example
    calls = []
    monkeypatch.setattr(RemovalOracle, "delta_per_example", lambda self, items, on_item=None:
                        (calls.append(len(items)), real(self, items, on_item))[1])
    whole = tmp_path / "whole"
    assert main([*ARGS, "--data-dir", str(glue), "--out", str(whole)]) == 0
    n_chunks = len(calls)
    assert n_chunks >= 4, calls  # both sets in several chunks
    calls.clear()

    def failing(self, items, on_item=None):
        calls.append(len(items))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the third chunk
        return real(self, items, on_item)

    cut = tmp_path / "cut"
    monkeypatch.setattr(RemovalOracle, "delta_per_example", failing)
    assert main([*ARGS, "--data-dir", str(glue), "--out", str(cut)]) == 130  # interrupted: the shards are kept
    assert "--resume" in capsys.readouterr().err
    (partial,) = glob.glob(str(cut / ".validate_*.partial"))
    shards = sorted(os.listdir(f"{partial}/truth"))
    assert len(shards) == 2 and all(s.endswith("-of-1.npz") for s in shards)
    stamps = {s: os.stat(f"{partial}/truth/{s}").st_mtime_ns for s in shards}
    calls.clear()
    monkeypatch.setattr(RemovalOracle, "delta_per_example", lambda self, items, on_item=None:
                        (calls.append(len(items)), real(self, items, on_item))[1])
    assert main([*ARGS, "--data-dir", str(glue), "--out", str(cut), "--resume", partial]) == 0
    # the 2 chunks finished before the interruption were read back, not measured again
    assert len(calls) == n_chunks - 2
    (done,) = glob.glob(str(cut / "validate_*"))
    assert _delta(done) == _delta(next(whole.iterdir()))
    assert not os.path.exists(f"{done}/truth")  # the shards are deleted at commit
    assert stamps


def test_resume_with_other_settings_is_refused(glue, tmp_path, capsys):
    folder = tmp_path / ".validate_x.partial"
    (folder / "truth").mkdir(parents=True)
    (folder / "config.json").write_text('{"n_params": 5}')
    assert main([*ARGS, "--data-dir", str(glue), "--out", str(tmp_path), "--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "was started with other settings" in err and "--n-params" in err and err.count("\n") == 0


def test_two_processes_measure_the_one_process_delta(glue, tmp_path):
    r = torchrun_cli([*ARGS, "--data-dir", str(glue), "--out", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert main_one_thread([*ARGS, "--data-dir", str(glue), "--out", str(tmp_path / "one")]) == 0
    (one,), (two,) = glob.glob(str(tmp_path / "one" / "validate_*")), glob.glob(str(tmp_path / "two" / "validate_*"))
    a, b = _delta(one), _delta(two)
    # the noise floor's parts were shared out between the ranks: the same measurements, the same floor
    noise = [json.loads(open(f"{f}/results.json").read())["noise"] for f in (one, two)]
    assert noise[0] == noise[1]
    for col in a:
        # each item is the same computation whichever rank runs it; stacking other items of its layer beside it
        # can move the last bits (float64): 1e-12 absolute is far below any ΔL here
        np.testing.assert_allclose(b[col], a[col], rtol=0, atol=1e-12)
    assert len(glob.glob(str(tmp_path / "two" / "*"))) == 1  # rank 1 wrote no folder of its own


def test_two_processes_share_the_float32_pilot(glue, tmp_path):
    """float32 ground truth: the float64 pilot items are dealt out with the noise parts (a float64 oracle on
    each rank that holds some); the pilot figures are one process's."""
    args = [*ARGS, "--truth-precision", "float32", "--held-out", "none", "--data-dir", str(glue)]
    r = torchrun_cli([*args, "--out", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert main_one_thread([*args, "--out", str(tmp_path / "one")]) == 0
    (one,), (two,) = glob.glob(str(tmp_path / "one" / "validate_*")), glob.glob(str(tmp_path / "two" / "validate_*"))
    a, b = (json.loads(open(f"{f}/results.json").read())["noise"]["scoring"] for f in (one, two))
    assert a["pilot_n"] == b["pilot_n"] == 60 and a["pilot_sign_disagreements"] == b["pilot_sign_disagreements"]
    assert abs(a["pilot_max_abs_diff"] - b["pilot_max_abs_diff"]) <= 1e-12
    assert a["float32_allowed"] == b["float32_allowed"] and a["noop_max"] == b["noop_max"]
    log = open(f"{two}/logs/run.log").read()
    m = re.search(r"rank 0 measures (\d+) of the 11 noise parts and (\d+) of the 60 float64 pilot items", log)
    assert m and int(m.group(1)) < 11 and 0 < int(m.group(2)) < 60, log[-2000:]  # rank 1 measured the rest
