"""One figure of several `mft influence` folders side by side (one panel per checkpoint):

    python benchmarks/plot_removal_sweeps.py OUT.png INFLUENCE_FOLDER [INFLUENCE_FOLDER ...] [--set heldout]

Each panel is that folder's removal_curves.png panel (accuracy on the set against N per scorer, paired 95 %
bands, dots Holm-significant within its own run's family)."""
import argparse
import json
from pathlib import Path

from mft_engine.experiments.influence_report import plot_removal_curves

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("folders", nargs="+")
parser.add_argument("--set", default="heldout", help="heldout | evaluation")
args = parser.parse_args()
baselines, rows = [], []
for folder in args.folders:
    rec = json.loads((Path(folder) / "results.json").read_text())
    baselines += rec["baselines"]
    rows += rec["sweeps"]
plot_removal_curves(Path(args.out), baselines, rows, args.set)
print(args.out)
