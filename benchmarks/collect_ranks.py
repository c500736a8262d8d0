"""Collection on one process or under torchrun, every rank starting together: the phase `mft run` times
as collect_s, without rank 0's evaluation beside it.

Under `mft run --nproc-per-node 2` rank 1 starts collecting its block while rank 0 still evaluates the
accuracy before zeroing, so rank 0's collect_s covers its own block with the other core mostly idle. Here
every rank waits at a barrier first, then collects its `shard_by_cost` block of the same batches `mft run`
builds (`collect_gradients`, the per-batch dropout seeds) and `reduce_state`s it; rank 0 prints one JSON
line: the phase (barrier to reduced state on rank 0), the slowest rank's block and the reduction.

    OMP_NUM_THREADS=1 python benchmarks/collect_ranks.py --samples 512
    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 benchmarks/collect_ranks.py --samples 512
    OMP_NUM_THREADS=2 python benchmarks/collect_ranks.py --samples 512
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist

from mft_engine.collect import collect_gradients
from mft_engine.collect.distributed import batch_cost, init_from_env, reduce_state, shard_by_cost
from mft_engine.config import RunConfig
from mft_engine.data import gradient_batches
from mft_engine.models import load_model
from mft_engine.report.machine import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--samples", type=int, default=512)
    args = ap.parse_args()
    cfg = RunConfig.from_dict({"model": args.model, "samples": args.samples})  # every other default of `mft run`
    w = init_from_env("gloo")
    splits = cfg.data.load_splits()
    train = splits.train
    lm = load_model(cfg.model, train.num_labels, seed=cfg.data.seed, max_length=cfg.data.max_length)
    prepared = cfg.data.prepare(splits, lm.tokenizer)
    batches = gradient_batches(prepared.train_tokens, prepared.rows, train.labels, train.is_regression,
                               reduction=cfg.reduction, batch_size=cfg.batch_size, keep_last=cfg.keep_last)
    block = shard_by_cost([batch_cost(b) for b in batches], w)
    if w.distributed:
        dist.barrier()
    t0 = time.perf_counter()
    state = collect_gradients(lm.model, [batches[i] for i in block], train_mode=not cfg.eval_mode,
                              precision=cfg.precision, dropout_seed=cfg.data.seed, first_index=block.start)
    t1 = time.perf_counter()
    if w.distributed:
        dist.barrier()  # the reduction alone: every rank has its block
    t2 = time.perf_counter()
    state = reduce_state(state, w)
    t3 = time.perf_counter()
    blocks = [t1 - t0]
    if w.distributed:
        gathered: list = [None] * w.size
        dist.all_gather_object(gathered, t1 - t0)
        blocks = gathered
    if w.is_main:
        print(json.dumps({"processes": w.size, "threads": torch.get_num_threads(), "batches": len(batches),
                          "samples": state.n_samples, "phase_s": max(blocks) + (t3 - t2),
                          "block_s": blocks, "reduce_s": t3 - t2, "cpu": machine_info().get("cpu")}))
    if w.distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
