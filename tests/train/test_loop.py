"""The training loop's pieces: seeded length-bucketed batches, the warm-up/decay schedule, the optimizer
groups, and early stopping on the scoring half restoring the best state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mft_engine.data import length_bucketed_batches, load_task, tokenize_split
from mft_engine.train import FinetuneConfig, get_method, train_model
from mft_engine.train.loop import build_optimizer, linear_schedule, plan_steps


def test_length_bucketed_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    rows = list(range(3, 200))  # a subset: positions need not start at 0
    batches = length_bucketed_batches(rows, lengths, batch_size=8, seed=5, bucket_batches=4)
    flat = [r for b in batches for r in b]
    assert sorted(flat) == rows
    sizes = sorted(len(b) for b in batches)
    assert sizes[1:] == [8] * (len(batches) - 1) and sizes[0] == 197 % 8
    assert all(list(lengths[b]) == sorted(lengths[b]) for b in batches)  # length-homogeneous
    assert batches == length_bucketed_batches(rows, lengths, 8, seed=5, bucket_batches=4)
    assert batches != length_bucketed_batches(rows, lengths, 8, seed=5, epoch=1, bucket_batches=4)
    assert batches != length_bucketed_batches(rows, lengths, 8, seed=6, bucket_batches=4)


def test_linear_warmup_then_decay():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert seen[2:] == pytest.approx([1 - k / 8 for k in range(8)])
    assert plan_steps(100, 32, 3, 0) == 12 and plan_steps(100, 32, 3, 7) == 7


def test_weight_decay_skips_vectors():
    w, b = torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([{"name": "g", "params": [w, b], "lr": 0.5}], lr=1.0, weight_decay=0.1)
    assert [(g["name"], g["weight_decay"], g["lr"]) for g in opt.param_groups] == [("g", 0.1, 0.5),
                                                                                 ("g (no decay)", 0.0, 0.5)]


class ScriptedValidation:
    """Stands in for ValidationSets: returns scripted scoring-half accuracies and remembers the classifier
    bias at each validation."""

    def __init__(self, model, accuracies):
        self.model, self.accuracies, self.calls, self.snapshots = model, list(accuracies), 0, []

    def metrics(self, model, which):
        assert which == "scoring"
        self.snapshots.append(model.classifier.bias.detach().clone())
        acc = self.accuracies[self.calls]
        self.calls += 1
        return {"accuracy": acc}


def test_early_stopping_restores_the_best_state(bert_tiny, keyword_glue):
    model, tok = bert_tiny
    train = load_task("sst2", "train", keyword_glue)
    tokens = tokenize_split(tok, train, None, max_length=32)
    cfg = FinetuneConfig.of(method="bitfit", model="bert-tiny-random", max_steps=20, batch_size=8, eval_every=2,
                         early_stopping_patience=2)
    method = get_method("bitfit")
    prep = method.prepare(model, cfg)
    val = ScriptedValidation(model, [0.5, 0.7, 0.6, 0.55, 0.9])
    log = train_model(prep, method, cfg, tokens, list(range(len(train))), val, "accuracy")
    assert log.stopped_early and log.steps == 8 and val.calls == 4
    assert log.best_step == 4 and log.best_metric == 0.7
    assert torch.equal(model.classifier.bias, val.snapshots[1])
    assert not torch.equal(val.snapshots[1], val.snapshots[3])
    assert len(log.losses) == 8 and all(np.isfinite(log.losses))
