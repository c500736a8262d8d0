"""Float32 vs float64 Woodbury solutions of the influence system (G + λI) s = ∇L_score on a checkpoint.

Prints, per damping factor, the float64-measured residual of the float32 solution, the float64 solution's
own residual, the relative difference of the two solutions, and the share of parameters whose influence
score −s_i·θ_i has the same sign under both. The figures in RESULTS.md ("Exact influence") came from

    python benchmarks/woodbury_precision.py --model <full run>/checkpoints/acc_0.85 --samples 64

Cost: two Woodbury builds (float32 and float64) over `samples` examples and one float64 G-product per λ.
"""
from __future__ import annotations

import argparse

import torch

from mft_engine.data import load_data
from mft_engine.experiments.scoring_setup import (
    ScoringConfig,
    ScoringData,
    load_checkpoint,
)
from mft_engine.masking import eligible_parameters
from mft_engine.scoring.curvature.hvp import flatten, gauss_newton_diagonal, gnvp, unflatten
from mft_engine.scoring.curvature.lowrank import gauss_newton_lowrank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--factors", default="1e-3,1e-2,1e-1,1")
    args = ap.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    cfg = ScoringConfig(model=args.model, task="sst2", data_dir=args.data_dir, samples=args.samples)
    lm = load_checkpoint(cfg, cfg.model, load_data(cfg, "train").num_labels)
    net = lm.model.float().eval()
    data = ScoringData(cfg, lm.tokenizer)
    names = [n for n, _ in eligible_parameters(list(net.named_parameters()), cfg.exclude_patterns())]

    train, score = data.objectives(net, names)
    with torch.enable_grad():
        b = score.gradient()
        mean = float(flatten(gauss_newton_diagonal(train), names).double().mean())
    dampings = [f * mean for f in factors]
    s32 = gauss_newton_lowrank(train, b).solve(dampings)
    net.double()
    train, _ = data.objectives(net, names)
    b64 = {n: t.double() for n, t in b.items()}
    s64 = gauss_newton_lowrank(train, b64).solve(dampings)
    like, bvec, theta = train.params(), flatten(b64, names), flatten(train.params(), names)

    def residual(s: torch.Tensor, lam: float) -> float:
        with torch.enable_grad():
            r = bvec - flatten(gnvp(train, unflatten(s, like)), names) - lam * s
        return float(r.norm() / bvec.norm())

    print(f"{'factor':>8} {'fp32 resid':>11} {'fp64 resid':>11} {'rel diff':>9} {'same sign':>10}")
    for f, lam in zip(factors, dampings):
        a, e = s32[lam], s64[lam]
        same = float(((a * theta < 0) == (e * theta < 0)).double().mean())
        print(f"{f:8g} {residual(a, lam):11.3g} {residual(e, lam):11.3g} {float((a - e).norm() / e.norm()):9.2g} "
              f"{same:10.6f}")


if __name__ == "__main__":
    main()
