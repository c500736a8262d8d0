"""`mft influence`: removal sweeps per checkpoint and scorer, a random control, and the study's false-positive table.

For each checkpoint (the reached targets of a `checkpoints.json`, or one `--model DIR`) and each scorer,
the N lowest-scored eligible parameters (signed: most helpful predicted first; unsigned: least harmful first)
are zeroed for each N, and accuracy is measured on the evaluation half with a bootstrap 95% CI (the
scoring half beside it, which the scores were fitted on, to show the selection bias); a random mask of the
same N is the control. The follow-up study's table counts gradient-detrimental and influence-beneficial
(score < 0) eligible parameters, with rate = |detrimental ∧ not beneficial| / |detrimental|.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import help_field
from ..data import eval_batches
from ..errors import ConfigError
from ..evaluate.bootstrap import bootstrap_ci
from ..evaluate.predict import predict
from ..masking import Mask, random_mask
from ..report import ResultsFolder, machine_info, versions
from ..report.plots import pyplot
from ..report.progress import Progress
from .scoring_setup import ScoringConfig, ScoringData, lowest, prepare_bench
from .trials import parse_int_list, table_text, write_table

log = logging.getLogger("mft_engine")


@dataclass
class InfluenceConfig(ScoringConfig):
    """Configuration of `mft influence`."""

    checkpoints: str | None = help_field("checkpoints.json of mft finetune --save-at (every reached target is swept); "
                                         "else --model is the one checkpoint", None)
    n_removed: str = help_field("numbers N of lowest-scored parameters zeroed (comma-separated)", "100,500,1000,5000,10000")
    resamples: int = help_field("bootstrap resamples of the evaluation-half accuracy", 2000)

    def __post_init__(self) -> None:
        super().__post_init__()
        ns = self.removal_counts()
        if not ns or any(n < 1 for n in ns):
            raise ConfigError(f"--n-removed {self.n_removed!r} must list numbers >= 1")
        if self.resamples < 1:
            raise ConfigError(f"--resamples {self.resamples} must be >= 1")
        self.checkpoint_list()  # validates --checkpoints

    def removal_counts(self) -> list[int]:
        return sorted(parse_int_list("--n-removed", self.n_removed))

    def checkpoint_list(self) -> list[tuple[str, str]]:
        """(label, model path) per checkpoint: the reached targets of --checkpoints, or --model alone."""
        if self.checkpoints is None:
            return [(Path(self.model).name or self.model, self.model)]
        p = Path(self.checkpoints).expanduser()
        if p.is_dir():
            p = p / "checkpoints.json"
        if not p.is_file():
            raise ConfigError(f"--checkpoints {self.checkpoints} is not a checkpoints.json file (or a folder holding one)")
        try:
            rec = json.loads(p.read_text())
            targets = rec["targets"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"--checkpoints {p} is not a checkpoints.json written by mft finetune --save-at") from None
        out = []
        for t in targets:
            if t.get("reached") and t.get("path"):
                path = Path(t["path"])
                if not path.is_absolute():
                    path = p.parent / path
                out.append((f"acc_{t['target']:g}", str(path)))
        if not out:
            raise ConfigError(f"--checkpoints {p} lists no reached target")
        return out


@dataclass
class InfluenceResult:
    out_dir: Path
    record: dict[str, Any]


def accuracy_with_ci(model: torch.nn.Module, data: ScoringData, rows: list[int], resamples: int, seed: int) -> dict:
    """Accuracy on `rows` of the validation split with a percentile-bootstrap 95% CI over examples."""
    batches = eval_batches(data.val_tokens, rows, data.val.labels, False, data.cfg.data.eval_batch_tokens)
    logits = predict(model, batches, len(rows))
    correct = (logits.argmax(-1) == np.asarray([data.val.labels[r] for r in rows])).astype(np.float64)
    ci = bootstrap_ci(correct, resamples=resamples, seed=seed)
    return {"accuracy": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}


def scoring_accuracy(model: torch.nn.Module, data: ScoringData) -> float:
    batches = eval_batches(data.val_tokens, data.scoring_rows, data.val.labels, False, data.cfg.data.eval_batch_tokens)
    logits = predict(model, batches, len(data.scoring_rows))
    return float(np.mean(logits.argmax(-1) == np.asarray([data.val.labels[r] for r in data.scoring_rows])))


def _measure(model, mask: Mask, data: ScoringData, cfg: InfluenceConfig) -> dict:
    mask.apply(model)
    try:
        ev = accuracy_with_ci(model, data, data.evaluation_rows, cfg.resamples, cfg.data.seed)
        sc = scoring_accuracy(model, data)
    finally:
        mask.restore(model)
    return {"evaluation_accuracy": ev["accuracy"], "evaluation_ci_low": ev["ci_low"],
            "evaluation_ci_high": ev["ci_high"], "scoring_accuracy": sc}


def false_positive_row(label: str, gradient: dict[str, torch.Tensor], influence: dict[str, torch.Tensor],
                       names: list[str]) -> dict:
    """The study's table: gradient-detrimental (score < 0) and influence-beneficial (score < 0) eligible counts,
    and rate = |detrimental ∧ not beneficial| / |detrimental|."""
    det = ben = both = 0
    for n in names:
        d = gradient[n] < 0
        b = influence[n] < 0
        det += int(d.sum())
        ben += int(b.sum())
        both += int((d & b).sum())
    return {"checkpoint": label, "gradient_detrimental": det, "influence_beneficial": ben,
            "detrimental_and_beneficial": both,
            "false_positive_rate": (det - both) / det if det else None}


def removal_sweep(cfg: InfluenceConfig, progress: Progress | None = None) -> InfluenceResult:
    """Run the removal sweeps described by `cfg`; write results/influence_<timestamp>/ and return it.

    Cost per checkpoint: one collection pass over N training samples, each scorer's own statistics
    (influence: one inverse solve), and per scorer and N two evaluations (scorer's mask, random control)
    of the validation split.
    """
    progress = progress or Progress()
    t0 = time.perf_counter()
    counts = cfg.removal_counts()
    rows: list[dict] = []
    fp_rows: list[dict] = []
    baselines: list[dict] = []
    fits: dict[str, Any] = {}
    with ResultsFolder(cfg.out, "influence") as folder:
        log.info("config: %s", cfg.to_dict())
        data = None
        names_run = cfg.scorer_names()
        for label, path in cfg.checkpoint_list():
            bench = prepare_bench(cfg, model_name=path, data=data, progress=progress,
                                  fits_dir=folder.path / "fits" / label)
            data = bench.data
            n_elig = bench.n_eligible()
            too_many = [n for n in counts if n > n_elig]
            if too_many:
                raise ConfigError(f"--n-removed {too_many[0]} is larger than the {n_elig:,} eligible parameters")
            model = bench.model
            base = {"checkpoint": label, "path": path, **accuracy_with_ci(model, data, data.evaluation_rows,
                                                                          cfg.resamples, cfg.data.seed),
                    "scoring_accuracy": scoring_accuracy(model, data)}
            baselines.append(base)
            shapes = [tuple(p.shape) for _, p in bench.eligible]
            kept: dict[str, dict[str, torch.Tensor]] = {}
            for name in names_run:
                from ..scoring.base import get_scorer
                from ..scoring.scorers.influence import fit_influence_solve

                scorer = get_scorer(name)
                if name == "influence":
                    fit_influence_solve(bench.inputs)  # fit, then score: the scorer only loads the fit
                progress.phase(f"{label}: score {name}")
                scores = scorer.score(bench.inputs)
                progress.done()
                if name in ("gradient", "influence"):
                    kept[name] = {n: s.detach().clone() for n, s in scores.items()}
                order = lowest(scores, bench.names, max(counts))
                del scores
                progress.phase(f"{label}: sweep {name}", len(counts))
                for n in counts:
                    mask = Mask(bench.names, shapes, torch.sort(order[:n]).values)
                    rows.append({"checkpoint": label, "scorer": name, "signed": bool(scorer.signed), "n_removed": n,
                                 **_measure(model, mask, data, cfg)})
                    progress.advance(1)
                progress.done()
            progress.phase(f"{label}: random control", len(counts))
            for n in counts:
                rows.append({"checkpoint": label, "scorer": "random", "signed": None, "n_removed": n,
                             **_measure(model, random_mask(bench.eligible, n, seed=cfg.data.seed + 1), data, cfg)})
                progress.advance(1)
            progress.done()
            if {"gradient", "influence"} <= kept.keys():
                fp_rows.append(false_positive_row(label, kept["gradient"], kept["influence"], bench.names))
            fits[label] = bench.inputs.peek("influence_fit_info")
            del bench, kept

        record = {"config": cfg.to_dict(), "versions": versions(), "machine": machine_info(),
                  "data": data.record() if data else None, "baselines": baselines, "sweeps": rows,
                  "false_positive": fp_rows, "influence_fits": fits,
                  "reported": "accuracy on the evaluation half (bootstrap 95% CI); scoring_accuracy: the half the "
                              "scores were fitted and judged on, beside it to show the selection bias",
                  "timings": {"total_s": time.perf_counter() - t0}}
        folder.write_json("results.json", record)
        write_table(folder, "removal_sweeps.csv", rows)
        write_table(folder, "baselines.csv", baselines)
        if fp_rows:
            write_table(folder, "false_positive.csv", fp_rows)
        lines = ["Baselines (evaluation half, 95% CI; scoring half beside):",
                 table_text(baselines, ["checkpoint", "accuracy", "ci_low", "ci_high", "scoring_accuracy"]), "",
                 "Removal sweeps:",
                 table_text(rows, ["checkpoint", "scorer", "n_removed", "evaluation_accuracy", "evaluation_ci_low",
                                   "evaluation_ci_high", "scoring_accuracy"])]
        if fp_rows:
            lines += ["", "False-positive table (gradient-detrimental that influence does not call beneficial):",
                      table_text(fp_rows, list(fp_rows[0]))]
        folder.write_text("summary.txt", "\n".join(lines) + "\n")
        _plot(folder.path / "removal_curves.png", baselines, rows)
        folder.commit()
        record["out_dir"] = str(folder.final)
    return InfluenceResult(folder.final, record)


def _plot(path: Path, baselines: list[dict], rows: list[dict]) -> None:
    """One panel per checkpoint: evaluation-half accuracy against N removed, one line per scorer."""
    plt = pyplot()
    n = len(baselines)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    for ax, base in zip(axes[0], baselines):
        mine = [r for r in rows if r["checkpoint"] == base["checkpoint"]]
        for scorer in dict.fromkeys(r["scorer"] for r in mine):
            pts = sorted((r["n_removed"], r["evaluation_accuracy"], r["evaluation_ci_low"], r["evaluation_ci_high"])
                         for r in mine if r["scorer"] == scorer)
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            style = {"ls": "--", "color": "grey"} if scorer == "random" else {}
            ax.plot(x, y, marker="o", ms=3, label=scorer, **style)
            ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], alpha=0.08, **({"color": "grey"} if scorer == "random" else {}))
        ax.axhline(base["accuracy"], color="black", lw=0.8, ls=":", label="no removal")
        ax.set_xscale("log")
        ax.set_xlabel("parameters zeroed (N lowest-scored)")
        ax.set_ylabel("accuracy (evaluation half)")
        ax.set_title(str(base["checkpoint"]), fontsize=10)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
