"""The algebraic test against `--literal` on random data: literal ⇒ algebraic always holds, and they
differ only where fl(θ − lr·g) rounds back to θ or lr|g| lies within one fp32 ulp of 2|θ|."""
import numpy as np
import pytest
import torch

from mft_engine import ops


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lr", [2e-5, 0.5, 1.0, 3.0])
def test_literal_implies_algebraic_and_differs_only_by_rounding(seed, lr):
    g = torch.Generator().manual_seed(seed)
    n = 200_000
    # Magnitudes over many decades, so that tiny steps, boundary steps and overshoots all occur.
    theta = torch.randn(n, generator=g) * torch.pow(10.0, torch.randint(-6, 2, (n,), generator=g).float())
    grad = torch.randn(n, generator=g) * torch.pow(10.0, torch.randint(-9, 2, (n,), generator=g).float())
    # Steps placed right at the boundary lr·|g| ≈ 2|θ| (the overshoot case) for a tenth of the entries.
    lr32 = float(np.float32(lr))
    near = torch.arange(n) % 10 == 0
    grad[near] = (2 * theta[near] / lr32) * (1 + torch.randn(int(near.sum()), generator=g) * 1e-7)
    literal = ops.detrimental_score(theta, grad, lr, literal=True) > 0
    algebraic = ops.detrimental_score(theta, grad, lr, literal=False) > 0
    assert not bool((literal & ~algebraic).any()), "literal must imply algebraic"
    diff = algebraic & ~literal
    th = theta[diff].numpy().astype(np.float32)
    gr = grad[diff].numpy().astype(np.float32)
    l32 = np.float32(lr32)
    rounds_back = (th - l32 * gr) == th  # numpy float32: two roundings, as the original code
    exact_step = np.abs(np.float64(l32) * gr.astype(np.float64))
    two_theta = 2 * np.abs(th.astype(np.float64))
    within_ulp = np.abs(exact_step - two_theta) <= np.spacing(np.abs(2 * th)).astype(np.float64)
    assert bool(np.all(rounds_back | within_ulp)), (th[~(rounds_back | within_ulp)][:5], gr[~(rounds_back | within_ulp)][:5])
    assert int(literal.sum()) > 1000 and int(diff.sum()) > 0  # both regimes were exercised
