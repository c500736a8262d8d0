"""The report of `mft influence`: the Holm correction over every test of a sweep, and what it writes.

`holm_family` Holm-adjusts every cell's accuracy and Δloss tests and adds their verdicts; `choose_n` picks,
per checkpoint and scorer, the N the scoring half would choose and reports it on rows nothing chose on;
`verdict_lines` says in plain sentences which arms change accuracy significantly; `summary_text` writes
summary.txt and `plot_removal_curves` removal_curves.png. experiments/influence_sweep.py runs the sweep and
calls them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluate.paired import holm
from ..report.plots import pyplot
from .removal_arms import holm_threshold_note
from .trials import table_text

if TYPE_CHECKING:  # type hints only: influence_sweep imports this module
    from .influence_sweep import InfluenceConfig


def holm_family(rows: list[dict], cfg: InfluenceConfig, tested: list[str], resamples: int) -> dict[str, Any]:
    """Holm-adjust every test of the run (per row and tested set: accuracy, Δloss) in place; adds
    `<set>_p_accuracy_holm`, `<set>_p_loss_holm` and `<set>_verdict_accuracy` / `_loss` (improves | harms |
    no significant change). Returns the family's description."""
    key = "p_accuracy_exact" if cfg.mcnemar == "exact" else "p_accuracy_mid"
    slots = [(r, s, m) for r in rows for s in tested for m in ("accuracy", "loss") if f"{s}_p_loss" in r]
    raw = [r[f"{s}_{key}"] if m == "accuracy" else r[f"{s}_p_loss"] for r, s, m in slots]
    adjusted = holm(raw)
    for (r, s, m), p in zip(slots, adjusted.tolist()):
        r[f"{s}_p_{m}_holm"] = p
        delta = r[f"{s}_delta_{m}"]
        better = delta > 0 if m == "accuracy" else delta < 0
        r[f"{s}_verdict_{m}"] = ("no significant change" if p > cfg.alpha or delta == 0
                                 else ("improves" if better else "harms"))
    note = holm_threshold_note(resamples, len(slots), cfg.alpha)
    return {"method": "holm", "alpha": cfg.alpha, "family_size": len(slots), "sets": tested,
            "accuracy_test": f"McNemar {cfg.mcnemar} (two-sided)",
            "loss_test": "paired percentile bootstrap of per-example Δloss (two-sided)",
            "resamples": resamples, "smallest_bootstrap_p": 2.0 / (resamples + 1), "warning": note}


def choose_n(rows: list[dict], report_set: str) -> list[dict]:
    """Per (checkpoint, scorer), the N the scoring half picks for the zero arm (highest scoring-half accuracy;
    ties: lower scoring-half loss, then smaller N) and its figures on `report_set` (rows nothing chose on)."""
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["arm"] == "zero":
            groups.setdefault((r["checkpoint"], r["scorer"]), []).append(r)
    for (ck, scorer), rs in groups.items():
        best = min(rs, key=lambda r: (-r["scoring_accuracy"], r["scoring_loss"], r["n_removed"]))
        s = report_set
        out.append({"checkpoint": ck, "scorer": scorer, "chosen_n": best["n_removed"],
                    "scoring_delta_accuracy": best["scoring_delta_accuracy"], "reported_on": s,
                    "delta_accuracy": best[f"{s}_delta_accuracy"], "ci_low": best[f"{s}_delta_accuracy_ci_low"],
                    "ci_high": best[f"{s}_delta_accuracy_ci_high"], "p_holm": best.get(f"{s}_p_accuracy_holm"),
                    "verdict": best.get(f"{s}_verdict_accuracy")})
    return out


def verdict_lines(rows: list[dict], report_set: str, family: dict) -> list[str]:
    """Plain sentences: which arms change accuracy on `report_set` significantly (Holm), by how much."""
    lines = []
    for arm in ("zero", "matched", "random"):
        mine = [r for r in rows if r["arm"] == arm and f"{report_set}_verdict_accuracy" in r]
        if not mine:
            continue
        up = [r for r in mine if r[f"{report_set}_verdict_accuracy"] == "improves"]
        down = [r for r in mine if r[f"{report_set}_verdict_accuracy"] == "harms"]
        what = {"zero": "zeroing the N lowest-scored", "matched": "the matched gradient step",
                "random": "zeroing N random parameters"}[arm]
        if not up:
            lines.append(f"{what}: no cell improves {report_set} accuracy significantly "
                         f"({len(down)} of {len(mine)} harm it; Holm, α = {family['alpha']:g}, "
                         f"{family['family_size']} tests)")
            continue
        best = max(up, key=lambda r: r[f"{report_set}_delta_accuracy"])
        lines.append(f"{what}: {len(up)} of {len(mine)} cells improve {report_set} accuracy significantly; the "
                     f"largest: {best['checkpoint']} {best['scorer']} N={best['n_removed']}: "
                     f"{100 * best[f'{report_set}_delta_accuracy']:+.2f} points (95% CI "
                     f"{100 * best[f'{report_set}_delta_accuracy_ci_low']:+.2f} to "
                     f"{100 * best[f'{report_set}_delta_accuracy_ci_high']:+.2f}, Holm p = "
                     f"{best[f'{report_set}_p_accuracy_holm']:.3g}); {len(down)} harm it")
    return lines


def summary_text(record: dict, rows: list[dict], s: str) -> str:
    """summary.txt of a finished sweep (`record` as in results.json, `rows` its cells), reported on set `s`:
    the Holm family, the verdict, the baselines, every cell's change on `s`, the N chosen on the scoring half,
    the gradient–influence disagreement and the count of cells computed now and earlier."""
    fam = record["comparisons"]
    where = record["sets"][s]
    which = where["rows"] if len(where["rows"]) <= 40 else "listed in results.json"
    lines = [(f"Reported on: {s} ({where['n']} rows of the {where['split']} split, rows {which}); "
              f"paired tests, Holm over {fam['family_size']} tests, α = {fam['alpha']:g}."), ""]
    if fam.get("warning"):
        lines += [f"WARNING: {fam['warning']}", ""]
    if record["scorers_not_run"]:
        lines += [f"Not run (not registered): {', '.join(record['scorers_not_run'])}", ""]
    lines += ["Verdict:", *[f"- {v}" for v in record["verdict"]], "",
              "Baselines (unmasked):", table_text(record["baselines"], list(record["baselines"][0])[:1] +
                                                  [k for k in record["baselines"][0] if k.endswith(("accuracy", "loss"))]),
              "", f"Cells (Δ = masked − unmasked on {s}, accuracy as a fraction; p-values Holm-adjusted):",
              table_text(rows, ["checkpoint", "scorer", "arm", "n_removed", f"{s}_delta_accuracy",
                                f"{s}_delta_accuracy_ci_low", f"{s}_delta_accuracy_ci_high", f"{s}_p_accuracy_holm",
                                f"{s}_delta_loss", f"{s}_p_loss_holm", "scoring_delta_accuracy"])]
    if record["chosen_n"]:
        lines += ["", "N chosen on the scoring half (zero arm), judged on rows nothing was chosen on:",
                  table_text(record["chosen_n"], list(record["chosen_n"][0]))]
    if record["gradient_influence_disagreement"]:
        lines += ["", ("Gradient–influence disagreement (the study's 'false-positive rate': gradient-detrimental "
                       "parameters that influence does not call beneficial):"),
                  table_text(record["gradient_influence_disagreement"],
                             list(record["gradient_influence_disagreement"][0]))]
    lines += ["", (f"Cells computed now: {record['cells']['computed']}; finished earlier: "
                   f"{record['cells']['finished_earlier']}")]
    return "\n".join(lines) + "\n"


def plot_removal_curves(path: Path, baselines: list[dict], rows: list[dict], s: str) -> None:
    """One panel per checkpoint: accuracy on set `s` against N (log scale) per scorer; the band is the unmasked
    accuracy plus the paired 95% CI of the change; filled markers: Holm-significant."""
    plt = pyplot()
    n = len(baselines)
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, base in zip(axes[0], baselines):
        acc0 = base[f"{s}_accuracy"]
        mine = [r for r in rows if r["checkpoint"] == base["checkpoint"]]
        scorers = list(dict.fromkeys(r["scorer"] for r in mine if r["scorer"] != "random"))
        for i, scorer in enumerate([*scorers, "random"]):
            color = "grey" if scorer == "random" else colors[i % len(colors)]
            for arm, ls, band in (("zero", "-", True), ("random", "--", True), ("matched", ":", False)):
                pts = sorted((r for r in mine if r["scorer"] == scorer and r["arm"] == arm), key=lambda r: r["n_removed"])
                if not pts:
                    continue
                x = [r["n_removed"] for r in pts]
                ax.plot(x, [r[f"{s}_accuracy"] for r in pts], ls=ls, color=color, lw=1.2 if band else 0.9,
                        label=scorer if arm != "matched" else f"{scorer} (matched step)")
                sig = [r for r in pts if r.get(f"{s}_verdict_accuracy") not in (None, "no significant change")]
                ax.plot([r["n_removed"] for r in sig], [r[f"{s}_accuracy"] for r in sig], "o", color=color, ms=5)
                if band and f"{s}_delta_accuracy_ci_low" in pts[0]:
                    ax.fill_between(x, [max(0.0, acc0 + r[f"{s}_delta_accuracy_ci_low"]) for r in pts],
                                    [min(1.0, acc0 + r[f"{s}_delta_accuracy_ci_high"]) for r in pts], color=color,
                                    alpha=0.1)
        ax.axhline(acc0, color="black", lw=0.8, ls="-.", label="unmasked")
        ax.set_xscale("log")
        ax.set_xlabel("parameters changed (N lowest-scored)")
        ax.set_ylabel(f"accuracy ({s})")
        ax.set_title(f"{base['checkpoint']}: bands = paired 95% CI; dots: Holm-significant", fontsize=9)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
