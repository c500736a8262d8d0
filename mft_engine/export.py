"""`mft export`: a run's masked model as a Hugging Face checkpoint folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .errors import ConfigError, MaskMismatchError
from .experiments.outputs import mask_filename


def export_masked(results_dir: str | Path, out_dir: str | Path, fraction: float | None = None) -> Path:
    """Rebuild the run's model (same source, same seeded head), apply its mask, save_pretrained to out_dir.

    The folder is written under a temporary name and renamed at the end. Cost: one model load + save.
    """
    from .data import get_task
    from .models import load_model
    from .masking import Mask

    rd = Path(results_dir)
    rj = rd / "results.json"
    if not rj.is_file():
        raise ConfigError(f"{rd} is not an mft run results folder (no results.json)")
    record = json.loads(rj.read_text())
    fracs = [f["fraction"] for f in record["fractions"]]
    if fraction is None:
        if len(fracs) > 1:
            raise ConfigError(f"{rd} has masks for fractions {fracs}; pick one with --fraction")
        fraction = fracs[0]
    if fraction not in fracs:
        raise ConfigError(f"--fraction {fraction} is not among the run's fractions {fracs}")
    mask_path = rd / mask_filename(fraction, len(fracs) > 1)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    cfg = record["config"]
    num_labels = get_task(cfg["task"]).num_labels if not Path(cfg["task"]).exists() else None
    if num_labels is None:
        num_labels = len(record["before"].get("recall_per_class", [0])) or 1
    lm = load_model(cfg["model"], num_labels, seed=cfg["seed"],
                    problem_type="regression" if num_labels == 1 else None)
    mask = Mask.load(mask_path)
    saved = mask.values
    mask.values = None
    mask.apply(lm.model)
    # The saved values are the run's own θ at the zeroed positions: equal values prove the rebuilt model
    # (source + seeded head) is the one the mask was selected on.
    if saved is not None and not torch.equal(saved, mask.values):
        raise MaskMismatchError(f"the model rebuilt from {rd} differs from the run's model at the masked positions")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        lm.model.save_pretrained(str(tmp))
        lm.tokenizer.save_pretrained(str(tmp))
        (tmp / "mft_mask_info.json").write_text(json.dumps({"results_dir": str(rd.resolve()), "fraction": fraction,
                                                           "zeroed": len(mask)}, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out

