"""Fine-tuned deltas shipped inside the package, merged into their base model at load time.

A delta is one safetensors file: LoRA factors (`<linear>.lora_A` r × in, `<linear>.lora_B` out × r) for
the base's linear layers, and whole tensors (the pooler and the classifier) that replace the base's, all
stored in fp16, with a JSON header (`mft_delta`) naming the base, the LoRA scale alpha / r, the task's
labels, and how the delta was made (command, commit, accuracy). Merging adds scale · B·A (computed in
fp32) to each weight and copies the whole tensors in, so the merged model is a plain
BertForSequenceClassification: every command that loads models sees nothing else.

`minilm-sst2` (BUNDLED_DELTAS) is all-MiniLM-L6-v2 with the SST-2 delta in `bundled/`; `bundled/README.md`
records how it was trained and `scripts/make_minilm_sst2.py` regenerates it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError

FORMAT = "mft-lora-delta/1"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

#: --model names that load a base and merge a delta shipped in `bundled/`: name → (base --model, file).
BUNDLED_DELTAS = {"minilm-sst2": ("minilm", "minilm_sst2.safetensors")}

#: The largest a bundled delta may be (the package-data budget; checked by the tests).
MAX_BUNDLED_BYTES = 1_572_864  # 1.5 MiB


def bundled_path(name: str) -> Path:
    """The delta file of a BUNDLED_DELTAS name."""
    return BUNDLED_DIR / BUNDLED_DELTAS[name][1]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_delta(peft_model: torch.nn.Module, whole: tuple[str, ...] = ("bert.pooler.", "classifier.")
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The delta of a PEFT LoRA model (`train.lora.LoRA` wrapping a BertForSequenceClassification): the
    LoRA factors of every adapted linear and the tensors whose names start with `whole` (from the model
    as merged), in fp16, keyed by the plain model's parameter names; and {"scaling", "rank"}.
    Cost: one deep copy of the model (the merge)."""
    import copy

    tensors: dict[str, torch.Tensor] = {}
    scalings, ranks = set(), set()
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        plain = name.split("base_model.model.", 1)[-1]
        a = module.lora_A["default"].weight.detach()
        b = module.lora_B["default"].weight.detach()
        tensors[f"{plain}.lora_A"] = a.to(torch.float16).contiguous()
        tensors[f"{plain}.lora_B"] = b.to(torch.float16).contiguous()
        scalings.add(float(module.scaling["default"]))
        ranks.add(int(a.shape[0]))
    if not tensors:
        raise ModelError("the model holds no LoRA adapter to extract")
    if len(scalings) != 1 or len(ranks) != 1:
        raise ModelError(f"the adapters differ in scale or rank ({sorted(scalings)}, {sorted(ranks)})")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    for n, p in merged.state_dict().items():
        if n.startswith(whole):
            tensors[n] = p.detach().to(torch.float16).contiguous()
    return tensors, {"scaling": scalings.pop(), "rank": ranks.pop()}


def save_delta(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` (fp16) and `meta` (JSON, FORMAT added) as one safetensors file."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"mft_delta": json.dumps({"format": FORMAT, **meta}, sort_keys=True)})


def read_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, header) of a delta file; ModelError naming the file when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("mft_delta", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{path} is not a readable delta file ({type(e).__name__}: {first})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not an mft delta ({FORMAT}) file")
    return tensors, meta


def merge_delta(model: torch.nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                where: str = "the delta") -> torch.nn.Module:
    """Add scale · B·A (fp32) to each adapted weight of `model` and copy the whole tensors in, in place.

    Raises ModelError, naming `where`, when a tensor names a parameter the model lacks or has another
    shape. Cost: one r-rank matmul per adapted layer."""
    params = dict(model.named_parameters())
    scaling = float(meta["scaling"])
    with torch.no_grad():
        for key, t in tensors.items():
            if key.endswith(".lora_B"):
                continue
            if key.endswith(".lora_A"):
                base = key[: -len(".lora_A")]
                w = params.get(f"{base}.weight")
                b = tensors.get(f"{base}.lora_B")
                if w is None or b is None or tuple(w.shape) != (b.shape[0], t.shape[1]):
                    raise ModelError(f"{where}: {base} does not fit the model")
                w.add_((b.to(torch.float32) @ t.to(torch.float32)).mul_(scaling).to(w.dtype))
                continue
            p = params.get(key)
            if p is None or tuple(p.shape) != tuple(t.shape):
                raise ModelError(f"{where}: {key} does not fit the model")
            p.copy_(t.to(p.dtype))
    return model


def load_bundled(name: str, num_labels: int, load_base) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The base model of BUNDLED_DELTAS[name] with its delta merged: (model, the delta's header, its file).

    `load_base(base_name, num_labels)` loads the base (models.loading passes itself). Refused (ModelError)
    when the task does not have the delta's number of labels, or when the base's weights are not the
    ones the delta was trained on (their sha256 differs)."""
    base, _ = BUNDLED_DELTAS[name]
    path = bundled_path(name)
    if not path.is_file():
        raise ModelError(f"--model {name}: its delta {path} is missing from the installed package; reinstall "
                         "mft_engine, or run scripts/make_minilm_sst2.py")
    tensors, meta = read_delta(path)
    if int(meta["num_labels"]) != num_labels:
        raise ModelError(f"--model {name} is a {meta['num_labels']}-class {meta['task']} classifier; the task has "
                         f"{num_labels} labels (use --model {base} for a new head)")
    model, weights_file = load_base(base, num_labels)
    want = meta.get("base_sha256")
    if want and weights_file is not None and file_sha256(weights_file) != want:
        raise ModelError(f"--model {name}: the installed {base} weights ({weights_file}) are not the ones its delta "
                         "was trained on (sha256 differs)")
    merge_delta(model, tensors, meta, where=f"--model {name} ({path.name})")
    labels = meta.get("id2label")
    if isinstance(labels, dict) and len(labels) == num_labels:
        model.config.id2label = {int(k): v for k, v in labels.items()}
        model.config.label2id = {v: int(k) for k, v in labels.items()}
    return model, meta, path
