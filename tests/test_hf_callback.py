"""MftCallback inside a real (tiny, CPU) transformers.Trainer run: the mask file written at the end of an
epoch equals `detrimental_mask` computed directly on the same model and batches; with the Trainer's own
dataloader and apply=True the selected weights end up zero."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine import Mask, collect_gradients, detrimental_mask
from mft_engine.errors import ConfigError
from mft_engine.integrations import MftCallback

from .conftest import synthetic_batch, tiny_bert


def _rows(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    b = synthetic_batch(n, 12, seed)
    return [{k: v[i] for k, v in b.items()} for i in range(n)]


def _trainer(model, tmp_path, callback, epochs=1):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), num_train_epochs=epochs,
                             per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True,
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    return Trainer(model=model, args=args, train_dataset=_rows(12, 0), callbacks=[callback])


def test_mask_at_epoch_end_matches_detrimental_mask(tmp_path):
    model = tiny_bert()
    batches = [synthetic_batch(6, 10, 10), synthetic_batch(6, 10, 11)]
    out = tmp_path / "masks"
    cb = MftCallback(batches, lr=1e-3, fraction=0.2, exclude="original", output_dir=out, train_mode=False)
    trainer = _trainer(model, tmp_path, cb)
    trainer.train()
    assert trainer.state.global_step == 3
    saved = Mask.load(out / "mask_epoch1.safetensors")
    record = json.loads((out / "mask_epoch1.json").read_text())
    assert record["epoch"] == 1 and record["global_step"] == 3 and record["n_batches"] == 2
    assert record["n_samples"] == 12 and record["applied"] is False and record["k"] == len(saved) > 0

    # nothing changes the weights after on_epoch_end of the last epoch: recompute directly
    state = collect_gradients(model, batches, train_mode=False, activation_stats=False)
    direct = detrimental_mask(model, state, lr=1e-3, fraction=0.2, exclude="original")
    assert saved.names == direct.names
    assert torch.equal(saved.indices, direct.indices)
    assert not any("classifier" in n or "pooler" in n for n in saved.names)
    assert saved.values is None  # not applied: the model keeps its weights


def test_trainer_dataloader_and_apply(tmp_path):
    model = tiny_bert()
    out = tmp_path / "masks"
    cb = MftCallback(fraction=0.1, output_dir=out, apply=True, max_batches=2)
    _trainer(model, tmp_path, cb, epochs=2).train()
    assert sorted(p.name for p in out.iterdir()) == ["mask_epoch1.json", "mask_epoch1.safetensors",
                                                       "mask_epoch2.json", "mask_epoch2.safetensors"]
    assert [r["n_batches"] for r in cb.records] == [2, 2]
    assert cb.records[0]["lr"] == 1e-3  # the Trainer's learning rate
    last = Mask.load(out / "mask_epoch2.safetensors")
    assert last.values is not None and len(last) == cb.records[1]["k"]
    params = dict(model.named_parameters())
    flat = torch.cat([params[n].detach().flatten() for n in last.names])
    assert (flat[last.indices] == 0).all()  # zeroed at the end of the last epoch, nothing trained after


def test_collection_leaves_weights_mode_grads_and_rng_alone(tmp_path):
    model = tiny_bert().train()
    model(**synthetic_batch(4, 8, 1)).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    weights = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    cb = MftCallback([synthetic_batch(4, 8, 2)], output_dir=tmp_path)
    mask = cb.collect_and_save(model, cb.batches, lr=1e-3, epoch=7)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if n in grads)
    assert len(mask) > 0 and (tmp_path / "mask_epoch7.safetensors").is_file()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="fraction 0"):
        MftCallback(fraction=0)
    with pytest.raises(ConfigError, match="lr -1"):
        MftCallback(lr=-1)
    with pytest.raises(ConfigError, match="rank_by"):
        MftCallback(rank_by="size")
