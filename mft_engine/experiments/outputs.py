"""The files of an `mft run` results folder, written from the run's record."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ..collect import GradientState
from ..config import RunConfig
from ..report import ResultsFolder, plot_accuracy, plot_collection_loss, plot_layer_zeroed

STATE_FILE = "gradient_state.safetensors"
#: The plots of an `mft run` folder.
ACCURACY_PLOT, LAYER_PLOT, LOSS_PLOT = "accuracy.png", "layer_zeroed.png", "collection_loss.png"
#: The timing fields that are parts of total_s (each phase once; zero_s-style per-fraction figures are in
#: the fractions' entries).
TIMING_PARTS = ("load_data_s", "load_model_s", "tokenize_s", "prepare_s", "evaluate_before_s", "collect_s", "select_s",
                "read_bandwidth_s", "zero_s", "evaluate_after_s", "evaluate_control_s", "report_s", "write_s")


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
        ci = m.get("accuracy_ci95")
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        return (f"{label:<22} acc {m['accuracy']:.4f}{ci_text}  P {m['precision']:.4f}  R {m['recall']:.4f}  "
                f"F1 {m['f1']:.4f}  MCC {m['mcc']:.4f}  recall/class {[round(r, 4) for r in m['recall_per_class']]}")
    return f"{label:<22} pearson {m['pearson']:.4f}  spearman {m['spearman']:.4f}  mse {m['mse']:.4f}"


def summary_text(record: dict[str, Any]) -> str:
    """summary.txt: every figure a reader looks for, each also in results.json."""
    c, cnt, col = record["config"], record["counts"], record["collection"]
    model = record["model"]
    kind = model.get("kind")
    what = {"bundled": "a fine-tuned classifier (MiniLM with the embedded SST-2 fine-tuning merged)",
            "minilm": "pretrained MiniLM with a NEW, UNTRAINED classification head (the original study's setting)",
            "random": "random weights (a shape for testing, not a classifier)"}.get(kind)
    lines = [
        "BERT-MFT study (mft run)",
        f"model {model['source']}  task {c['task']}  data {record['data']['train_source']}",
        *([f"classifier: {what}"] if what else []),
        f"labels {record['data']['labels']}",
        f"machine {record['machine']['cpu']}  kernel path {record['machine']['kernel_path']}  "
        f"threads {record['machine']['torch_threads']}  device {record.get('device', {}).get('device', 'cpu')}",
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
    chance = record.get("chance")
    if chance:
        lines.append(f"{'':<22} majority class rate {chance['majority_rate']:.4f} (always predicting label "
                     f"{chance['majority_label']}); [..] are bootstrap 95% intervals over the validation rows")
        if chance["at_chance"]:
            lines += ["", "WARNING: " + chance["note"]]
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
    state = record.get("state_file")
    lines += ["", f"gradient state: {state} in this folder (reuse it with --state <this folder>/{state})" if state
              else "gradient state: not saved (--save-state keeps it, for --state)"]
    t = record["timings"]
    parts = [k for k in TIMING_PARTS if k in t]
    lines += ["", f"timings (s): total {t['total_s']:.2f} = " + " + ".join(f"{k[:-2]} {t[k]:.2f}" for k in parts)
              if "total_s" in t else "timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items())]
    return "\n".join(lines) + "\n"


def save_state_wanted(cfg: RunConfig) -> bool:
    """--save-state / --no-save-state when given; else only with --checkpoint-every (a resumable run)."""
    return bool(cfg.checkpoint_every) if getattr(cfg, "save_state", None) is None else bool(cfg.save_state)


def write_outputs(folder: ResultsFolder, cfg: RunConfig, record: dict[str, Any], state: GradientState,
                  selections: list, eligible: list, named_all: list, started: float | None = None) -> Path:
    """Write results.json, summary.txt, layers.csv, gradient_statistics.json, masks, the state (when
    `save_state_wanted`), the plots. With `started` (the run's perf_counter start), `timings` gets
    write_s and total_s just before results.json is written."""
    t_write = time.perf_counter()
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
        g = per_layer.setdefault(r["layer"], {"layer": r["layer"], "numel": 0, "eligible": 0, "zeroed": 0,
                                              "detrimental": 0})
        g["numel"] += r["numel"]
        g["eligible"] += r["numel"] if r["eligible"] else 0
        g["zeroed"] += r[big]
        g["detrimental"] += r["detrimental"] or 0
    record["per_layer"] = list(per_layer.values())

    for s, f in zip(selections, record["fractions"]):
        with folder.writing(mask_filename(s.fraction, several)) as p:
            s.mask.save(p)
        f["mask_file"] = mask_filename(s.fraction, several)
        f.pop("control_mask", None)
    record["state_file"] = None
    if save_state_wanted(cfg):
        with folder.writing(STATE_FILE) as p:
            state.save(p)
        record["state_file"] = STATE_FILE
    folder.write_json("gradient_statistics.json", state.statistics())
    num_labels = len(record["before"].get("recall_per_class", [])) or None
    with folder.writing(LOSS_PLOT) as p:
        plot_collection_loss(state.batch_losses, p, num_labels)
    with folder.writing(LAYER_PLOT) as p:
        plot_layer_zeroed(record["per_layer"], p, selections[-1].fraction, selections[-1].k)
    record["plots"] = [LAYER_PLOT, LOSS_PLOT]
    if "accuracy" in record["before"]:  # classification; a regression task has no accuracy to draw
        with folder.writing(ACCURACY_PLOT) as p:
            plot_accuracy(record["before"], record["fractions"], p, (record.get("chance") or {}).get("majority_rate"))
        record["plots"].insert(0, ACCURACY_PLOT)
    if started is not None:
        now = time.perf_counter()
        record["timings"]["write_s"] = now - t_write
        record["timings"]["total_s"] = now - started
    folder.write_text("summary.txt", summary_text(record))
    folder.write_json("results.json", record)
    out = folder.commit()
    record["out_dir"] = str(out)
    return out
