"""The "f32" arithmetic (the one a TPU runs: no float64, no 64-bit bitcasts), forced on PJRT_DEVICE=CPU,
against its stated guarantee (mft_engine/ops/xla/arithmetic.py):
  * exact — same test, same scores, same selection as the reference — when every element with θ ≠ 0 and
    g ≠ 0 has normal |θ|, |g| and lr·|g| ≥ 2^-78 (and, literal, no subnormal intermediate);
  * otherwise the scores are within eps = 2^-125·max(1, lr) of the exact ones and the selection differs
    only among elements whose exact scores lie within 2·eps of the reference's threshold."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torch_xla")

from mft_engine.ops import reference as ref
from mft_engine.ops import xla as mft_xla
from tests.ops.sample_inputs import sample_inputs_detrimental_score, sample_inputs_select_topk

TINY = 2.0 ** -126


@pytest.fixture(autouse=True)
def f32():
    mft_xla.set_arithmetic("f32")
    yield
    mft_xla.set_arithmetic(None)


def in_range(thetas, grads, lr: float, literal: bool) -> bool:
    """The exactness condition of the "f32" arithmetic, checked in float64 on the host."""
    for theta, grad in zip(thetas, grads):
        th, g = theta.double().reshape(-1), grad.double().reshape(-1)
        both = (th != 0) & (g != 0)
        if not bool(both.any()):
            continue
        th, g = th[both].abs(), g[both].abs()
        if bool((th < TINY).any()) or bool((g < TINY).any()):
            return False
        if literal:
            u = (torch.tensor(lr, dtype=torch.float32) * grad.float().reshape(-1)[both])
            n = theta.float().reshape(-1)[both] - u
            diff = theta.float().reshape(-1)[both].abs() - n.abs()
            for x in (u, n, diff):
                if bool(((x != 0) & (x.abs() < TINY)).any()):
                    return False
        elif bool((lr * g < 2.0 ** -78).any()):
            return False
    return True


def eps(lr: float) -> float:
    return 2.0 ** -125 * max(1.0, lr)


SCORE_SAMPLES = sample_inputs_detrimental_score()
SELECT_SAMPLES = sample_inputs_select_topk()


@pytest.mark.parametrize("sample", SCORE_SAMPLES, ids=repr)
def test_scores(device, sample):
    theta, grad, lr, rank_by, literal = sample.args
    got = torch.ops.mft.detrimental_score.default(theta.to(device), grad.to(device), lr, rank_by, literal).cpu()
    want = ref.reference_detrimental_score(*sample.args)
    if in_range([theta], [grad], lr, literal):
        assert torch.equal(got, want), sample.desc
    else:
        assert got.numel() == 0 or float((got - want).abs().max()) < eps(lr), sample.desc


@pytest.mark.parametrize("sample", SELECT_SAMPLES, ids=repr)
def test_selection(device, sample):
    thetas, grads, lr, k, rank_by, literal = sample.args
    if sum(t.numel() for t in thetas) == 0:
        pytest.skip("no elements")
    r_indices, r_threshold, r_tied = ref.reference_select_topk(*sample.args)
    x_thetas, x_grads = [t.to(device) for t in thetas], [g.to(device) for g in grads]
    if in_range(thetas, grads, lr, literal):
        masks, threshold, n_tied = mft_xla.select_mask(x_thetas, x_grads, lr, k, rank_by, literal)
        assert torch.equal(mft_xla.masks_to_indices(masks), r_indices), sample.desc
        assert torch.equal(threshold.cpu(), r_threshold) and int(n_tied.cpu()) == int(r_tied), sample.desc
        return
    # Outside the range: the detrimental count may be smaller (flushed elements), k is capped to it.
    scores = ref.reference_scores(thetas, grads, lr, rank_by, literal)
    n_det = int(torch.ops.mft.detrimental_count.default(x_thetas, x_grads, lr, literal).sum().cpu())
    lost = int((scores > 0).sum()) - n_det
    assert lost >= 0 and int(((scores > 0) & (scores < eps(lr))).sum()) >= lost, sample.desc
    k = min(k, n_det)
    masks, _, _ = mft_xla.select_mask(x_thetas, x_grads, lr, k, rank_by, literal)
    got = set(mft_xla.masks_to_indices(masks).tolist())
    want = set(ref.reference_select_topk(thetas, grads, lr, k, rank_by, literal)[0].tolist())
    assert len(got) == k
    threshold = float(scores[sorted(want)].min()) if want else math.inf
    for i in got ^ want:
        assert abs(float(scores[i]) - threshold) <= 2 * eps(lr), (sample.desc, i)


def test_scores_equal_in_fp32_but_distinct_rank_exactly(device):
    """lr·g for g = 1.5 + j·2^-23 are exact and distinct, spaced 1.5·2^-23 apart in [2, 4) where fp32's
    spacing is 2^-22: neighbours round to the same fp32 number. With k cutting inside such a pair the
    exact order (larger j first) decides, not the flat index (which favours the smaller j here)."""
    lr = 1.5
    j = torch.arange(64, dtype=torch.float64)
    grad = (1.5 + j * 2.0 ** -23).float()
    theta = torch.full((64,), 100.0)
    scores = ref.reference_scores([theta], [grad], lr, "update")
    order = torch.sort(scores, descending=True, stable=True).indices
    s = scores[order]
    collide = ((s[:-1].float() == s[1:].float()) & (s[:-1] != s[1:])).nonzero().reshape(-1)
    assert collide.numel() > 0
    for p in collide[:4].tolist():
        k = p + 1
        masks, threshold, _ = mft_xla.select_mask([theta.to(device)], [grad.to(device)], lr, k, "update")
        indices, r_threshold, _ = ref.reference_select_topk([theta], [grad], lr, k, "update")
        assert torch.equal(mft_xla.masks_to_indices(masks), indices), k
        assert torch.equal(threshold.cpu(), r_threshold), k
