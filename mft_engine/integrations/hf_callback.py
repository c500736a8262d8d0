"""`MftCallback`: collect gradients and write an mft mask at the end of each epoch of a user's own
Hugging Face `Trainer` run, without leaving their script.

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[MftCallback(batches, output_dir="masks")])
    trainer.train()   # → masks/mask_epoch1.safetensors + masks/mask_epoch1.json, ...

At the end of each epoch the callback runs `collect_gradients` (forward + backward per batch, no weight
update; the model's train/eval mode, the parameters' existing `.grad` and the torch RNG state are restored,
so the Trainer's own run goes on as if nothing happened), selects the top `fraction` of detrimental
eligible parameters with `detrimental_mask`, and saves the Mask (indices + the values they held) plus a
small JSON. With `apply=True` it also zeroes those parameters in place (the training that follows may
move them again).

Under DDP (torchrun / accelerate launch with several processes) each rank collects its own share — the
Trainer's dataloader is already split across ranks; batches passed in are split into contiguous blocks —
the partial sums are reduced across ranks (`collect.distributed.reduce_state`), rank 0 selects and
broadcasts the indices, every rank zeroes them when `apply=True` (the replicas stay identical), and rank 0
alone writes the files. FSDP and DeepSpeed ZeRO-3 shard the parameters themselves, so the callback refuses
them with one line when training begins.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..collect import Batch, collect_gradients
from ..device import to_device
from ..collect.distributed import batch_cost, broadcast, reduce_state, shard_by_cost, world
from ..selection_spec import SelectionSpec, round_lr_fp32
from ..errors import ConfigError
from ..masking import Mask, detrimental_mask


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Batch):
        return Batch([_to_device(p, device) for p in batch.parts], batch.denominator, batch.size)
    return to_device(dict(batch), device)


class MftCallback(TrainerCallback):
    """A `transformers.TrainerCallback` writing `mask_epoch<k>.safetensors` (an mft `Mask`) and
    `mask_epoch<k>.json` into `output_dir` at the end of each epoch.

    Arguments:
      batches: what gradients are collected on: a DataLoader or a list of HF batches (dicts with
        `labels`; each batch's mean loss defines one g_b, summed over batches as in `mft run`'s
        batch-sum) or `mft_engine.Batch` objects. None: the Trainer's own train dataloader (passed to
        on_epoch_end as `train_dataloader`), limited to `max_batches` batches. Iterating the Trainer's
        dataloader draws its sampler's random numbers; the RNG state is restored afterwards.
      lr: step size of the hypothetical update in the detrimental test (None: the Trainer's
        `args.learning_rate`). Rounded once to fp32.
      fraction: share of the detrimental eligible parameters selected, in (0, 1].
      exclude: a preset (original, influence, none) or comma-separated name patterns.
      output_dir: the folder written (created when missing).
      apply: also zero the selected parameters in the live model (kept in `self.masks` for restore()).
      rank_by: shrink | update; train_mode: collect with dropout on (as `mft run`) or off;
      max_batches: at most this many batches per collection (None: all); every_n_epochs: collect at
      epochs n, 2n, ...

    `self.masks` lists the Mask of each collection and `self.records` their JSON records.
    Cost per collection: one forward + backward per batch, O(params) accumulation per batch, one
    selection pass; memory: the GradientState (16 bytes per trainable parameter).
    """

    def __init__(self, batches: Iterable | None = None, *, lr: float | None = None, fraction: float = 0.1,
                 exclude: str | tuple[str, ...] = "original", output_dir: str | Path = "mft_masks",
                 apply: bool = False, rank_by: str = "shrink", train_mode: bool = True,
                 max_batches: int | None = None, every_n_epochs: int = 1):
        # One validation of the selection, SelectionSpec's (lr may wait for the Trainer's own).
        SelectionSpec(lr=2e-5 if lr is None else lr, fractions=(fraction,), rank_by=rank_by, exclude=exclude,
                      flags={k: f"MftCallback {k.rstrip('s')}" for k in ("lr", "fractions", "rank_by", "exclude")})
        if max_batches is not None and max_batches < 1:
            raise ConfigError(f"MftCallback max_batches {max_batches} must be >= 1 (or None: all)")
        if every_n_epochs < 1:
            raise ConfigError(f"MftCallback every_n_epochs {every_n_epochs} must be >= 1")
        self.batches = batches
        self.lr = lr
        self.fraction = float(fraction)
        self.exclude = exclude
        self.output_dir = Path(output_dir)
        self.apply = bool(apply)
        self.rank_by = rank_by
        self.train_mode = bool(train_mode)
        self.max_batches = max_batches
        self.every_n_epochs = int(every_n_epochs)
        self.masks: list[Mask] = []
        self.records: list[dict[str, Any]] = []
        self._epochs_seen = 0

    def on_train_begin(self, args, state, control, **kwargs):
        """Refuse sharded parameters (FSDP, DeepSpeed ZeRO-3): each rank holds only part of θ there."""
        zero3 = False
        try:
            from transformers.integrations import is_deepspeed_zero3_enabled

            zero3 = bool(is_deepspeed_zero3_enabled())
        except ImportError:
            pass
        if getattr(args, "fsdp", None) or zero3:
            raise ConfigError("MftCallback cannot run under FSDP or DeepSpeed ZeRO-3: they shard the parameters "
                              "across ranks, and the detrimental test needs every whole θ and g on each rank "
                              "(use DDP, or ZeRO stage 1/2)")
        return control

    def on_epoch_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self._epochs_seen += 1
        epoch = round(state.epoch) if state.epoch is not None else self._epochs_seen
        if epoch % self.every_n_epochs:
            return control
        if model is None:
            raise ConfigError("MftCallback.on_epoch_end got no model from the Trainer")
        source = self.batches if self.batches is not None else train_dataloader
        if source is None:
            raise ConfigError("MftCallback has no batches: pass batches= or run it inside a Trainer that "
                              "provides its train dataloader")
        lr = float(self.lr if self.lr is not None else args.learning_rate)
        # The Trainer's dataloader is already this rank's share under DDP; batches passed in are the same
        # on every rank and are split here.
        self.collect_and_save(model, source, lr, epoch, global_step=int(state.global_step),
                              split_across_ranks=self.batches is not None)
        return control

    def collect_and_save(self, model: torch.nn.Module, batches: Iterable, lr: float, epoch: int,
                         global_step: int | None = None, split_across_ranks: bool = True) -> Mask:
        """One collection on `batches`, the detrimental mask, the files; returns the Mask. Usable outside a
        Trainer too. Under torch.distributed with several ranks, `split_across_ranks` gives each rank a
        contiguous block of `batches` (the first `max_batches`); False means each rank was handed its own."""
        device = next(model.parameters()).device
        limit = self.max_batches
        w = world()
        if w.distributed and split_across_ranks:
            batches = list(batches)[:limit] if limit is not None else list(batches)
            batches = [batches[i] for i in shard_by_cost([batch_cost(b) for b in batches], w)]

        def feed():
            for i, b in enumerate(batches):
                if limit is not None and i >= limit:
                    break
                yield _to_device(b, device)

        # Leave the Trainer's run undisturbed: its pending gradients (collect_gradients clears .grad) and
        # its RNG stream (dropout during collection, the sampler of its dataloader).
        grads = {p: p.grad for p in model.parameters() if p.grad is not None}
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        try:
            state = collect_gradients(model, feed(), train_mode=self.train_mode, activation_stats=False,
                                      meta={"source": "MftCallback", "epoch": epoch})
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            for p, g in grads.items():
                p.grad = g
        state = reduce_state(state, w)
        if state.n_batches == 0:
            raise ConfigError("MftCallback collected on no batch (empty batches or dataloader)")
        if w.distributed:
            # Rank 0 selects; every rank zeroes the same indices, so the replicas stay identical.
            chosen = None
            if w.is_main:
                chosen = detrimental_mask(model, state, lr=lr, fraction=self.fraction, rank_by=self.rank_by,
                                          exclude=self.exclude, apply=False)
            chosen = broadcast(None if chosen is None else (chosen.names, chosen.shapes, chosen.indices.cpu(),
                                                            chosen.info), w)
            mask = Mask(chosen[0], chosen[1], chosen[2], None, dict(chosen[3]))
            if self.apply:
                mask.apply(model)
        else:
            # apply: selected and zeroed in one pass; the mask keeps the values, so mask.restore(model) undoes it
            mask = detrimental_mask(model, state, lr=lr, fraction=self.fraction, rank_by=self.rank_by,
                                    exclude=self.exclude, apply=self.apply)
        stem = f"mask_epoch{epoch}"
        mask.info.update(epoch=epoch, global_step=global_step)
        self.masks.append(mask)
        record = self._record(mask, state, lr, epoch, global_step, stem)
        self.records.append(record)
        if not w.is_main:
            return mask
        self.output_dir.mkdir(parents=True, exist_ok=True)
        mask.save(self.output_dir / f"{stem}.safetensors")
        (self.output_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        return mask

    def _record(self, mask: Mask, state, lr: float, epoch: int, global_step: int | None, stem: str) -> dict:
        return {
            "epoch": epoch, "global_step": global_step, "mask_file": f"{stem}.safetensors",
            "lr": lr, "lr_fp32": round_lr_fp32(lr), "fraction": self.fraction, "rank_by": self.rank_by,
            "exclude": self.exclude if isinstance(self.exclude, str) else list(self.exclude),
            "train_mode": self.train_mode, "applied": self.apply, "n_batches": state.n_batches,
            "n_samples": state.n_samples,
            "mean_batch_loss": sum(state.batch_losses) / state.n_batches,
            "k": len(mask), "per_tensor": {n: c for n, c in mask.per_tensor_counts().items() if c},
            "world_size": world().size,
        }
