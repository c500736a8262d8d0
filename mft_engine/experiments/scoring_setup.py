"""What the scorer experiments share: their configuration and one prepared "scoring bench" per checkpoint.

A bench holds a fine-tuned model, its eligible parameters, the GradientState of N training samples
collected in eval mode (the training g and the activation statistics), the training Objective whose
Gauss-Newton matrix is the curvature H, and the scoring-half Objective (L_score). The validation split is
halved by the seed: everything chosen or fitted uses the scoring half; reported accuracies come from the
evaluation half (DESIGN.md, honest evaluation).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..collect import GradientState, collect_gradients
from ..collect.distributed import World, active_world, batch_cost, reduce_state, shard_by_cost
from ..data import TaskSplits, gradient_batches, objective_batches
from ..data.config import DataConfig
from ..errors import ConfigError
from ..evaluate.validation import ValidationSets
from ..fields import COUNT_MAX, FlatConfig, check_int_range, compose, help_field
from ..masking import check_exclude_patterns, eligible_parameters
from ..models import load_model
from ..report.progress import Progress
from ..scoring import ScoringInputs
from ..device import check_device_spec, device_field, dist_backend_field, resolve_device
from ..scoring.objective import Objective
from ..scoring.scorers.influence import InfluenceOptions
from ..scoring.scorers.obs import ObsOptions
from ..selection_spec import exclude_patterns, round_lr_fp32


@dataclass
class ScoringConfig(FlatConfig):
    """Fields shared by `mft validate-scorer` and `mft influence`."""

    model: str = help_field("a fine-tuned checkpoint folder (e.g. from mft finetune --save-at) | minilm | bert-tiny-random", "minilm")
    # The scorer pipelines batch their objectives at 4096 tokens (8192 elsewhere): kept so figures do not move.
    data: DataConfig = compose(DataConfig, samples=1000, types={"samples": int}, eval_batch_tokens=4096, help={
        "task": "task id (sst2, mrpc, ...) or a local CSV/TSV/JSONL file or folder",
        "samples": "training samples N: the gradient test's g and the curvature H (Gauss-Newton) use them",
        "sample_order": "first (first N rows) | seeded (N rows drawn with the seed)",
        "seed": "seed of the validation halves, the parameter sample and the random controls",
        "eval_batch_tokens": "token budget of a batch of the objectives and evaluations"})
    batch_size: int = help_field("fixed batch size defining the training g (batch-sum, as mft run)", 32)
    lr: float = help_field("learning rate of the gradient test (rounded once to fp32)", 2e-5,
                           aliases=("--learning-rate",))
    exclude: str = help_field("original | influence | none | comma-separated name patterns", "influence")
    scorers: str = help_field("scorers to run: all | comma-separated names", "all")
    damping: float | None = help_field("absolute damping λ of (H + λI) (default: --damping-factor × mean diag H)", None)
    # influence's solver settings, flat (--solver, --damping-factor, --cg-tol, ...); CG stops earlier here
    # than the scorer's own defaults: the pipelines judge the solution, they do not converge it
    influence: InfluenceOptions = compose(InfluenceOptions, names={"influence_solver": "solver"}, cg_tol=0.05,
                                          cg_max_iter=40, help={
        "influence_solver": "influence's inverse solver: cg | pcg (CG, Jacobi-preconditioned by diag H + λ) | woodbury "
                            "(exact, through H's rank of N per-example factors) | lissa | cg-block (per-tensor blocks)",
        "damping_factor": "λ = this × the mean of diag(H) when --damping is not given",
        "lissa_scale": "LiSSA scale (> the largest eigenvalue of H + λI; default: estimated by power iteration)",
        "solver_precision": "arithmetic of influence's solve: float32 (the model's) | float64 (a float64 copy of the "
                            "model: ∇L_score, the curvature products or Woodbury factors and the solution in float64; "
                            "about twice the time and memory of the solve)"})
    obs_samples: int = help_field("per-example gradients m for OBS's block Fisher (>= 50)", 64)
    device: str = device_field()
    dist_backend: str | None = dist_backend_field()
    out: str = help_field("parent folder of the results folder", "results")

    def __post_init__(self) -> None:
        if self.data.samples is None:
            raise ConfigError("--samples must be given: g and H are built over a fixed number of samples")
        check_int_range("--batch-size", self.batch_size, 1, COUNT_MAX)
        round_lr_fp32(self.lr)  # ConfigError naming --lr
        if self.damping is not None and not (self.damping > 0 and math.isfinite(self.damping)):
            raise ConfigError(f"--damping {self.damping} must be > 0 (H + λI must be positive definite)")
        if self.obs_samples < 50:
            raise ConfigError(f"--obs-samples {self.obs_samples} must be >= 50 (OBS blocks of 50 need m >= 50 gradients)")
        if self.data.eval_batch_tokens < self.data.max_length:
            raise ConfigError(f"--eval-batch-tokens {self.data.eval_batch_tokens} must be >= --max-length "
                              f"{self.data.max_length}")
        self.scorer_names()  # validates --scorers
        check_device_spec(self.device)

    def exclude_patterns(self) -> tuple[str, ...]:
        """The name patterns of excluded parameters (a preset's, or the user's comma-separated list)."""
        return exclude_patterns(self.exclude)

    def scorer_names(self) -> list[str]:
        from ..scoring.base import scorer_names
        from .trials import parse_names

        return parse_names("--scorers", self.scorers, scorer_names())

class ScoringData:
    """The task's splits tokenized once (shared by every checkpoint of a sweep)."""

    def __init__(self, cfg: ScoringConfig, tokenizer, splits: TaskSplits | None = None):
        self.cfg = cfg
        self.tokenizer = tokenizer  # kept: held-out training rows are tokenized later, on demand
        splits = splits if splits is not None else cfg.data.load_splits()
        self.train, self.val = splits.train, splits.val
        if self.train.is_regression:
            raise ConfigError(f"task {cfg.data.task!r} is a regression task; the scorers need a classifier "
                              "(cross-entropy loss)")
        p = cfg.data.prepare(splits, tokenizer)
        self.rows, self.train_tokens, self.val_tokens = p.rows, p.train_tokens, p.val_tokens
        self.scoring_rows, self.evaluation_rows = p.scoring_rows, p.evaluation_rows

    def validation_sets(self) -> ValidationSets:
        """ValidationSets over the halves (metrics on "scoring", "evaluation", "whole")."""
        return ValidationSets(self.val_tokens, list(self.val.labels), self.val.num_labels, False,
                              self.scoring_rows, self.evaluation_rows, self.cfg.data.eval_batch_tokens)

    def objectives(self, model: torch.nn.Module, names: list[str], train_rows: list[int] | None = None,
                   world: World | None = None) -> tuple[Objective, Objective]:
        """(training Objective over `train_rows` (default: every selected row), scoring-half Objective),
        both over `names` of `model`, batched by length within the token budget; `world` (under torchrun)
        shares the training Objective's curvature work between the ranks (Objective.world)."""
        rows = self.rows if train_rows is None else train_rows
        budget = self.cfg.data.eval_batch_tokens
        train = Objective(model, objective_batches(self.train_tokens, rows, self.train.labels, False, budget), names,
                          world=world)
        score = Objective(model, objective_batches(self.val_tokens, self.scoring_rows, self.val.labels, False, budget),
                          names)
        return train, score

    def record(self) -> dict[str, Any]:
        return {"task": self.train.task.name, "train_source": self.train.source, "validation_source": self.val.source,
                "n_train_rows": len(self.train), "n_train_samples": len(self.rows), "n_validation": len(self.val),
                "n_scoring_half": len(self.scoring_rows), "n_evaluation_half": len(self.evaluation_rows)}


@dataclass
class ScoringBench:
    """One checkpoint prepared for scoring: model (eval mode, fp32), eligible names, statistics, inputs."""

    model: torch.nn.Module
    source: str
    data: ScoringData
    eligible: list[tuple[str, torch.nn.Parameter]]
    state: GradientState
    inputs: ScoringInputs
    score_batches: list[dict]
    timings: dict[str, float]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.eligible]

    def n_eligible(self) -> int:
        return int(sum(p.numel() for _, p in self.eligible))


def load_checkpoint(cfg: ScoringConfig, model_name: str, num_labels: int):
    """The checkpoint as a LoadedModel (ModelError, exit 2, when its labels do not match the task; ConfigError
    when --max-length exceeds its position embeddings)."""
    return load_model(model_name, num_labels, seed=cfg.data.seed, max_length=cfg.data.max_length)


def prepare_bench(cfg: ScoringConfig, model_name: str | None = None, data: ScoringData | None = None,
                  progress: Progress | None = None, fits_dir: Path | None = None,
                  shard_curvature: bool = False) -> ScoringBench:
    """Load a checkpoint and compute what every scorer may need that is cheap: the training g and the
    activation statistics of N samples (one eval-mode forward + backward each), and the objectives.

    Under torchrun the collection is always shared by the ranks; `shard_curvature` also gives the
    training Objective the process world, so its curvature products and solves are shared (every rank
    must then run the same scorers, since each product is a collective).

    Cost: loading the model, tokenizing (once per ScoringData), one collection pass over N samples.
    """
    progress = progress or Progress()
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device, active_world().local_rank if active_world().distributed else None)
    t = time.perf_counter()
    # the splits are read once: their label count sizes the head, then ScoringData tokenizes them
    splits = cfg.data.load_splits() if data is None else None
    num_labels = data.train.num_labels if data is not None else splits.num_labels
    lm = load_checkpoint(cfg, model_name or cfg.model, num_labels)
    model = lm.model.float().eval().to(device)
    if data is None:
        data = ScoringData(cfg, lm.tokenizer, splits)
    timings["load_s"] = time.perf_counter() - t

    named = list(model.named_parameters())
    check_exclude_patterns(named, cfg.exclude)
    eligible = eligible_parameters(named, cfg.exclude_patterns())
    if not eligible:
        raise ConfigError(f"--exclude {cfg.exclude!r} leaves no eligible parameter")

    t = time.perf_counter()
    batches = gradient_batches(data.train_tokens, data.rows, data.train.labels, data.train.is_regression,
                               reduction="batch-sum", batch_size=cfg.batch_size, keep_last=False)
    if not batches:
        raise ConfigError(f"--samples {cfg.data.samples} is fewer than one batch of --batch-size {cfg.batch_size}")
    # Under torchrun each rank collects a contiguous block of the batches and the sums are reduced (eval
    # mode: no dropout, so g equals one process's up to summation order).
    w = active_world()
    block = shard_by_cost([batch_cost(b) for b in batches], w)
    progress.phase("collect gradients (eval mode)", len(block))
    state = collect_gradients(model, [batches[i] for i in block], train_mode=False,
                              on_batch=lambda i, loss: progress.advance(1), first_index=block.start,
                              meta={"train_mode": False, "reduction": "batch-sum", "samples": len(data.rows)})
    state = reduce_state(state, w)
    progress.done()
    timings["collect_s"] = time.perf_counter() - t

    names = [n for n, _ in eligible]
    # fixed_batches takes the rows in order and drops a last partial batch: these are the rows g saw.
    train_obj, score_obj = data.objectives(model, names, data.rows[: state.n_samples], w if shard_curvature else None)
    score_batches = score_obj.batches
    inputs = ScoringInputs(model=model, names=names, state=state, lr=round_lr_fp32(cfg.lr), train=train_obj,
                           score=score_obj, damping=cfg.damping, fits_dir=fits_dir, progress=progress,
                           options=(cfg.influence, ObsOptions(obs_samples=cfg.obs_samples)))
    return ScoringBench(model, lm.source, data, eligible, state, inputs, score_batches, timings)


def sample_eligible(eligible: list[tuple[str, torch.Tensor]], n: int, seed: int) -> list[tuple[str, int]]:
    """n distinct (name, flat index) pairs drawn uniformly over every eligible element, seeded, in flat order.

    Raises ConfigError when n exceeds the eligible count or is < 1. Cost: O(n log n).
    """
    sizes = np.array([p.numel() for _, p in eligible], dtype=np.int64)
    total = int(sizes.sum())
    if n < 1:
        raise ConfigError(f"--n-params {n} must be >= 1")
    if n > total:
        raise ConfigError(f"--n-params {n} is larger than the {total:,} eligible parameters")
    flat = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return flat_to_items(eligible, flat)


def flat_to_items(eligible: list[tuple[str, torch.Tensor]], flat: np.ndarray) -> list[tuple[str, int]]:
    """Flat indices over the concatenated eligible tensors → (name, index within that tensor)."""
    sizes = np.array([p.numel() for _, p in eligible], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    which = np.searchsorted(starts, flat, side="right") - 1
    return [(eligible[w][0], int(f - starts[w])) for w, f in zip(which.tolist(), np.asarray(flat).tolist())]


def gather(scores: dict[str, torch.Tensor], items: list[tuple[str, int]]) -> np.ndarray:
    """The scores at (name, flat index) items, float64 [len(items)]."""
    return np.array([float(scores[n].reshape(-1)[i]) for n, i in items], dtype=np.float64)


def flat_scores(scores: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """The scores of `names` concatenated flat (float64); NaN (not scored) becomes +inf, never picked first."""
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    return torch.nan_to_num(flat, nan=math.inf)


def lowest(scores: dict[str, torch.Tensor], names: list[str], k: int) -> torch.Tensor:
    """Flat indices (over `names` concatenated) of the k lowest scores, lowest first; ties by lower index.

    Cost: one concatenation (8 bytes per eligible parameter) and a stable sort of it.
    """
    flat = flat_scores(scores, names)
    k = min(k, flat.numel())
    return torch.sort(flat, stable=True).indices[:k]
