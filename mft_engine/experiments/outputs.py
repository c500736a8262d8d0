"""The files of an `mft run` results folder, written from the run's record."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..collect import GradientState
from ..config import RunConfig
from ..report import ResultsFolder, plot_layer_zeroed, plot_training_loss


def layer_group(name: str) -> str:
    """The layer a parameter belongs to: embeddings, layer.<i>, pooler, classifier (else its module)."""
    m = re.search(r"(?:^|\.)layer\.(\d+)\.", name)
    if m:
        return f"layer.{m.group(1)}"
    for g in ("embeddings", "pooler", "classifier"):
        if g in name:
            return g
    return name.rsplit(".", 1)[0]


def mask_filename(fraction: float, several: bool) -> str:
    return f"mask_{fraction:g}.safetensors" if several else "mask.safetensors"


def _metric_line(label: str, m: dict) -> str:
    if "accuracy" in m:
        return (f"{label:<22} acc {m['accuracy']:.4f}  P {m['precision']:.4f}  R {m['recall']:.4f}  "
                f"F1 {m['f1']:.4f}  MCC {m['mcc']:.4f}  recall/class {[round(r, 4) for r in m['recall_per_class']]}")
    return f"{label:<22} pearson {m['pearson']:.4f}  spearman {m['spearman']:.4f}  mse {m['mse']:.4f}"


def summary_text(record: dict[str, Any]) -> str:
    """summary.txt: every figure a reader looks for, each also in results.json."""
    c, cnt, col = record["config"], record["counts"], record["collection"]
    lines = [
        "BERT-MFT study (mft run)",
        f"model {record['model']['source']}  task {c['task']}  data {record['data']['train_source']}",
        f"labels {record['data']['labels']}",
        f"machine {record['machine']['cpu']}  kernel path {record['machine']['kernel_path']}  "
        f"threads {record['machine']['torch_threads']}",
        f"samples used {record['data']['samples_used']} of {c['samples']} ({c['sample_order']}), reduction {col['reduction']}, "
        f"batch {c['batch_size']}, {'train' if col['train_mode'] else 'eval'} mode, {col['precision']}",
        f"lr {c['lr']} (fp32 {col['lr_fp32']!r}), step ‖lr·g‖₂ {col['step_l2_norm']:.4g}, rank by {c['rank_by']}, literal {c['literal']}, exclude {c['exclude']}",
        "",
        f"parameters total          {cnt['total']:,}",
        f"detrimental (all)         {cnt['detrimental_total']:,} ({100 * cnt['detrimental_total'] / cnt['total']:.2f}%)",
        f"eligible                  {cnt['eligible']:,}",
        f"detrimental eligible      {cnt['detrimental_eligible']:,}",
        "",
        _metric_line("before", record["before"]),
    ]
    for f in record["fractions"]:
        lines += [
            "",
            f"fraction {f['fraction']:g}: zeroed {f['k']:,} ({100 * f['k'] / cnt['total']:.3f}% of the model), "
            f"threshold score {f['threshold_score']:.6g}, tied at threshold {f['n_tied_at_threshold']}, "
            f"zeroing {f['zero_s'] * 1e3:.1f} ms (warm {f['zero_warm_s'] * 1e3:.1f} ms, read bound "
            f"{f['read_bound_s'] * 1e3:.1f} ms, {f['zero_path']})",
            _metric_line("  after", f["after"]),
        ]
        if "control" in f:
            lines.append(_metric_line("  random control", f["control"]))
    if record["model"].get("tokenizer_note"):
        lines += ["", f"note: {record['model']['tokenizer_note']}"]
    lines += ["", "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in record["timings"].items())]
    return "\n".join(lines) + "\n"


def write_outputs(folder: ResultsFolder, cfg: RunConfig, record: dict[str, Any], state: GradientState,
                  selections: list, eligible: list, named_all: list) -> Path:
    """Write results.json, summary.txt, layers.csv, gradient_statistics.json, masks, the state, the plots."""
    several = len(selections) > 1
    eligible_names = {n for n, _ in eligible}
    zeroed = [s.mask.per_tensor_counts() for s in selections]
    control = [f["control_mask"].per_tensor_counts() if "control_mask" in f else {} for f in record["fractions"]]
    layers = []
    for n, p in named_all:
        row = {"parameter": n, "layer": layer_group(n), "numel": p.numel(), "eligible": n in eligible_names,
               "detrimental": selections[0].detrimental_per_tensor.get(n, "")}
        for s, z, cz in zip(selections, zeroed, control):
            row[f"zeroed_{s.fraction:g}"] = z.get(n, 0)
            if cfg.control:
                row[f"control_zeroed_{s.fraction:g}"] = cz.get(n, 0)
        layers.append(row)
    folder.write_csv("layers.csv", layers)

    per_layer: dict[str, dict[str, int]] = {}
    big = f"zeroed_{selections[-1].fraction:g}"
    for r in layers:
        g = per_layer.setdefault(r["layer"], {"layer": r["layer"], "numel": 0, "zeroed": 0, "detrimental": 0})
        g["numel"] += r["numel"]
        g["zeroed"] += r[big]
        g["detrimental"] += r["detrimental"] or 0
    record["per_layer"] = list(per_layer.values())

    for s, f in zip(selections, record["fractions"]):
        with folder.writing(mask_filename(s.fraction, several)) as p:
            s.mask.save(p)
        f["mask_file"] = mask_filename(s.fraction, several)
        f.pop("control_mask", None)
    with folder.writing("gradient_state.safetensors") as p:
        state.save(p)
    folder.write_json("gradient_statistics.json", state.statistics())
    with folder.writing("training_loss.png") as p:
        plot_training_loss(state.batch_losses, p)
    with folder.writing("layer_zeroed.png") as p:
        plot_layer_zeroed(record["per_layer"], p)
    folder.write_text("summary.txt", summary_text(record))
    folder.write_json("results.json", record)
    out = folder.commit()
    record["out_dir"] = str(out)
    return out
