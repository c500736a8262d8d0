"""`mft validate-scorer`: every scorer judged against the real effect of removing single parameters.

Pipeline: prepare the checkpoint (scoring_setup) → draw n eligible parameters → ground truth ΔL of each
zeroed alone (float64 by default, from cached activations) on the scoring half and on a held-out set no
scorer saw (--held-out: the evaluation half and/or the last training rows), with the per-example loss
changes (each item classed helpful / harmful / undetermined by a bootstrap over them) and the noise floor
→ every scorer's scores → each judged on its own claim against each set, side by side
(scoring/ground_truth/judge.py), plus the oracle row (the scoring half's ΔL as a score) → influence again
over a damping sweep → additivity of the best signed scorer's 100 lowest-scored parameters zeroed
together. Nothing here reports accuracy. The ground truth's sets and their measurement (chunked, sharded
over torchrun ranks, resumable) are experiments/truth_sets.py.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..collect.distributed import (
    World,
    broadcast,
    check_resume_world,
    check_same_on_every_rank,
    init_from_env,
)
from ..config import help_field
from ..errors import ConfigError, ResumeError
from ..device import MemoryPeaks, device_summary, model_device, warn_fp64
from ..report import ResultsFolder, machine_info, versions
from ..report.plots import pyplot
from ..report.progress import Progress
from ..scoring.ground_truth.judge import (
    HARMFUL,
    HELPFUL,
    UNDETERMINED,
    ScorerVerdict,
    base_rate,
    best_signed,
    gradient_influence_disagreement,
)
from .scoring_setup import ScoringConfig, flat_to_items, gather, lowest, prepare_bench, sample_eligible
from .trials import parse_float_list, table_text, write_table
from .truth_sets import (
    GROUND_TRUTH_DTYPES,
    PILOT_ITEMS,
    TRUTH_DIR,
    SetTruth,
    measure_set,
    reuse_ground_truth,
    truth_sets,
)

log = logging.getLogger("mft_engine")
ADDITIVITY_K = 100
#: a verdict's figures in the --json summary, per set
FIGURES = ("sign_accuracy", "balanced_accuracy", "mcc", "spearman", "top100_precision", "picks_mean_delta",
           "picks_ci_low", "picks_ci_high", "random_mean_delta", "random_ci_low", "random_ci_high", "picks_harmful",
           "false_positive_rate")
#: summary.txt's side-by-side columns (one per set each)
SIDE_FIGURES = ("bal_acc", "rho", "prec", "picks", "fpr")
CLASS_NAMES = {HELPFUL: "helpful", UNDETERMINED: "undetermined", HARMFUL: "harmful"}
NOTES = [("Sign convention: a signed score is the predicted change of the scoring-half loss when the parameter is "
         "zeroed (negative: removal helps); unsigned scores are predicted harm >= 0."),
         ("Each scorer is judged on its own claim: signed ones against ΔL (sign figures, rho, precision of the k most "
         "negative), unsigned ones against |ΔL| (rho, overlap of their k least-harm picks with the k smallest |ΔL|)."),
         ("scoring: the scoring half, which taylor, taylor2, fisher-taylor and influence fit ∇L_score on (in-sample for "
         "them); heldout: rows no scorer saw. The oracle row is the scoring half's true ΔL used as a score: on held-out "
         "rows, the ceiling of any scorer fitted on the scoring half."),
         ("An item is significantly helpful / harmful when the 95% percentile-bootstrap interval of its ΔL over the "
         "examples excludes 0 (and |ΔL| is above the noise floor); false_positive_rate = share of the items a signed "
         "scorer predicts helpful (score < 0) that are significantly harmful."),
         ("gradient scores are in parameter units, not loss units: only their sign is a prediction."),
         ("influence (the study's -s_i theta_i) and obs are not loss changes themselves; they are "
         "judged against the true ΔL because Spearman's rho is scale-free.")]


@dataclass
class ValidateConfig(ScoringConfig):
    """Configuration of `mft validate-scorer`."""

    n_params: int = help_field("sampled eligible parameters, each zeroed alone for its true ΔL", 1000)
    precision: str = help_field("ground-truth arithmetic: float64 | float32 (allowed where its noise floor is >= 10x "
                                "below the median |ΔL|: the report says whether it was)", "float64",
                                flag="--truth-precision", deprecated=("--precision",))
    damping_sweep: str = help_field("influence re-scored at λ = each factor × mean diag H (comma-separated; empty: no sweep)",
                                    "1e-4,1e-2,1e-1")
    additivity: bool = help_field("zero the best signed scorer's 100 lowest-scored parameters together: joint ΔL vs Σ single ΔL",
                                  True)
    ground_truth: str | None = help_field("reuse ΔL and the noise floor of an earlier validate run (its folder) instead of "
                                          "zeroing again: same --model, --seed, --n-params, --exclude and --precision, so "
                                          "its sampled parameters are this run's", None)
    held_out: str = help_field("rows ΔL is also measured on, which no scorer sees: evaluation (the validation split's "
                               "evaluation half) | train-last:N (the last N training rows; none may be among the "
                               "--samples rows, and the checkpoint must not have been trained on them: fine-tune with "
                               "--samples M --sample-order first) | both comma-separated | none", "evaluation")
    resamples: int = help_field("bootstrap resamples: each item's helpful/harmful/undetermined class (over its "
                                "per-example loss changes) and the intervals of the picks' mean ΔL", 1000)
    truth_chunk_examples: int = help_field("examples per ground-truth oracle (its activation cache grows with them); "
                                           "a larger set is measured chunk by chunk and the ΔL combined", 2048)
    stack_mib: int | None = help_field("working memory (MiB) for the perturbed layer copies the ground truth evaluates "
                                       "at once (default: 256 on a CPU; on CUDA a quarter of the free device memory, "
                                       "at most 16384; halved when the device runs out)", None)
    resume: str | None = help_field("continue an interrupted run's .validate_<time>.partial folder: the ground-truth "
                                    "shards it finished are read back, not measured again (same settings and number "
                                    "of processes)", None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_params < 1:
            raise ConfigError(f"--n-params {self.n_params} must be >= 1")
        if self.precision not in GROUND_TRUTH_DTYPES:
            raise ConfigError(f"--precision {self.precision!r} is not one of {', '.join(GROUND_TRUTH_DTYPES)}")
        for f in self.sweep_factors():
            if not (f > 0 and math.isfinite(f)):
                raise ConfigError(f"--damping-sweep {f:g} must be > 0")
        if self.ground_truth and not (Path(self.ground_truth) / "ground_truth.csv").is_file():
            raise ConfigError(f"--ground-truth {self.ground_truth} is not a validate-scorer results folder "
                              "(no ground_truth.csv)")
        self.held_out_parts()  # validates --held-out
        if self.resamples < 100:
            raise ConfigError(f"--resamples {self.resamples} must be >= 100 (the 95% intervals need resamples)")
        if self.truth_chunk_examples < 1:
            raise ConfigError(f"--truth-chunk-examples {self.truth_chunk_examples} must be >= 1")
        if self.stack_mib is not None and self.stack_mib < 1:
            raise ConfigError(f"--stack-mib {self.stack_mib} must be >= 1")

    def stack_bytes(self) -> int | None:
        """--stack-mib in bytes (None: the oracle's default for its device)."""
        return None if self.stack_mib is None else self.stack_mib << 20

    def held_out_parts(self) -> list[tuple[str, int | None]]:
        """The parts of --held-out as (kind, count): ("evaluation", None) and/or ("train-last", N); [] for none."""
        text = self.held_out.strip().lower()
        if text in ("", "none"):
            return []
        parts: list[tuple[str, int | None]] = []
        for raw in text.split(","):
            part = raw.strip()
            if part == "evaluation":
                parts.append(("evaluation", None))
                continue
            kind, _, count = part.partition(":")
            if kind != "train-last" or not count.strip().isdigit() or int(count) < 1:
                raise ConfigError(f"--held-out part {raw.strip()!r} is not one of evaluation, train-last:N (N >= 1), "
                                  "none")
            parts.append(("train-last", int(count)))
        if len({k for k, _ in parts}) != len(parts):
            raise ConfigError(f"--held-out {self.held_out!r} names a part twice")
        return parts

    def sweep_factors(self) -> list[float]:
        return parse_float_list("--damping-sweep", self.damping_sweep)


@dataclass
class ValidateResult:
    """A finished validation: its folder, results.json as a dict, and the --json object."""

    out_dir: Path
    record: dict[str, Any]
    summary: dict[str, Any]


def _score(name: str, inputs, progress: Progress) -> tuple[dict[str, torch.Tensor], bool, float]:
    from ..scoring.base import get_scorer

    scorer = get_scorer(name)
    progress.phase(f"score {name}")
    t = time.perf_counter()
    scores = scorer.score(inputs)
    progress.done()
    return scores, bool(scorer.signed), time.perf_counter() - t


#: config fields that may differ between a run and its resume
_RESUME_FREE = ("out", "resume", "stack_mib")  # stack_mib: rounding only, and a resume may need less


def _identity(cfg: ValidateConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}


def _check_resume(cfg: ValidateConfig, w: World) -> None:
    """ResumeError (one line, nothing touched) unless --resume names an interrupted validate-scorer folder
    started with these settings by as many processes as run now."""
    import json

    path = Path(cfg.resume)
    saved = path / "config.json"
    if not path.is_dir() or not saved.is_file():
        raise ResumeError(f"--resume {path} is not an interrupted validate-scorer folder (no config.json in it)")
    old = json.loads(saved.read_text())
    diff = sorted(k for k in set(old) | set(_identity(cfg)) if old.get(k) != _identity(cfg).get(k))
    if diff:
        raise ResumeError(f"--resume {path} was started with other settings ({', '.join('--' + k.replace('_', '-') for k in diff)} differ)")
    check_resume_world(path, (path / TRUTH_DIR).glob("*_rank*-of-*.npz"), w, "measured")


def _measure_on_worker(cfg: ValidateConfig, progress: Progress, w: World) -> ValidateResult:
    """A torchrun rank other than 0: the same model, g (its block, reduced) and items; it measures its share of
    the ground truth into the run folder's truth/ shards and hands ΔL to rank 0, which judges and writes."""
    folder = Path(broadcast(None, w))
    bench = prepare_bench(cfg, progress=progress)
    items = sample_eligible(bench.eligible, cfg.n_params, cfg.data.seed)
    if not cfg.ground_truth:
        pilot = np.random.default_rng(cfg.data.seed).permutation(len(items))[:PILOT_ITEMS]
        for s in truth_sets(cfg, bench):
            measure_set(s, bench.model, items, cfg, progress, pilot, None, folder / TRUTH_DIR, w)
    return ValidateResult(None, {"rank": w.rank}, {})


def validate_scorers(cfg: ValidateConfig, progress: Progress | None = None) -> ValidateResult:
    """Run the ground-truth check described by `cfg`; write results/validate_<timestamp>/ and return it.

    Cost: one collection pass over N training samples; the ground truth (n_params re-evaluations of the
    layers downstream of each parameter over the scoring half, and again over the held-out set: the cost
    grows with its examples, and memory holds n_params × examples float64 per-example changes per set);
    the bootstrap classes (n_params × examples × resamples flops per set); per scorer its own statistics
    (influence: one inverse solve of (H + λI) per damping value, each CG step one Gauss-Newton product over
    N samples); each verdict's intervals (resamples × n_params).
    """
    import json

    progress = progress or Progress()
    w = init_from_env(cfg.dist_backend)
    if w.distributed:
        check_same_on_every_rank("configuration", json.dumps(_identity(cfg), sort_keys=True, default=str), w)
    if cfg.resume is not None:
        _check_resume(cfg, w)
    if not w.is_main:
        return _measure_on_worker(cfg, progress, w)
    t0 = time.perf_counter()
    with ResultsFolder(cfg.out, "validate", resume=cfg.resume) as folder:
        if w.distributed:
            broadcast(str(folder.path), w)  # the other ranks write their ground-truth shards there
        folder.confirm()
        if cfg.resume is None:
            folder.write_json("config.json", _identity(cfg))
        folder.keep_on_failure(TRUTH_DIR)
        log.info("config: %s", cfg.to_dict())
        bench = prepare_bench(cfg, progress=progress, fits_dir=folder.path / "fits")
        peaks = MemoryPeaks(model_device(bench.model))
        peaks.record("prepare")
        if cfg.precision == "float64":
            warn_fp64(model_device(bench.model))
        timings = dict(bench.timings)
        items = sample_eligible(bench.eligible, cfg.n_params, cfg.data.seed)
        sets = truth_sets(cfg, bench)
        # the float32 pilot: the first 100 judged items in a seeded random order (a uniform subsample of the
        # judged items; the items themselves are in flat order, which would favour the first tensors)
        pilot = np.random.default_rng(cfg.data.seed).permutation(len(items))[:PILOT_ITEMS]

        t = time.perf_counter()
        reused = reuse_ground_truth(cfg, items, [s.name for s in sets]) if cfg.ground_truth else None
        truths = [measure_set(s, bench.model, items, cfg, progress, pilot, reused, folder.path / TRUTH_DIR, w)
                  for s in sets]
        scoring = truths[0]
        timings["ground_truth_s"] = time.perf_counter() - t
        peaks.record("ground_truth")
        delta, floor, noise = scoring.delta, scoring.floor, scoring.noise

        verdicts: dict[str, list[ScorerVerdict]] = {tr.name: [] for tr in truths}
        columns: dict[str, np.ndarray] = {}
        picks: dict[str, torch.Tensor] = {}
        kept: dict[str, dict[str, torch.Tensor]] = {}
        scorer_s: dict[str, float] = {}
        names = cfg.scorer_names()
        if "influence" in names:
            # fit, then score: the solve is its own step (as `mft fit-influence`); the scorer only loads it
            from ..scoring.scorers.influence import fit_influence_solve

            t = time.perf_counter()
            fit_influence_solve(bench.inputs)
            timings["influence_fit_s"] = time.perf_counter() - t
        for name in names:
            scores, signed, secs = _score(name, bench.inputs, progress)
            columns[name] = gather(scores, items)
            for tr in truths:
                verdicts[tr.name].append(tr.judge(name, signed, columns[name], cfg))
            if signed:
                picks[name] = lowest(scores, bench.names, ADDITIVITY_K)
            if name in ("gradient", "influence"):
                kept[name] = scores
            scorer_s[name] = secs
            del scores
        timings["scorers_s"] = scorer_s
        disagreement = (gradient_influence_disagreement(kept["gradient"], kept["influence"], bench.names)
                        if len(kept) == 2 else None)
        kept.clear()
        # the oracle row: the scoring half's true ΔL used as a score — on held-out rows, the ceiling of any
        # scorer fitted on the scoring half
        oracle_row = ({tr.name: tr.judge("oracle", True, scoring.delta, cfg) for tr in truths}
                      if len(truths) > 1 else None)

        sweep = []
        if "influence" in columns:
            from ..scoring.scorers.influence import fit_influence_solve, influence_scores

            for factor in cfg.sweep_factors():
                progress.phase(f"influence at λ = {factor:g} × mean diag H")
                t = time.perf_counter()
                fit_influence_solve(bench.inputs, damping_factor=factor)
                scores, fit = influence_scores(bench.inputs, damping_factor=factor)
                col = gather(scores, items)
                v = scoring.judge(f"influence@{factor:g}", True, col, cfg)
                row = {"damping_factor": factor, "damping": fit.damping, "iterations": fit.iterations,
                       "final_residual": fit.residuals[-1] if fit.residuals else None,
                       "converged": fit.converged, "seconds": time.perf_counter() - t, **v.to_dict()}
                for tr in truths[1:]:
                    h = tr.judge(v.name, True, col, cfg)
                    row.update({f"{tr.name}_{k}": getattr(h, k) for k in ("balanced_accuracy", "spearman",
                                                                          "top100_precision")})
                sweep.append(row)
                progress.done()
                del scores

        peaks.record("scorers")
        best = best_signed(verdicts["scoring"])
        additivity = None
        if cfg.additivity and best is not None:
            progress.phase(f"additivity: {best.name}'s {ADDITIVITY_K} lowest zeroed together")
            chosen = flat_to_items(bench.eligible, picks[best.name].numpy())
            singles, joint = scoring.joint_and_singles(bench.model, chosen, cfg)
            additivity = {"scorer": best.name, "k": len(chosen), "joint_delta": joint,
                          "sum_single_delta": float(singles.sum()),
                          "ratio": joint / float(singles.sum()) if singles.sum() != 0 else None,
                          "n_single_helpful": int(np.sum(singles < -floor))}
            progress.done()
            peaks.record("additivity")

        timings["total_s"] = time.perf_counter() - t0
        params_per_s = len(items) / scoring.seconds if scoring.seconds else None
        set_names = [tr.name for tr in truths]
        summary = {
            "scorers": {v.name: {"signed": v.signed, "target": v.target,
                                 **{s: _figures(verdicts[s][i]) for s in set_names}}
                        for i, v in enumerate(verdicts["scoring"])},
            "oracle": {s: _figures(v) for s, v in oracle_row.items()} if oracle_row else None,
            "sets": {tr.name: tr.summary() for tr in truths},
            "gradient_influence_disagreement": disagreement,
            "base_rate": base_rate(delta, floor),
            "n_params": len(items),
            "noise_floor": floor,
            "n_below_noise": int(np.sum(np.abs(delta) <= floor)),
            "additivity": additivity,
            "params_per_s": params_per_s,
            "best_signed": best.name if best else None,
            "median_abs_delta": float(np.median(np.abs(delta))),
            "precision": cfg.precision,
            "float32_allowed": bool(noise.get("float32_allowed")) if cfg.precision == "float32" else None,
            "damping_sweep": sweep,
            "out_dir": str(folder.final),
        }
        fit_info = bench.inputs.peek("influence_fit_info")
        record = {"config": cfg.to_dict(), "versions": versions(), "machine": machine_info(),
                  "device": device_summary(model_device(bench.model), peaks),
                  "model": {"source": bench.source, "n_eligible": bench.n_eligible(),
                            "excluded_patterns": list(cfg.exclude_patterns())},
                  "data": bench.data.record(), "base_loss": scoring.base_loss,
                  "noise": {tr.name: tr.noise for tr in truths},
                  "rows": {s.name: s.parts for s in sets},
                  "gradient_rows": [int(r) for r in bench.data.rows[: bench.state.n_samples]],
                  "ground_truth_from": cfg.ground_truth,
                  "verdicts": {s: [v.to_dict() for v in vs] for s, vs in verdicts.items()},
                  "oracle_verdicts": {s: v.to_dict() for s, v in oracle_row.items()} if oracle_row else None,
                  "influence_fit": fit_info,
                  "notes": NOTES, **summary, "timings": timings}
        _write(folder, record, items, truths, columns, verdicts, oracle_row, sweep)
        folder.commit()
        summary["out_dir"] = str(folder.final)
        record["out_dir"] = str(folder.final)
    return ValidateResult(folder.final, record, summary)


def _figures(v: ScorerVerdict) -> dict[str, Any]:
    return {k: getattr(v, k) for k in FIGURES}


def _write(folder: ResultsFolder, record: dict, items, truths: list[SetTruth], columns, verdicts, oracle_row,
           sweep) -> None:
    import io

    folder.write_json("results.json", record)
    rows = []
    for j, (n, i) in enumerate(items):
        row: dict[str, Any] = {"parameter": n, "index": i}
        for tr in truths:
            suffix = "" if tr.name == "scoring" else f"_{tr.name}"
            row[f"delta_loss{suffix}"] = float(tr.delta[j])
            row[f"class{suffix}"] = None if tr.classes is None else CLASS_NAMES[int(tr.classes[j])]
        row.update({k: float(c[j]) for k, c in columns.items()})
        rows.append(row)
    write_table(folder, "ground_truth.csv", rows)
    for tr in truths:
        if tr.changes is not None:
            buf = io.BytesIO()
            np.save(buf, tr.changes)
            folder.write_bytes(f"per_example_{tr.name}.npy", buf.getvalue())
    table = [{"set": s, **v.to_dict()} for s, vs in verdicts.items() for v in vs]
    if oracle_row:
        table += [{"set": s, **v.to_dict()} for s, v in oracle_row.items()]
    write_table(folder, "scorers.csv", table)
    if sweep:
        write_table(folder, "damping_sweep.csv", sweep)
    lines = [f"Ground truth: {record['n_params']} sampled eligible parameters, each zeroed alone ({record['precision']})."]
    for tr in truths:
        s = record["sets"][tr.name]
        where = "; ".join(f"{p['split']} {p['which']} ({len(p['rows'])} rows)" for p in record["rows"][tr.name])
        cls = s["classes"]
        lines.append(f"- {tr.name}: {where}. Base loss {s['base_loss']:.6f}; noise floor {s['noise_floor']:.3g}; "
                     f"median |ΔL| {s['median_abs_delta']:.3g}; {s['n_below_noise']} at or below the floor; base rate "
                     f"(share raising the loss) {_fmt(s['base_rate'])}"
                     + (f"; bootstrap classes: {cls['helpful']} helpful, {cls['harmful']} harmful, "
                        f"{cls['undetermined']} undetermined" if cls else "") + ".")
    noise = record["noise"]["scoring"]
    if "pilot_n" in noise:
        lines.append(f"float32 pilot ({noise['pilot_n']} judged items vs float64): max |ΔL32 − ΔL64| "
                     f"{noise['pilot_max_abs_diff']:.3g}; sign disagreements {noise['pilot_sign_disagreements']} "
                     f"({noise['pilot_sign_disagreement_rate']:.3g}, 95% CI {noise['pilot_sign_disagreement_ci_low']:.3g}"
                     f"–{noise['pilot_sign_disagreement_ci_high']:.3g}).")
    lines.append(f"{_fmt(record['params_per_s'])} parameters/s on the scoring half.")
    names = [tr.name for tr in truths]
    side = []
    for i, v in enumerate(verdicts["scoring"]):
        row = {"name": v.name, "target": v.target}
        for s in names:
            row.update(_side_cells(verdicts[s][i], s))
        side.append(row)
    if oracle_row:
        side.append({"name": "oracle", "target": "ΔL", **{k: c for s in names for k, c in
                                                          _side_cells(oracle_row[s], s).items()}})
    cols = ["name", "target"] + [f"{f}[{s}]" for f in SIDE_FIGURES for s in names]
    lines += ["", "Each scorer on its own claim (signed: against ΔL; unsigned: against |ΔL|), side by side per set:",
              table_text(side, cols), ""]
    lines.append("bal_acc: balanced accuracy of the sign; rho: Spearman against the target; prec: top-100 precision; "
                 "picks: mean ΔL of its 100 lowest-scored vs a random 100 (95% interval); fpr: share of the items it "
                 "predicts helpful that are significantly harmful (bootstrap over examples).")
    if record.get("gradient_influence_disagreement"):
        g = record["gradient_influence_disagreement"]
        lines.append(f"Gradient–influence disagreement (the study's 'false-positive rate'): "
                     f"{_fmt(g['gradient_influence_disagreement'])} of {g['gradient_detrimental']} gradient-detrimental "
                     "entries are not influence-beneficial — two scorers compared with each other, not with the truth.")
    if record["best_signed"]:
        lines.append(f"Best signed scorer (balanced accuracy, scoring half): {record['best_signed']}")
    if record["additivity"]:
        a = record["additivity"]
        lines.append(f"Additivity: {a['scorer']}'s {a['k']} lowest-scored zeroed together: joint ΔL {a['joint_delta']:.4g} "
                     f"vs Σ single ΔL {a['sum_single_delta']:.4g}")
    if sweep:
        shown = [{**r, "damping": f"{r['damping']:.3g}", "damping_factor": f"{r['damping_factor']:g}"} for r in sweep]
        lines += ["", "Influence over the damping sweep (λ = factor × mean diag H):",
                  table_text(shown, ["damping_factor", "damping", "iterations", "final_residual", "balanced_accuracy",
                                     "spearman", "top100_precision"]
                             + [k for k in sweep[0] if k.startswith("heldout_")])]
    lines += [""] + record["notes"]
    folder.write_text("summary.txt", "\n".join(lines) + "\n")
    _plot(folder.path / "scorer_vs_truth.png", truths[0].delta, columns, verdicts["scoring"])


def _side_cells(v: ScorerVerdict, s: str) -> dict[str, str]:
    def g(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    picks = "" if v.picks_mean_delta is None else (
        f"{v.picks_mean_delta:.3g} vs {v.random_mean_delta:.3g} [{v.random_ci_low:.3g}, {v.random_ci_high:.3g}]")
    return {f"bal_acc[{s}]": g(v.balanced_accuracy), f"rho[{s}]": g(v.spearman), f"prec[{s}]": g(v.top100_precision),
            f"picks[{s}]": picks, f"fpr[{s}]": g(v.false_positive_rate)}


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _plot(path: Path, delta: np.ndarray, columns: dict[str, np.ndarray], verdicts: list[ScorerVerdict]) -> None:
    """One scatter per scorer: its score against the true ΔL (symlog axes: both span decades)."""
    plt = pyplot()
    n = len(columns)
    if n == 0:
        return
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    lin = float(np.quantile(np.abs(delta), 0.1)) or 1e-12
    for ax, v in zip(axes.flat, verdicts):
        s = columns[v.name]
        ok = np.isfinite(s)
        ax.scatter(s[ok], delta[ok], s=4, alpha=0.5)
        ax.set_yscale("symlog", linthresh=lin)
        finite = np.abs(s[ok])
        if finite.size and finite.max() > 0:
            ax.set_xscale("symlog", linthresh=float(np.quantile(finite[finite > 0], 0.1)) if (finite > 0).any() else 1e-12)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        rho = "n/a" if v.spearman is None else f"{v.spearman:.2f}"
        ax.set_title(f"{v.name} ({'signed' if v.signed else 'harm'}), ρ={rho}", fontsize=9)
        ax.set_xlabel("score")
        ax.set_ylabel("true ΔL")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

