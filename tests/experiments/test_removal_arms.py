"""The removal sweep's pieces without a pipeline: row ranges, the fine-tuning-rows check, the matched step,
flat gathers, the resume identity and the Holm-resolution warning (experiments/removal_arms.py)."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine.data import select_samples
from mft_engine.errors import ConfigError, ResumeError
from mft_engine.experiments.removal_arms import (
    STATE_FILE,
    apply_matched_step,
    check_heldout_against_finetune,
    check_resume,
    gather_flat,
    holm_threshold_note,
    parse_row_range,
    rows_text,
)


def test_parse_row_range():
    assert parse_row_range("--heldout-rows", "last:3", 10) == [7, 8, 9]
    assert parse_row_range("--heldout-rows", "2:5", 10) == [2, 3, 4]
    for bad in ("5:5", "8:11", "last:11", "last:0", "-3:", "a:b", "3"):
        with pytest.raises(ConfigError, match="--heldout-rows"):
            parse_row_range("--heldout-rows", bad, 10)
    assert rows_text([4, 5, 6]) == "4:7" and rows_text([1, 3]) == "1,3"


def _finetune_folder(root, **config):
    run = root / "finetune_full_x"
    ckpt = run / "checkpoints" / "acc_0.60"
    ckpt.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"config": config}))
    return str(ckpt)


def test_heldout_rows_checked_against_the_checkpoints_finetune_rows(tmp_path):
    first = _finetune_folder(tmp_path / "a", task="sst2", samples=20, sample_order="first", seed=1)
    with pytest.raises(ConfigError, match="fine-tuned on"):
        check_heldout_against_finetune(first, "sst2", list(range(15, 25)), 100)
    ok = check_heldout_against_finetune(first, "sst2", list(range(20, 30)), 100)
    assert ok["known"] and ok["finetune_rows"] == "first 20"
    seeded = _finetune_folder(tmp_path / "b", task="sst2", samples=30, sample_order="seeded", seed=3)
    used = select_samples(100, 30, order="seeded", seed=3)
    free = sorted(set(range(100)) - set(used))
    assert check_heldout_against_finetune(seeded, "sst2", free, 100)["known"]
    with pytest.raises(ConfigError, match=f"row {min(used)}"):
        check_heldout_against_finetune(seeded, "sst2", [min(used)], 100)
    every = _finetune_folder(tmp_path / "c", task="sst2", samples=None, sample_order="first", seed=0)
    with pytest.raises(ConfigError):
        check_heldout_against_finetune(every, "sst2", [99], 100)
    assert not check_heldout_against_finetune(first, "mrpc", [5], 100)["known"]
    assert not check_heldout_against_finetune(str(tmp_path), "sst2", [5], 100)["known"]


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Parameter(torch.randn(4, 5, generator=g))
        self.b = torch.nn.Parameter(torch.randn(7, generator=g))


def test_matched_step_has_the_zeroings_norm_and_restores_exactly():
    m = _Two()
    names, shapes = ["a", "b"], [(4, 5), (7,)]
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    grad = {"a": torch.randn(4, 5, dtype=torch.float64), "b": torch.randn(7, dtype=torch.float64)}
    idx = torch.tensor([1, 6, 19, 20, 26], dtype=torch.int64)  # spans both tensors, both ends
    flat_theta = torch.cat([before["a"].reshape(-1), before["b"]]).double()
    flat_g = torch.cat([grad["a"].reshape(-1), grad["b"]])
    torch.testing.assert_close(gather_flat([grad["a"], grad["b"]], idx), flat_g[idx])
    mask, info = apply_matched_step(m, names, shapes, idx, grad)
    after = torch.cat([m.a.detach().reshape(-1), m.b.detach()]).double()
    change = after - flat_theta
    off = torch.ones(27, dtype=torch.bool)
    off[idx] = False
    assert torch.all(change[off] == 0)
    assert float(change.norm()) == pytest.approx(float(flat_theta[idx].norm()), rel=1e-6)
    assert info["step_norm"] == pytest.approx(info["zeroed_norm"], rel=1e-12)
    # the step is along −g on the support
    eta = info["zeroed_norm"] / info["gradient_norm"]
    torch.testing.assert_close(change[idx], -eta * flat_g[idx], rtol=1e-5, atol=1e-6)
    cos = float(flat_theta[idx] @ flat_g[idx]) / (info["zeroed_norm"] * info["gradient_norm"])
    assert info["cosine_zeroing_descent"] == pytest.approx(cos, rel=1e-9)
    assert info["first_order_zero"] == pytest.approx(-float(flat_theta[idx] @ flat_g[idx]), rel=1e-9)
    assert info["first_order_step"] == pytest.approx(float(flat_g[idx] @ change[idx]), rel=1e-5)
    mask.restore(m)
    for n, p in m.named_parameters():
        assert torch.equal(p.detach(), before[n])


def test_resume_identity_ignores_only_where_and_device(tmp_path):
    cfg = {"n_removed": "10", "seed": 1, "out": "results", "name": "x", "resume": None, "device": "cpu"}
    (tmp_path / STATE_FILE).write_text(json.dumps({"config": cfg}))
    check_resume(tmp_path, {**cfg, "out": "elsewhere", "name": None, "resume": str(tmp_path), "device": "cuda"})
    with pytest.raises(ResumeError, match="--n-removed"):
        check_resume(tmp_path, {**cfg, "n_removed": "10,100"})
    with pytest.raises(ResumeError, match="not an influence folder"):
        check_resume(tmp_path / "nowhere", cfg)


def test_holm_resolution_warning():
    # 2/(B+1) must be <= alpha/m: 84 cells x 2 sets x 2 tests = 336 tests need B >= 13,440
    assert holm_threshold_note(10_000, 336, 0.05) is not None
    assert "13440" in holm_threshold_note(10_000, 336, 0.05)
    assert holm_threshold_note(20_000, 336, 0.05) is None


def test_influence_config_defaults_and_the_bootstrap_size():
    import math

    from mft_engine.experiments.influence_sweep import STUDY_SCORERS, InfluenceConfig

    cfg = InfluenceConfig.of(heldout_rows="last:5000")
    assert cfg.removal_counts() == [100, 1000, 10000, 100000]
    assert cfg.arm_list() == ["zero", "matched", "random"]
    names, missing = cfg.scorer_names(), cfg.missing_study_scorers()
    assert sorted(names + missing) == sorted(STUDY_SCORERS) and "gradient" in names
    # one checkpoint, 4 N, (scorers x 2 arms + 1 random) cells, 2 tested sets, 2 tests each
    tests = 4 * (2 * len(names) + 1) * 2 * 2
    assert cfg.n_tests() == tests
    assert cfg.bootstrap_resamples() == max(10_000, math.ceil(4 * tests / 0.05))
    assert 2 / (cfg.bootstrap_resamples() + 1) <= 0.05 / tests / 2 + 1e-15
    assert InfluenceConfig.of(resamples=300).bootstrap_resamples() == 300
    for bad in ({"arms": "zero,all"}, {"mcnemar": "asymptotic"}, {"alpha": 0.0}, {"name": "../x"},
                {"name": "a", "resume": "b"}, {"heldout_rows": "5000"}, {"resamples": 0}):
        with pytest.raises(ConfigError):
            InfluenceConfig.of(**bad)
