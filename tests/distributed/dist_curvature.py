"""Run by torchrun in tests/distributed/test_curvature_dist.py: the curvature products, the Gauss-Newton
diagonal and every shardable inverse solve of the tiny random BERT over the first 32 SST-2 rows (eval
mode), with the work split across the ranks; rank 0 writes the results to argv[1] (torch.save).

argv[2] `lissa` instead asks for the LiSSA solve, which several processes refuse."""
import sys

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from mft_engine.collect.distributed import init_from_env
from mft_engine.data import load_task, objective_batches, tokenize_split
from mft_engine.models import load_model
from mft_engine.scoring.curvature.fit import fit_inverse
from mft_engine.scoring.curvature.hvp import (batched_gnvp, gauss_newton_diagonal, gnvp, hvp, mean_diagonal,
                                               random_like)
from mft_engine.scoring.objective import eval_objective

SEED, SAMPLES, BATCH_TOKENS = 42, 32, 256
DAMPING_FACTOR, TOL = 0.1, 1e-4
#: the Woodbury memory bound that cuts the 32 examples' factors into chunks of 8 (block rows shared out)
CHUNKED_BYTES = 2 * 8 * 4 * 1.05


def objective(world=None):
    """The Objective over the non-embedding parameters (the same on every rank), and a seeded vector."""
    data = load_task("sst2", "train")
    lm = load_model("bert-tiny-random", data.num_labels, seed=SEED, max_length=64)
    rows = list(range(SAMPLES))
    tokens = tokenize_split(lm.tokenizer, data, rows, max_length=64)
    batches = objective_batches(tokens, rows, data.labels, False, BATCH_TOKENS)
    names = [n for n, _ in lm.model.named_parameters() if "embeddings" not in n]
    obj = eval_objective(lm.model, batches, names)
    obj.world = world
    return obj


def results(obj) -> dict:
    """Every sharded quantity, keyed by name (tensors, or the fits' solutions and records)."""
    like = obj.params()
    v = random_like(like, torch.Generator().manual_seed(SEED))
    vs = [random_like(like, torch.Generator().manual_seed(SEED + i)) for i in range(3)]
    size = sum(t.numel() for t in like.values())
    b = random_like(like, torch.Generator().manual_seed(SEED + 9))
    out = {"n": obj.n, "gnvp": gnvp(obj, v), "hvp": hvp(obj, v), "diagonal": gauss_newton_diagonal(obj),
           "batched_factors": batched_gnvp(obj, vs, method="factors"),
           "batched_vmap": batched_gnvp(obj, vs, method="vmap")}
    # λ = 0.1 × mean diag G: conditioned well enough for CG to converge in tens of products
    damping = DAMPING_FACTOR * mean_diagonal(obj, diagonal=out["diagonal"])
    for solver in ("cg", "pcg", "cg-block", "woodbury"):
        fit = fit_inverse(solver, obj, b, damping=damping, solver=solver, tol=TOL, max_iter=100)
        out[solver] = (fit.solution, fit.true_residual, fit.iterations)
    fit = fit_inverse("chunked", obj, b, damping=damping, solver="woodbury", memory_bytes=CHUNKED_BYTES * size)
    out["woodbury_chunked"] = (fit.solution, fit.true_residual, fit.options["chunk_examples"])
    return out


@record
def main() -> None:
    torch.set_num_threads(1)
    w = init_from_env(backend="gloo", timeout_s=120)
    obj = objective(w)
    if len(sys.argv) > 2 and sys.argv[2] == "lissa":
        fit_inverse("lissa", obj, obj.params(), solver="lissa")
        return
    out = results(obj)
    if w.is_main:
        torch.save(out, sys.argv[1])


if __name__ == "__main__":
    main()
