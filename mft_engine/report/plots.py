"""The study's plots: per-batch loss, and zeroed parameters per layer (matplotlib, Agg backend)."""
from __future__ import annotations

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


def plot_layer_zeroed(layers: list[dict], path: Path) -> None:
    """Bar chart of the share of each layer's parameters that were zeroed (largest fraction's mask)."""
    plt = pyplot()
    names = [r["layer"] for r in layers]
    shares = [r["zeroed"] / r["numel"] if r["numel"] else 0.0 for r in layers]
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(names)), 4.5))
    ax.bar(range(len(names)), [100 * s for s in shares])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("% of the layer's parameters zeroed")
    ax.set_title("Zeroed parameters per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
