"""Run by torchrun in tests/distributed/test_collect_dist.py: data-parallel collection of the tiny random
BERT over the first 64 SST-2 rows in train mode; rank 0 writes the reduced state to argv[1], and every rank
its own partial state to argv[1] + ".rank<r>".

`fail-rank=R` as argv[2] makes rank R raise after the process group is up (the launcher must exit
non-zero with that rank's error)."""
import sys

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from mft_engine.collect import collect_gradients
from mft_engine.collect.distributed import init_from_env, reduce_state, shard
from mft_engine.data import gradient_batches, load_task, tokenize_split
from mft_engine.models import load_model

SEED, SAMPLES, BATCH = 42, 64, 8


def batches():
    """The 8 fixed batches of the run (the same on every rank)."""
    data = load_task("sst2", "train")
    lm = load_model("bert-tiny-random", data.num_labels, seed=SEED, max_length=64)
    rows = list(range(SAMPLES))
    tokens = tokenize_split(lm.tokenizer, data, rows, max_length=64)
    return lm.model, gradient_batches(tokens, rows, data.labels, False, reduction="batch-sum", batch_size=BATCH,
                                      keep_last=False)


def collect(model, all_batches, w):
    """(this rank's partial state, the reduced state)."""
    block = shard(len(all_batches), w)
    local = collect_gradients(model, [all_batches[i] for i in block], train_mode=True, dropout_seed=SEED,
                              first_index=block.start)
    return local, reduce_state(local, w)


@record
def main() -> None:
    torch.set_num_threads(1)
    w = init_from_env(backend="gloo", timeout_s=60)
    if len(sys.argv) > 2 and sys.argv[2] == f"fail-rank={w.rank}":
        raise RuntimeError(f"rank {w.rank} failed on purpose")
    model, all_batches = batches()
    local, state = collect(model, all_batches, w)
    local.save(f"{sys.argv[1]}.rank{w.rank}")
    if w.is_main:
        state.save(sys.argv[1])


if __name__ == "__main__":
    main()
