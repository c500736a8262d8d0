"""`mft export`: a run's masked model as a Hugging Face checkpoint folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, MaskMismatchError, OutputError
from .experiments.outputs import mask_filename
from .report.folder import PARTIAL_SUFFIX, check_output_parent, filesystem_error, rename_noreplace


def export_masked(results_dir: str | Path, out_dir: str | Path, fraction: float | None = None) -> Path:
    """Rebuild the run's model (same source, same seeded head), apply its mask, save_pretrained to out_dir.

    The folder is written under `.<out>.partial` (created exclusively; removed only by the call that
    created it) and renamed to `out` at the end, never over a non-empty folder. Cost: one model load + save.
    """
    from .data import get_task
    from .models import load_model
    from .models.loading import quiet_transformers
    from .masking import Mask

    rd = Path(results_dir)
    record = read_run_record(rd)
    fracs = [f["fraction"] for f in record["fractions"]]
    if fraction is None:
        if len(fracs) > 1:
            raise ConfigError(f"{rd} has masks for fractions {fracs}; pick one with --fraction")
        fraction = fracs[0]
    if fraction not in fracs:
        raise ConfigError(f"--fraction {fraction} is not among the run's fractions {fracs}")
    mask_path = rd / mask_filename(fraction, len(fracs) > 1)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder")
    cfg = record["config"]
    spec = get_task(cfg["task"]) if not Path(cfg["task"]).exists() else None
    num_labels = spec.num_labels if spec is not None else None
    if num_labels is None:
        num_labels = len(record["before"].get("recall_per_class", [0])) or 1
    lm = load_model(cfg["model"], num_labels, seed=cfg["seed"],
                    problem_type="regression" if num_labels == 1 else None, max_length=cfg.get("max_length"))
    mask = Mask.load(mask_path)
    saved = mask.values
    mask.values = None
    mask.apply(lm.model)
    # The saved values are the run's own θ at the zeroed positions: equal values prove the rebuilt model
    # (source + seeded head) is the one the mask was selected on.
    if saved is not None and not torch.equal(saved, mask.values):
        raise MaskMismatchError(f"the model rebuilt from {rd} differs from the run's model at the masked positions")
    set_label_names(lm.model.config, spec)
    check_output_parent(out.parent, flag="the output folder's parent")
    tmp = out.parent / f".{out.name}{PARTIAL_SUFFIX}"
    try:
        tmp.mkdir()  # exclusive: a partial folder this call did not create is never touched
    except FileExistsError:
        raise OutputError(f"{tmp} exists (another export to {out} is running, or one was killed); "
                          "remove it or choose another output folder") from None
    except OSError as e:
        raise (filesystem_error(e, tmp) or e) from None
    emptied = False
    try:
        with quiet_transformers():  # its shard-writing bar would stand beside our one line on stderr
            lm.model.save_pretrained(str(tmp))
            lm.tokenizer.save_pretrained(str(tmp))
        (tmp / "mft_mask_info.json").write_text(json.dumps({"results_dir": str(rd.resolve()), "fraction": fraction,
                                                           "zeroed": len(mask)}, indent=2))
        emptied = out.is_dir()
        if emptied:
            out.rmdir()  # empty (checked above): the folder the user named for the export
        rename_noreplace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if emptied and not out.exists():
            out.mkdir()  # put back the empty folder the user made
        err = filesystem_error(e, tmp)
        if err is not None:
            raise err from None
        raise
    return out


def set_label_names(config, spec) -> None:
    """Give `config` the task's class names as id2label / label2id (so a transformers pipeline says
    "positive", not LABEL_1). Only for a known classification task with named labels (`spec.label_names`,
    one per class); otherwise the model's own names stay."""
    names = getattr(spec, "label_names", None) if spec is not None else None
    if not names or spec.num_labels < 2 or len(names) != config.num_labels:
        return
    config.id2label = {i: str(n) for i, n in enumerate(names)}
    config.label2id = {str(n): i for i, n in enumerate(names)}


def read_run_record(rd: Path) -> dict[str, Any]:
    """results.json of an `mft run` folder, checked for what export reads; ConfigError names what is wrong."""
    rj = rd / "results.json"
    if not rj.is_file():
        raise ConfigError(f"{rd} is not an mft run results folder (no results.json)")
    try:
        record = json.loads(rj.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{rj} is not valid JSON ({type(e).__name__})") from None
    cfg = record.get("config") if isinstance(record, dict) else None
    fr = record.get("fractions") if isinstance(record, dict) else None
    if not isinstance(cfg, dict) or not isinstance(fr, list) or not fr:
        raise ConfigError(f"{rj} is not an mft run record (needs a config object and a non-empty fractions list)")
    for f in fr:
        if not isinstance(f, dict) or isinstance(f.get("fraction"), bool) or not isinstance(f.get("fraction"), (int, float)):
            raise ConfigError(f"{rj}: every entry of fractions needs a numeric fraction")
    for key, kind in (("model", str), ("task", str), ("seed", int)):
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            raise ConfigError(f"{rj}: config.{key} is missing or not a {kind.__name__}")
    if not isinstance(record.get("before", {}), dict):
        raise ConfigError(f"{rj}: before is not an object")
    return record
