"""`mft influence`: removal sweeps per checkpoint and scorer, judged on rows nothing was chosen on.

For each checkpoint (the reached targets of a `checkpoints.json`, or one `--model DIR`), each scorer and
each N of `--n-removed`, three arms change the model (experiments/removal_arms.py): `zero` sets the N
lowest-scored eligible parameters to 0 (signed scorers: most helpful predicted first; unsigned: least
harmful first), `matched` takes a gradient step on the same N parameters with the zeroing's norm, and
`random` zeroes N parameters drawn uniformly (one per N). Each arm is compared with the unmasked model on
the same examples: held-out training rows (`--heldout-rows`) and the validation split's evaluation half,
with McNemar's test for accuracy and a paired bootstrap of per-example Δloss, Holm-corrected over every
test of the run; the scoring half (what the scores were fitted on) is reported beside them untested, and
the N each scorer would pick on it is reported with its held-out figures. Finished cells are written as
they finish, and a rerun with the same `--name` (or `--resume`) skips them. Under torchrun / accelerate
every rank collects its block of g, takes its share of influence's curvature (scoring/objective.py) and
scores alike; the cells are dealt out to the ranks, each writes its own into rank 0's folder, and rank 0
assembles, tests and reports. The follow-up study's table
counts gradient-detrimental and influence-beneficial (score < 0) eligible parameters; its rate,
|detrimental ∧ not beneficial| / |detrimental|, is a disagreement between two scorers, not a false-positive
rate, and is named so. The report (Holm family, chosen N, verdicts, summary.txt, removal_curves.png) is
experiments/influence_report.py.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..collect.distributed import World, broadcast, check_same_on_every_rank, init_from_env
from ..config import help_field
from ..errors import ConfigError, ResumeError
from ..masking import Mask, random_mask
from ..device import device_summary, resolve_device
from ..report import ResultsFolder, machine_info, versions
from ..report.folder import PARTIAL_SUFFIX, RankWriter
from ..report.progress import Progress
from ..scoring.ground_truth.judge import gradient_influence_disagreement
from .influence_report import choose_n, holm_family, plot_removal_curves, summary_text, verdict_lines
from .removal_arms import (
    ARMS,
    MATCHED_GRADIENTS,
    STATE_FILE,
    CellStore,
    EvalSet,
    apply_matched_step,
    check_heldout_against_finetune,
    check_resume,
    heldout_set,
    paired_figures,
    parse_row_range,
    rows_text,
)
from .scoring_setup import ScoringConfig, ScoringData, lowest, prepare_bench
from .trials import parse_int_list, parse_names, write_table

log = logging.getLogger("mft_engine")

#: the scorers of issue 17's sweep; `--scorers study` runs those of them that are registered (and says
#: which are not)
STUDY_SCORERS = ("gradient", "taylor", "taylor-train", "fisher-taylor", "influence", "magnitude", "wanda")
MCNEMAR_TESTS = ("exact", "mid-p")


@dataclass
class InfluenceConfig(ScoringConfig):
    """Configuration of `mft influence`."""

    scorers: str = help_field("scorers to run: study (gradient, taylor, taylor-train, fisher-taylor, influence, "
                              "magnitude, wanda: those registered) | all | comma-separated names", "study")
    checkpoints: str | None = help_field("checkpoints.json of mft finetune --save-at (every reached target is swept); "
                                         "else --model is the one checkpoint", None)
    n_removed: str = help_field("numbers N of lowest-scored parameters changed (comma-separated)",
                                "100,1000,10000,100000")
    arms: str = help_field("arms per scorer and N (comma-separated): zero (the N lowest-scored set to 0) | matched "
                           "(a gradient step on the same N with the zeroing's norm) | random (N drawn uniformly, "
                           "zeroed; one per N)", "zero,matched,random")
    matched_gradient: str = help_field("gradient of the matched arm's step: scoring (∇L on the scoring half) | "
                                       "train (the training g of --samples rows)", "scoring")
    heldout_rows: str | None = help_field("training rows held out for evaluation: START:STOP or last:N (e.g. "
                                          "last:5000); none may be among the --samples rows of g and H, nor among "
                                          "the checkpoint's fine-tuning rows where its folder records them", None)
    resamples: int | None = help_field("paired-bootstrap resamples B (CIs and Δloss p-values; the smallest p-value "
                                       "is 2/(B+1)); default: enough that it is half Holm's first threshold "
                                       "α/tests, and at least 10,000", None)
    mcnemar: str = help_field("McNemar p-value the Holm correction uses for accuracy: exact | mid-p (both are "
                              "reported)", "exact")
    alpha: float = help_field("family-wise error rate of the Holm correction over every test of the run", 0.05)
    name: str | None = help_field("folder influence_<name>; re-running with the same --out, --name and settings "
                                  "resumes it (finished cells are read back, not recomputed)", None)
    resume: str | None = help_field("continue an interrupted influence folder (its .influence_<time>.partial) "
                                    "with the same settings", None)

    def __post_init__(self) -> None:
        super().__post_init__()
        ns = self.removal_counts()
        if not ns or any(n < 1 for n in ns):
            raise ConfigError(f"--n-removed {self.n_removed!r} must list numbers >= 1")
        if self.resamples is not None and self.resamples < 1:
            raise ConfigError(f"--resamples {self.resamples} must be >= 1")
        self.arm_list()  # validates --arms
        if self.matched_gradient not in MATCHED_GRADIENTS:
            raise ConfigError(f"--matched-gradient {self.matched_gradient!r} is not one of {', '.join(MATCHED_GRADIENTS)}")
        if self.mcnemar not in MCNEMAR_TESTS:
            raise ConfigError(f"--mcnemar {self.mcnemar!r} is not one of {', '.join(MCNEMAR_TESTS)}")
        if not (0.0 < self.alpha < 1.0):
            raise ConfigError(f"--alpha {self.alpha} must be in (0, 1)")
        if self.heldout_rows is not None:
            parse_row_range("--heldout-rows", self.heldout_rows, 1 << 62)  # syntax now; the range once data is read
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ConfigError(f"--name {self.name!r} must be a plain folder name")
        if self.name is not None and self.resume is not None:
            raise ConfigError("--name and --resume name the folder twice; give one of them")
        self.checkpoint_list()  # validates --checkpoints

    def scorer_names(self) -> list[str]:
        """The scorers to run, in order: `study` → the STUDY_SCORERS that are registered."""
        if self.scorers.strip() == "study":
            from ..scoring.base import scorer_names

            known = scorer_names()
            return [s for s in STUDY_SCORERS if s in known]
        return super().scorer_names()

    def missing_study_scorers(self) -> list[str]:
        """The STUDY_SCORERS that `--scorers study` could not run (not registered)."""
        if self.scorers.strip() != "study":
            return []
        return [s for s in STUDY_SCORERS if s not in self.scorer_names()]

    def n_tests(self) -> int:
        """The size of the Holm family: per checkpoint and cell, accuracy and Δloss on each tested set."""
        arms = self.arm_list()
        per_n = len(self.scorer_names()) * sum(a != "random" for a in arms) + ("random" in arms)
        sets = 1 + (self.heldout_rows is not None)
        return len(self.checkpoint_list()) * len(self.removal_counts()) * per_n * sets * 2

    def bootstrap_resamples(self) -> int:
        """--resamples, or the smallest B ≥ 10,000 with 2/(B+1) ≤ α / (2 · n_tests()): then a Δloss test can
        pass Holm's threshold (the bootstrap cannot resolve p-values below 2/(B+1))."""
        if self.resamples is not None:
            return self.resamples
        return max(10_000, math.ceil(4.0 * self.n_tests() / self.alpha))

    def arm_list(self) -> list[str]:
        """The arms to run, in ARMS order."""
        chosen = parse_names("--arms", self.arms, ARMS)
        return [a for a in ARMS if a in chosen]

    def removal_counts(self) -> list[int]:
        return sorted(parse_int_list("--n-removed", self.n_removed))

    def checkpoint_list(self) -> list[tuple[str, str]]:
        """(label, model path) per checkpoint: the reached targets and saved steps of --checkpoints, or --model
        alone."""
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
        saved = [(f"acc_{t['target']:g}", t) for t in targets if t.get("reached") and t.get("path")]
        saved += [(f"step_{t['step']}", t) for t in rec.get("steps", []) if t.get("saved") and t.get("path")]
        if not saved:
            raise ConfigError(f"--checkpoints {p} lists no reached target and no saved step")
        return [(label, str(Path(t["path"]) if Path(t["path"]).is_absolute() else p.parent / t["path"]))
                for label, t in saved]


@dataclass
class InfluenceResult:
    """A finished sweep: its folder and results.json as a dict (out_dir None on a torchrun rank other than 0)."""

    out_dir: Path | None
    record: dict[str, Any]


def _existing_folder(cfg: InfluenceConfig) -> Path | None:
    """The influence folder that --resume or --name names (its state file present), or None for a new run."""
    if cfg.resume is not None:
        path = Path(cfg.resume).expanduser()
        if not (path / STATE_FILE).is_file():
            raise ResumeError(f"--resume {path} is not an influence folder (no {STATE_FILE} in it)")
        return path
    if cfg.name is None:
        return None
    out = Path(cfg.out)
    partial, final = out / f".influence_{cfg.name}{PARTIAL_SUFFIX}", out / f"influence_{cfg.name}"
    for p in (partial, final):
        if (p / STATE_FILE).is_file():
            return p
    for p in (final, partial):
        if p.exists():
            raise ConfigError(f"{p} exists and is not an influence folder; choose another --name or --out")
    return None


class _Sweep:
    """One run of the sweep: the folder, its cell store, the evaluation sets and the counts of cells."""

    def __init__(self, cfg: InfluenceConfig, folder: ResultsFolder | RankWriter, progress: Progress,
                 world: World | None = None):
        self.cfg, self.folder, self.progress = cfg, folder, progress
        self.world = world or World()
        self.store = CellStore(folder)
        self.counts = cfg.removal_counts()
        self.arms = cfg.arm_list()
        self.scorers = cfg.scorer_names()
        self.resamples = cfg.bootstrap_resamples()
        self.data: ScoringData | None = None
        self.sets: list[EvalSet] | None = None
        self.computed = 0
        self.reused = 0

    def cell_keys(self) -> list[tuple[str, str, int]]:
        """(scorer, arm, N) of every cell of one checkpoint, in report order."""
        keys = [(s, a, n) for s in self.scorers for a in self.arms if a != "random" for n in self.counts]
        if "random" in self.arms:
            keys += [("random", "random", n) for n in self.counts]
        return keys

    def eval_sets(self, data: ScoringData) -> list[EvalSet]:
        """held-out (if asked), evaluation half, scoring half; built once (the tokenizer is the first
        checkpoint's, as for the rest of ScoringData). ConfigError when held-out rows overlap g's rows."""
        if self.sets is not None:
            return self.sets
        cfg, sets = self.cfg, []
        if cfg.heldout_rows is not None:
            rows = parse_row_range("--heldout-rows", cfg.heldout_rows, len(data.train))
            overlap = set(rows).intersection(data.rows)
            if overlap:
                raise ConfigError(f"--heldout-rows {cfg.heldout_rows}: {len(overlap):,} of its rows (e.g. row "
                                  f"{min(overlap)}) are among the --samples rows of g and H; hold out other rows")
            sets.append(heldout_set(data.tokenizer, data.train, rows, cfg.data.max_length, rows_text(rows)))
        labels = list(data.val.labels)
        sets.append(EvalSet("evaluation", "validation", data.val_tokens, data.evaluation_rows, labels, True,
                            rows_text(data.evaluation_rows)))
        sets.append(EvalSet("scoring", "validation", data.val_tokens, data.scoring_rows, labels, False,
                            rows_text(data.scoring_rows)))
        self.sets = sets
        return sets

    def outcomes(self, model: torch.nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per set, (correct, per-example loss) of `model` as it is now. Cost: one forward over every set."""
        budget = self.cfg.data.eval_batch_tokens
        return {s.name: s.outcomes(model, budget) for s in self.sets}

    def measure(self, model, base: dict, change) -> dict[str, Any]:
        """Apply `change()` (returns (Mask to restore, info)), evaluate every set, undo, compare with `base`."""
        mask, info = change()
        try:
            after = self.outcomes(model)
        finally:
            mask.restore(model)
        out = dict(info)
        for s in self.sets:
            out.update(paired_figures(s.name, base[s.name], after[s.name], self.resamples, self.cfg.data.seed,
                                      s.tested))
        return out

    def checkpoint(self, label: str, path: str) -> dict[str, Any]:
        """Every unfinished cell of one checkpoint; returns its record (baseline, checks, fit, disagreement)."""
        cfg, store, progress, w = self.cfg, self.store, self.progress, self.world
        keys = self.cell_keys()
        # Rank 0 reads what is finished, once, for every rank: the cells other ranks write while this
        # checkpoint runs must not change anyone's plan (each scorer's solve is collective).
        todo, stored, ordered = broadcast(w.is_main and (
            [k for k in keys if store.get(label, *k) is None], store.checkpoint(label),
            [s for s in self.scorers if store.order(label, s) is not None]), w)
        want_disagreement = {"gradient", "influence"} <= set(self.scorers)
        if not todo and stored is not None and (stored.get("disagreement") or not want_disagreement):
            self.reused += len(keys)
            log.info("%s: all %d cells finished earlier", label, len(keys))
            return stored
        bench = prepare_bench(cfg, model_name=path, data=self.data, progress=progress,
                              fits_dir=self.folder.path / "fits" / label, shard_curvature=True)
        self.data = data = bench.data
        n_elig = bench.n_eligible()
        too_many = [n for n in self.counts if n > n_elig]
        if too_many:
            raise ConfigError(f"--n-removed {too_many[0]} is larger than the {n_elig:,} eligible parameters")
        sets = self.eval_sets(data)
        heldout = next((s for s in sets if s.name == "heldout"), None)
        ft_check = (check_heldout_against_finetune(path, cfg.data.task, heldout.rows, len(data.train))
                    if heldout is not None else None)
        model = bench.model
        progress.phase(f"{label}: baseline")
        base = self.outcomes(model)
        progress.done()
        record = {"checkpoint": label, "path": path, "n_eligible": n_elig, "finetune_rows_check": ft_check,
                  "baseline": {s.name: {"accuracy": float(base[s.name][0].mean()), "loss": float(base[s.name][1].mean()),
                                        "n": len(s.rows)} for s in sets},
                  "data": data.record(), "sets": {s.name: s.describe() for s in sets},
                  "disagreement": (stored or {}).get("disagreement"),
                  "influence_fit": (stored or {}).get("influence_fit")}
        if stored is not None and stored.get("baseline") != record["baseline"]:
            log.warning("%s: the baseline differs from the one stored with the finished cells (%s vs %s); another "
                        "machine or thread count?", label, record["baseline"], stored.get("baseline"))
        if w.is_main:
            store.put_checkpoint(label, record)
        eligible = bench.eligible
        shapes = [tuple(p.shape) for _, p in eligible]
        names = bench.names
        done_keys = set(keys) - set(todo)
        self.reused += len(done_keys) if w.is_main else 0
        mine = set(todo[w.rank::w.size])  # the cells dealt to this rank (all of them alone)

        def run(key: tuple[str, str, int], row_head: dict, change) -> None:
            if key not in mine:
                return
            row = {"checkpoint": label, **row_head, **self.measure(model, base, change)}
            store.put(label, *key, row)
            self.computed += 1
            progress.advance(1)

        if "random" in self.arms:
            progress.phase(f"{label}: random control", sum(k[0] == "random" for k in mine))
            for n in self.counts:
                run(("random", "random", n), {"scorer": "random", "arm": "random", "n_removed": n, "signed": None},
                    lambda n=n: (random_mask(eligible, n, seed=cfg.data.seed + 1).apply(model), {}))
            progress.done()
        kept: dict[str, dict[str, torch.Tensor]] = {}
        gradient = None
        for name in self.scorers:
            from ..scoring.base import get_scorer

            scorer = get_scorer(name)
            cells = [k for k in todo if k[0] == name]  # every rank scores when any rank has a cell of it
            need_scores = name in ("gradient", "influence") and want_disagreement and not record["disagreement"]
            order = store.order(label, name) if cells and not need_scores and name in ordered else None
            if (cells or need_scores) and order is None:
                if name == "influence":
                    from ..scoring.scorers.influence import fit_influence_solve

                    fit_influence_solve(bench.inputs)  # fit, then score: the scorer only loads the fit
                    record["influence_fit"] = bench.inputs.peek("influence_fit_info")
                progress.phase(f"{label}: score {name}")
                scores = scorer.score(bench.inputs)
                progress.done()
                if name in ("gradient", "influence") and want_disagreement:
                    kept[name] = {n: s.detach().clone() for n, s in scores.items()}
                order = lowest(scores, names, max(self.counts))
                del scores
                if w.is_main:
                    store.put_order(label, name, order)
            if not cells:
                continue
            progress.phase(f"{label}: {name}", sum(k in mine for k in cells))
            for n in self.counts:
                support = torch.sort(order[:n]).values
                head = {"scorer": name, "signed": bool(scorer.signed), "n_removed": n}
                run((name, "zero", n), {**head, "arm": "zero"},
                    lambda s=support: (Mask(names, shapes, s).apply(model), {}))
                if "matched" in self.arms:
                    if gradient is None and any(k[1] == "matched" for k in cells if k in mine):
                        gradient = self.matched_gradient(bench)
                    run((name, "matched", n), {**head, "arm": "matched", "matched_gradient": cfg.matched_gradient},
                        lambda s=support, g=gradient: apply_matched_step(model, names, shapes, s, g))
            progress.done()
        if {"gradient", "influence"} <= kept.keys():
            record["disagreement"] = {"checkpoint": label,
                                         **gradient_influence_disagreement(kept["gradient"], kept["influence"], names)}
        if w.is_main:
            store.put_checkpoint(label, record)
        if w.distributed:
            dist.barrier()  # every rank's cells are written before rank 0 reads them
        return record

    def matched_gradient(self, bench) -> dict[str, torch.Tensor]:
        """The gradient whose sparse step the matched arm takes: ∇L_score (float64, shared with the scorers'
        cache) or the training g (the GradientState's batch-sum; only its direction on the support matters)."""
        if self.cfg.matched_gradient == "scoring":
            from ..scoring.scorers.stats import score_gradient

            return score_gradient(bench.inputs)
        return {n: bench.state.grad_sum[n] for n in bench.names}


def removal_sweep(cfg: InfluenceConfig, progress: Progress | None = None) -> InfluenceResult:
    """Run the removal sweeps described by `cfg`; write results/influence_<timestamp>/ (or influence_<name>/)
    and return it.

    Cost per checkpoint: one collection pass over N training samples, each scorer's own statistics
    (influence: one inverse solve), one evaluation of every set for the baseline and one per unfinished
    (scorer, arm, N) cell, and per tested set two paired bootstraps of `resamples` × rows per cell.
    Finished cells (a rerun with the same --name, or --resume) are read back, not recomputed; a checkpoint
    whose cells are all finished is not even loaded.
    """
    progress = progress or Progress()
    t0 = time.perf_counter()
    w = init_from_env(cfg.dist_backend)
    config = cfg.to_dict()
    if w.distributed:
        check_same_on_every_rank("configuration", json.dumps(config, sort_keys=True, default=str), w)
    if not w.is_main:  # rank 0 alone looks at the folder (it may be creating it now); torchrun stops every
        return _sweep_on_worker(cfg, progress, w)  # rank when rank 0 fails
    existing = _existing_folder(cfg)
    if existing is not None:
        check_resume(existing, config)
    missing = cfg.missing_study_scorers()
    name = f"influence_{cfg.name}" if cfg.name is not None else None
    with ResultsFolder(cfg.out, "influence", resume=existing, name=name) as folder:
        if w.distributed:
            broadcast(str(folder.path), w)  # the other ranks write their cells there
        folder.confirm()
        folder.write_json(STATE_FILE, {"kind": "influence", "config": config})
        log.info("config: %s", config)
        if missing:
            log.warning("--scorers study: %s not registered, not run", ", ".join(missing))
        sweep = _Sweep(cfg, folder, progress, w)
        records = [sweep.checkpoint(label, path) for label, path in cfg.checkpoint_list()]
        computed = _total(sweep.computed, w)
        rows = [sweep.store.get(rec["checkpoint"], *k) for rec in records for k in sweep.cell_keys()]
        sets = sweep.sets or []
        set_info = {s.name: s.describe() for s in sets}
        if not set_info:  # every checkpoint was finished earlier: the sets are described in its record
            set_info = records[0].get("sets", {})
        for rec in records:
            rec["sets"] = set_info
        tested = [s for s, d in set_info.items() if d["tested"]]
        family = holm_family(rows, cfg, tested, sweep.resamples)
        report_set = "heldout" if "heldout" in set_info else "evaluation"
        chosen = choose_n(rows, report_set) if any(r["arm"] == "zero" for r in rows) else []
        verdict = verdict_lines(rows, report_set, family)
        disagreement = [rec["disagreement"] for rec in records if rec.get("disagreement")]
        baselines = [{"checkpoint": rec["checkpoint"], "path": rec["path"],
                      **{f"{s}_{k}": v for s, b in rec["baseline"].items() for k, v in b.items()}} for rec in records]
        record = {"config": config, "versions": versions(), "machine": machine_info(),
                  "device": device_summary(resolve_device(cfg.device)),
                  "data": records[0]["data"] if records else None, "sets": set_info, "reported_on": report_set,
                  "baselines": baselines, "checkpoints": records, "sweeps": rows, "comparisons": family,
                  "chosen_n": chosen, "verdict": verdict, "gradient_influence_disagreement": disagreement,
                  "influence_fits": {rec["checkpoint"]: rec.get("influence_fit") for rec in records},
                  "scorers_not_run": missing,
                  "cells": {"computed": computed, "finished_earlier": sweep.reused, "processes": w.size},
                  "reported": f"accuracy and loss on {report_set} rows against the unmasked model, paired on the "
                              "same examples (McNemar; paired bootstrap of Δloss), Holm-corrected over every test "
                              "of the run; scoring_*: the half the scores were fitted and N is chosen on "
                              "(in-sample, untested)",
                  "timings": {"total_s": time.perf_counter() - t0}}
        folder.write_json("results.json", record)
        write_table(folder, "removal_sweeps.csv", rows)
        write_table(folder, "baselines.csv", baselines)
        if chosen:
            write_table(folder, "chosen_n.csv", chosen)
        if disagreement:
            write_table(folder, "gradient_influence_disagreement.csv", disagreement)
        folder.write_text("summary.txt", summary_text(record, rows, report_set))
        with folder.writing("removal_curves.png") as p:
            plot_removal_curves(p, baselines, rows, report_set)
        folder.commit()
        record["out_dir"] = str(folder.final)
    return InfluenceResult(folder.final, record)


def _sweep_on_worker(cfg: InfluenceConfig, progress: Progress, w: World) -> InfluenceResult:
    """A torchrun rank other than 0: the same checkpoints, g (its block, reduced), scores (influence's
    curvature shared) and its share of the cells, written into rank 0's folder; rank 0 reports."""
    sweep = _Sweep(cfg, RankWriter(broadcast(None, w)), progress, w)
    for label, path in cfg.checkpoint_list():
        sweep.checkpoint(label, path)
    _total(sweep.computed, w)
    return InfluenceResult(None, {"rank": w.rank})


def _total(count: int, w: World) -> int:
    """Σ of every rank's `count` (a collective: every rank calls it)."""
    if not w.distributed:
        return count
    counts: list[Any] = [None] * w.size
    dist.all_gather_object(counts, count)
    return int(sum(counts))
