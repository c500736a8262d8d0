"""`mft validate-scorer`: every scorer judged against the real effect of removing single parameters.

Pipeline: prepare the checkpoint (scoring_setup) → draw n eligible parameters → ground truth ΔL of each
zeroed alone on the scoring half (float64 by default, from cached activations) and the noise floor → every
scorer's scores → sign figures, Spearman ρ and top-100 precision (scoring/ground_truth/judge.py) → influence again
over a damping sweep → additivity of the best signed scorer's 100 lowest-scored parameters zeroed
together. Everything is chosen and judged on the scoring half; nothing here reports accuracy.
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

from ..config import help_field
from ..errors import ConfigError
from ..device import device_summary, resolve_device, warn_fp64
from ..report import ResultsFolder, machine_info, versions
from ..report.plots import pyplot
from ..report.progress import Progress
from ..scoring.ground_truth.judge import ScorerVerdict, base_rate, best_signed, judge_scorer
from .scoring_setup import ScoringConfig, flat_to_items, gather, lowest, prepare_bench, sample_eligible
from .trials import parse_float_list, table_text, write_table

log = logging.getLogger("mft_engine")
GROUND_TRUTH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
ADDITIVITY_K = 100


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


def validate_scorers(cfg: ValidateConfig, progress: Progress | None = None) -> ValidateResult:
    """Run the ground-truth check described by `cfg`; write results/validate_<timestamp>/ and return it.

    Cost: one collection pass over N training samples; the ground truth (n_params re-evaluations of the
    layers downstream of each parameter over the scoring half); per scorer its own statistics (influence:
    one inverse solve of (H + λI) per damping value, each CG step one Gauss-Newton product over N samples).
    """
    progress = progress or Progress()
    t0 = time.perf_counter()
    with ResultsFolder(cfg.out, "validate") as folder:
        log.info("config: %s", cfg.to_dict())
        bench = prepare_bench(cfg, progress=progress, fits_dir=folder.path / "fits")
        if cfg.precision == "float64":
            warn_fp64(resolve_device(cfg.device))
        timings = dict(bench.timings)
        items = sample_eligible(bench.eligible, cfg.n_params, cfg.data.seed)

        from ..scoring.ground_truth import RemovalOracle

        t = time.perf_counter()
        progress.phase("ground truth: cache activations")
        oracle = RemovalOracle(bench.model, bench.score_batches, dtype=GROUND_TRUTH_DTYPES[cfg.precision])
        progress.done()
        if cfg.ground_truth:
            delta, noise, delta_s = reuse_ground_truth(cfg, items)
        else:
            progress.phase("ground truth: zero each parameter alone", len(items))
            t_delta = time.perf_counter()
            delta = oracle.delta(items, on_item=lambda n: progress.advance(1))
            delta_s = time.perf_counter() - t_delta
            progress.done()
            progress.phase("ground truth: noise floor")
            noise = oracle.noise_floor(seed=cfg.data.seed)
            progress.done()
        timings["ground_truth_s"] = time.perf_counter() - t
        # float64: every no-op and regrouped evaluation counts. float32: ΔL is computed with the same matmul
        # shapes for L' and L, so the regrouping offset cancels; its error is measured against float64 instead.
        floor = (float(noise["max"]) if cfg.precision == "float64"
                 else max(float(noise["noop_max"]), float(noise.get("pilot_max_abs_diff", 0.0))))
        median_abs = float(np.median(np.abs(delta)))
        n_below = int(np.sum(np.abs(delta) <= floor))

        verdicts: list[ScorerVerdict] = []
        columns: dict[str, np.ndarray] = {}
        picks: dict[str, torch.Tensor] = {}
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
            verdicts.append(judge_scorer(name, signed, columns[name], delta, floor))
            if signed:
                picks[name] = lowest(scores, bench.names, ADDITIVITY_K)
            scorer_s[name] = secs
            del scores
        timings["scorers_s"] = scorer_s

        sweep = []
        if "influence" in columns:
            from ..scoring.scorers.influence import fit_influence_solve, influence_scores

            for factor in cfg.sweep_factors():
                progress.phase(f"influence at λ = {factor:g} × mean diag H")
                t = time.perf_counter()
                fit_influence_solve(bench.inputs, damping_factor=factor)
                scores, fit = influence_scores(bench.inputs, damping_factor=factor)
                v = judge_scorer(f"influence@{factor:g}", True, gather(scores, items), delta, floor)
                sweep.append({"damping_factor": factor, "damping": fit.damping, "iterations": fit.iterations,
                              "final_residual": fit.residuals[-1] if fit.residuals else None,
                              "converged": fit.converged, "seconds": time.perf_counter() - t, **v.to_dict()})
                progress.done()
                del scores

        best = best_signed(verdicts)
        additivity = None
        if cfg.additivity and best is not None:
            progress.phase(f"additivity: {best.name}'s {ADDITIVITY_K} lowest zeroed together")
            chosen = flat_to_items(bench.eligible, picks[best.name].numpy())
            singles = oracle.delta(chosen)
            joint = float(oracle.joint_delta(chosen))
            additivity = {"scorer": best.name, "k": len(chosen), "joint_delta": joint,
                          "sum_single_delta": float(singles.sum()),
                          "ratio": joint / float(singles.sum()) if singles.sum() != 0 else None,
                          "n_single_helpful": int(np.sum(singles < -floor))}
            progress.done()

        timings["total_s"] = time.perf_counter() - t0
        params_per_s = len(items) / delta_s if delta_s else None
        summary = {
            "scorers": {v.name: {k: getattr(v, k) for k in ("signed", "sign_accuracy", "balanced_accuracy", "mcc",
                                                              "spearman", "top100_precision")} for v in verdicts},
            "base_rate": base_rate(delta, floor),
            "n_params": len(items),
            "noise_floor": floor,
            "n_below_noise": n_below,
            "additivity": additivity,
            "params_per_s": params_per_s,
            "best_signed": best.name if best else None,
            "median_abs_delta": median_abs,
            "precision": cfg.precision,
            "float32_allowed": bool(noise.get("float32_allowed")) if cfg.precision == "float32" else None,
            "damping_sweep": sweep,
            "out_dir": str(folder.final),
        }
        fit_info = bench.inputs.peek("influence_fit_info")
        record = {"config": cfg.to_dict(), "versions": versions(), "machine": machine_info(),
                  "device": device_summary(resolve_device(cfg.device)),
                  "model": {"source": bench.source, "n_eligible": bench.n_eligible(),
                            "excluded_patterns": list(cfg.exclude_patterns())},
                  "data": bench.data.record(), "base_loss": oracle.base_loss, "noise": noise,
                  "ground_truth_from": cfg.ground_truth,
                  "verdicts": [v.to_dict() for v in verdicts], "influence_fit": fit_info,
                  "notes": ["Sign convention: a signed score is the predicted change of the scoring-half loss when the "
                            "parameter is zeroed (negative: removal helps); unsigned scores are predicted harm >= 0.",
                            "gradient scores are in parameter units, not loss units: only their sign is a prediction.",
                            "influence (the study's -s_i theta_i) and obs are not loss changes themselves; they are "
                            "judged against the true ΔL because Spearman's rho is scale-free."],
                  **summary, "timings": timings}
        _write(folder, record, items, delta, columns, verdicts, sweep)
        folder.commit()
        summary["out_dir"] = str(folder.final)
        record["out_dir"] = str(folder.final)
    return ValidateResult(folder.final, record, summary)


def reuse_ground_truth(cfg: ValidateConfig, items: list[tuple[str, int]]) -> tuple[np.ndarray, dict, float | None]:
    """(ΔL per item, the noise record, the earlier run's zeroing seconds) from the validate run folder
    `cfg.ground_truth`; ConfigError (exit 2) when it is not one, or was made with other settings or
    other sampled parameters."""
    import csv
    import json

    folder = Path(cfg.ground_truth)
    table, results = folder / "ground_truth.csv", folder / "results.json"
    if not table.is_file() or not results.is_file():
        raise ConfigError(f"--ground-truth {folder} is not a validate-scorer results folder "
                          "(no ground_truth.csv and results.json)")
    record = json.loads(results.read_text())
    old, new = record.get("config", {}), cfg.to_dict()
    for key in ("model", "seed", "n_params", "exclude", "precision", "task"):
        if old.get(key) != new[key]:
            raise ConfigError(f"--ground-truth {folder} was made with {key}={old.get(key)!r}, this run has "
                              f"{new[key]!r}")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if [(r["parameter"], int(r["index"])) for r in rows] != list(items):
        raise ConfigError(f"--ground-truth {folder} holds other sampled parameters than this run's "
                          "(the model's eligible set differs)")
    delta = np.array([float(r["delta_loss"]) for r in rows], dtype=np.float64)
    params_per_s = record.get("params_per_s")
    return delta, record["noise"], (len(rows) / params_per_s if params_per_s else None)


def _write(folder: ResultsFolder, record: dict, items, delta, columns, verdicts, sweep) -> None:
    folder.write_json("results.json", record)
    rows = [{"parameter": n, "index": i, "delta_loss": float(d), **{k: float(c[j]) for k, c in columns.items()}}
            for j, ((n, i), d) in enumerate(zip(items, delta))]
    write_table(folder, "ground_truth.csv", rows)
    table = [v.to_dict() for v in verdicts]
    write_table(folder, "scorers.csv", table)
    if sweep:
        write_table(folder, "damping_sweep.csv", sweep)
    cols = ["name", "signed", "n_judged", "sign_accuracy", "balanced_accuracy", "mcc", "spearman", "top100_precision"]
    lines = [f"Ground truth: {record['n_params']} sampled eligible parameters, each zeroed alone; ΔL on the scoring half "
             f"({record['data']['n_scoring_half']} examples, {record['precision']}).",
             f"Base loss {record['base_loss']:.6f}; noise floor {record['noise_floor']:.3g}; median |ΔL| "
             f"{record['median_abs_delta']:.3g}; {record['n_below_noise']} changes at or below the floor left out of "
             f"the sign figures.",
             f"Base rate (share of removals that raise the loss): {_fmt(record['base_rate'])}; "
             f"{_fmt(record['params_per_s'])} parameters/s.", "",
             table_text(table, cols), ""]
    if record["best_signed"]:
        lines.append(f"Best signed scorer (balanced accuracy): {record['best_signed']}")
    if record["additivity"]:
        a = record["additivity"]
        lines.append(f"Additivity: {a['scorer']}'s {a['k']} lowest-scored zeroed together: joint ΔL {a['joint_delta']:.4g} "
                     f"vs Σ single ΔL {a['sum_single_delta']:.4g}")
    if sweep:
        shown = [{**r, "damping": f"{r['damping']:.3g}", "damping_factor": f"{r['damping_factor']:g}"} for r in sweep]
        lines += ["", "Influence over the damping sweep (λ = factor × mean diag H):",
                  table_text(shown, ["damping_factor", "damping", "iterations", "final_residual", "balanced_accuracy",
                                     "spearman", "top100_precision"])]
    lines += [""] + record["notes"]
    folder.write_text("summary.txt", "\n".join(lines) + "\n")
    _plot(folder.path / "scorer_vs_truth.png", delta, columns, verdicts)


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

