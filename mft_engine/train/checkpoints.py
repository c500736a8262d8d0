"""Checkpoints at target accuracy or at fixed steps: which a validation reaches, and the folders saved.

A target is *reached* at the first validation whose scoring-half accuracy is ≥ the target and at most
`tolerance` above it; the first validation that passes it by more (the run jumped over it) lists it as
not reached, as does a run that never gets there. Only reached targets get a folder. A run can jump over
a target in one step (minilm on SST-2 goes from 0.55 to 0.68 between two steps), so `--save-steps` also
saves the state after given optimizer steps, whatever its accuracy, in checkpoints/step_<n>.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# Accuracies are ratios k/n; this absorbs the rounding of `acc - target` (0.62 - 0.60 = 0.0200000000000000018).
_EPS = 1e-9


@dataclass
class TargetRecord:
    """One target accuracy's outcome (a row of checkpoints.json)."""

    target: float
    reached: bool = False
    step: int | None = None
    scoring_accuracy: float | None = None
    evaluation_accuracy: float | None = None
    path: str | None = None
    note: str = "never reached"

    @property
    def folder(self) -> str:
        return target_dirname(self.target)

    def info(self) -> dict[str, Any]:
        return {"target": self.target}


@dataclass
class StepRecord:
    """One `--save-steps` step's checkpoint (a row of checkpoints.json's `steps`)."""

    step: int
    saved: bool = False
    scoring_accuracy: float | None = None
    evaluation_accuracy: float | None = None
    path: str | None = None
    note: str = "the run ended before this step"

    @property
    def folder(self) -> str:
        return f"step_{self.step}"

    def info(self) -> dict[str, Any]:
        return {"saved_at_step": self.step}


class CheckpointTargets:
    """Bookkeeping of `--save-at` targets over the validations of one run.

    `dense()` says whether to validate at every step (an unreached target ≤ `dense_until` remains: a fresh
    head passes 60–75% within tens of steps, so sparse validation would jump over them); `observe(step,
    accuracy)` marks every pending target the accuracy passes and returns those reached, to be saved now.
    """

    def __init__(self, targets: list[float], tolerance: float = 0.02, dense_until: float = 0.80,
                 steps: list[int] | tuple[int, ...] = ()):
        self.tolerance = float(tolerance)
        self.dense_until = float(dense_until)
        self.records = [TargetRecord(float(t)) for t in sorted(set(targets))]
        self._pending = list(self.records)
        self.step_records = [StepRecord(int(s)) for s in sorted(set(steps))]
        self._pending_steps = {r.step: r for r in self.step_records}

    @property
    def pending(self) -> bool:
        """True while some target has not been passed or some save step not reached."""
        return bool(self._pending) or bool(self._pending_steps)

    def saves_at(self, step: int) -> bool:
        """True when `step` is a pending --save-steps step (validate and save now, whatever the accuracy)."""
        return step in self._pending_steps

    def dense(self) -> bool:
        """True while an unreached target at or below `dense_until` remains."""
        return any(r.target <= self.dense_until + _EPS for r in self._pending)

    def observe(self, step: int, accuracy: float | None) -> list[TargetRecord | StepRecord]:
        """Record a scoring-half accuracy at `step`; returns the targets reached now (within tolerance) and
        the step's own record when `step` is a save step: the checkpoints to write now."""
        reached: list[TargetRecord | StepRecord] = []
        at_step = self._pending_steps.pop(step, None)
        if at_step is not None:
            at_step.saved, at_step.note = True, ""
            at_step.scoring_accuracy = None if accuracy is None else float(accuracy)
            reached.append(at_step)
        if accuracy is None:
            return reached
        for r in [r for r in self._pending if accuracy >= r.target - _EPS]:
            self._pending.remove(r)
            r.step, r.scoring_accuracy = step, float(accuracy)
            if accuracy - r.target > self.tolerance + _EPS:
                r.note = (f"overshot: first passed at step {step} with {accuracy:.4f}, more than "
                          f"{self.tolerance:g} above the target")
            else:
                r.reached, r.note = True, ""
                reached.append(r)
        return reached

    def to_dict(self) -> dict[str, Any]:
        """checkpoints.json: every target with its step and accuracies, and the reached / not-reached lists."""
        return {"tolerance": self.tolerance, "metric": "accuracy on the scoring half of the validation split",
                "targets": [asdict(r) for r in self.records],
                "reached": [r.target for r in self.records if r.reached],
                "not_reached": [r.target for r in self.records if not r.reached],
                "steps": [asdict(r) for r in self.step_records]}


def target_dirname(target: float) -> str:
    """Folder name of a target's checkpoint: 0.6 → acc_0.60, 0.875 → acc_0.875."""
    text = f"{target:.2f}" if round(target, 2) == target else f"{target:g}"
    return f"acc_{text}"


def save_checkpoint(model: torch.nn.Module, tokenizer, folder: Path, info: dict[str, Any]) -> Path:
    """Write a Hugging Face checkpoint folder (`save_pretrained` of a plain model + tokenizer) that
    `load_model(folder, num_labels)` and `mft run --model folder` load, plus mft_checkpoint.json with `info`.
    Cost: one write of the model's weights (safetensors)."""
    from ..models.loading import quiet_transformers

    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():  # no "Writing model shards" bar under the run's own progress bar
        model.save_pretrained(str(folder))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
    (folder / "mft_checkpoint.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder
