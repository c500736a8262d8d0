"""Run by torchrun in tests/distributed/test_callback_dist.py: MftCallback under DDP (gloo, CPU).

argv[1] is the output folder. First `collect_and_save` on the same 4 given batches on every rank (eval
mode, apply=True): each rank takes a block of 2, the sums are reduced, rank 0 selects and broadcasts,
every rank zeroes; each rank then saves its parameters to OUT/direct_rank<r>.pt (the test's own files: the
callback writes only on rank 0, into OUT/masks). Then a transformers Trainer under DDP with the callback
on the Trainer's own (per-rank) dataloader, apply=True, 2 epochs; each rank saves its final parameters to
OUT/trainer_rank<r>.pt.
"""
import sys
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from mft_engine.collect.distributed import init_from_env
from mft_engine.integrations import MftCallback
from mft_engine.models import load_model

SENTENCES = [f"{'a good' if i % 2 else 'a bad'} movie number {i} with {'fine' if i % 3 else 'dull'} acting"
             for i in range(24)]


def model_and_batches():
    """The tiny random BERT (seed 0) and 4 batches of 6 sentences (the same on every rank)."""
    lm = load_model("bert-tiny-random", 2, seed=0, max_length=32)
    batches = []
    for j in range(4):
        texts = SENTENCES[6 * j: 6 * j + 6]
        enc = lm.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        batches.append({**dict(enc), "labels": torch.tensor([i % 2 for i in range(6 * j, 6 * j + 6)])})
    return lm, batches


def rows(lm):
    """The Trainer's training rows (one dict per sentence)."""
    out = []
    for i, text in enumerate(SENTENCES[:16]):
        enc = lm.tokenizer(text, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        out.append({**{k: v[0] for k, v in enc.items()}, "labels": torch.tensor(i % 2)})
    return out


@record
def main() -> None:
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    w = init_from_env(backend="gloo", timeout_s=60)
    lm, batches = model_and_batches()
    cb = MftCallback(batches, lr=1e-3, fraction=0.2, output_dir=out / "masks", apply=True, train_mode=False)
    cb.collect_and_save(lm.model, batches, 1e-3, epoch=1)
    torch.save({n: p.detach().clone() for n, p in lm.model.named_parameters()}, out / f"direct_rank{w.rank}.pt")

    lm2 = load_model("bert-tiny-random", 2, seed=0, max_length=32)
    args = TrainingArguments(output_dir=str(out / f"trainer{w.rank}"), num_train_epochs=2,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
                             ddp_backend="gloo")
    cb2 = MftCallback(fraction=0.1, output_dir=out / "trainer_masks", apply=True)
    Trainer(model=lm2.model, args=args, train_dataset=rows(lm2), callbacks=[cb2]).train()
    torch.save({n: p.detach().clone() for n, p in lm2.model.named_parameters()}, out / f"trainer_rank{w.rank}.pt")
    torch.save(cb2.records, out / f"trainer_records_rank{w.rank}.pt")


if __name__ == "__main__":
    main()
