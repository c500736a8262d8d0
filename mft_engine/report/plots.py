"""The study's plots (matplotlib, Agg backend): accuracy before / after / random control with bootstrap CIs,
zeroed parameters per layer at one fraction, the per-batch loss of the gradient collection, and a
fine-tuning run's training loss. Each says in its title what it shows."""
from __future__ import annotations

import math
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); imported on first use, as matplotlib is slow
    to import and most runs draw nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_loss(losses: list[float], path: Path, title: str = "Per-batch loss during collection") -> None:
    """Line plot of the loss of each collection batch (no weight update: the spread shows batch noise)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, marker="o", ms=3)
    ax.set_xlabel("batch")
    ax.set_ylabel("mean loss of the batch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layer_zeroed(layers: list[dict], path: Path, fraction: float | None = None, k: int | None = None) -> None:
    """Bar chart of the share of each layer's parameters zeroed by the mask of `fraction` (k entries).

    A layer whose parameters are all excluded from selection (`eligible` == 0 in its row) is not drawn as
    an empty bar: its tick label says "(excluded)" and a grey ✕ marks it, so "nothing zeroed here" and
    "never eligible" look different."""
    plt = pyplot()
    names = [r["layer"] for r in layers]
    excluded = [r.get("eligible", r["numel"]) == 0 for r in layers]
    shares = [0.0 if ex or not r["numel"] else 100 * r["zeroed"] / r["numel"] for r, ex in zip(layers, excluded)]
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(names)), 4.5))
    xs = range(len(names))
    ax.bar([x for x, ex in zip(xs, excluded) if not ex], [s_ for s_, ex in zip(shares, excluded) if not ex],
           color="tab:blue", label="zeroed")
    ex_x = [x for x, ex in zip(xs, excluded) if ex]
    if ex_x:
        ax.plot(ex_x, [0] * len(ex_x), linestyle="none", marker="x", color="grey", ms=8, mew=2,
                label="excluded from selection", clip_on=False)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{n} (excluded)" if ex else n for n, ex in zip(names, excluded)], rotation=70, ha="right",
                       fontsize=7)
    for lbl, ex in zip(ax.get_xticklabels(), excluded):
        if ex:
            lbl.set_color("grey")
    ax.set_ylabel("% of the layer's parameters zeroed")
    what = f"fraction {fraction:g}" if fraction is not None else "the mask"
    count = f", {k:,} zeroed in all" if k is not None else ""
    ax.set_title(f"Zeroed parameters per layer\n(mask of {what} of the detrimental eligible parameters{count})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_collection_loss(losses: list[float], path: Path, num_labels: int | None = None) -> None:
    """The loss of each gradient-collection batch. Nothing is trained during collection, so the points
    are batch-to-batch noise around the model's loss, not a curve: the y-axis starts at 0, a line marks
    their mean, and for a classifier one marks ln K, the loss of a uniform (untrained) prediction."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4))
    xs = range(1, len(losses) + 1)
    ax.plot(xs, losses, linestyle="none", marker="o", ms=3, label="batch loss")
    top = max(losses) if losses else 1.0
    if losses:
        mean = sum(losses) / len(losses)
        ax.axhline(mean, color="tab:blue", lw=1, alpha=0.7, label=f"mean {mean:.3f}")
    if num_labels and num_labels > 1:
        chance = math.log(num_labels)
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"ln {num_labels} = {chance:.3f} (uniform prediction)")
        top = max(top, chance)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xlabel("collection batch (no weight update)")
    ax.set_ylabel("mean loss of the batch")
    ax.set_title("Loss of each gradient-collection batch (nothing trains: the spread is batch noise)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(before: dict, fractions: list[dict], path: Path, majority_rate: float | None = None,
                  metric: str = "accuracy") -> None:
    """Accuracy before zeroing, after zeroing and of the random control (same count zeroed) per fraction,
    each with its bootstrap 95% interval (`accuracy_ci95` of the metrics, when present), and the
    majority-class rate as a dashed line. `fractions` are results.json's entries ("fraction", "k",
    "after", optional "control")."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7.5, 1.8 * len(fractions) + 4), 4.5))
    width = 0.26
    series = [("before", "tab:grey", lambda f: before), ("after zeroing", "tab:red", lambda f: f["after"]),
              ("random control", "tab:blue", lambda f: f.get("control"))]
    lows = []
    for i, (label, color, get) in enumerate(series):
        xs, ys, err, tops = [], [], [[], []], []
        for j, f in enumerate(fractions):
            m = get(f)
            if not m or metric not in m:
                continue
            v = m[metric]
            lo, hi = m.get(f"{metric}_ci95", (v, v))
            xs.append(j + (i - 1) * width)
            ys.append(v)
            err[0].append(max(v - lo, 0))
            err[1].append(max(hi - v, 0))
            tops.append(max(hi, v))
            lows.append(lo)
        if xs:
            ax.bar(xs, ys, width, color=color, label=label, yerr=err, capsize=3)
            for x, y, top in zip(xs, ys, tops):
                ax.text(x, top + 0.008, f"{y:.3f}", ha="center", va="bottom", fontsize=7)
    if majority_rate is not None:
        ax.axhline(majority_rate, color="black", ls="--", lw=1, label=f"majority class {majority_rate:.3f}")
        lows.append(majority_rate)
    ax.set_xticks(range(len(fractions)))
    ax.set_xticklabels([f"fraction {f['fraction']:g}\n({f['k']:,} zeroed)" for f in fractions], fontsize=8)
    floor = min(lows) if lows else 0.0
    ax.set_ylim(max(0.0, floor - 0.1), 1.0)
    ax.set_ylabel(f"{metric} on the whole validation split")
    n = before.get("n")
    ax.set_title(f"{metric.capitalize()} before / after zeroing / random control"
                 + (f"\n(whole validation split, n = {n}; bars: bootstrap 95% CIs)" if n else " (bootstrap 95% CIs)"),
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
