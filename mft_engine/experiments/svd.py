"""The linear algebra of LoRA updates: ΔW = (α/r)·B·A of an adapted layer, its singular values, stable
rank and effective rank, and one row per LoRA module of a model (the transfer study's SVD table).

Definitions (σ₁ ≥ σ₂ ≥ … ≥ 0 the singular values of a matrix M):
- stable rank  ‖M‖²_F / ‖M‖²₂ = Σσᵢ² / σ₁²  (1 for rank one, n for an orthogonal n×n; ≤ rank(M));
- effective rank (Roy & Vetterli, 2007)  exp(−Σ pᵢ log pᵢ) with pᵢ = σᵢ / Σσⱼ  (1 ≤ erank ≤ rank(M)).
Both are 0 for the zero matrix (a LoRA module whose B is still 0: nothing learned).
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from ..errors import ModelError


def _adapter_name(module: Any, adapter: str | None) -> str:
    names = list(getattr(module, "lora_A", {}).keys())
    if not names:
        raise ModelError(f"{type(module).__name__} is not a LoRA layer (it has no lora_A adapters)")
    if adapter is None:
        active = getattr(module, "active_adapters", None) or names
        adapter = active[0] if isinstance(active, (list, tuple)) else active
    if adapter not in names:
        raise ModelError(f"LoRA layer has no adapter {adapter!r}; it has {', '.join(names)}")
    return adapter


def lora_factors(module: Any, adapter: str | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B [out, r], A [r, in], scale α/r) of a PEFT LoRA linear layer, fp32, detached.

    `adapter` defaults to the layer's first active adapter. Raises ModelError for a module that is not a
    LoRA layer or lacks `adapter`.
    """
    name = _adapter_name(module, adapter)
    a = module.lora_A[name].weight.detach().float()
    b = module.lora_B[name].weight.detach().float()
    scale = float(module.scaling[name])
    return b, a, scale


def delta_w(lora_module: Any, adapter: str | None = None) -> torch.Tensor:
    """ΔW = (α/r)·B·A of one LoRA linear layer: fp32 [out_features, in_features], what merging adds to W
    (transposed to [in, out] for a `fan_in_fan_out` layer, whose W is stored that way: GPT-2's Conv1D).

    Cost: one [out, r] × [r, in] matmul and an [out, in] fp32 result.
    """
    b, a, scale = lora_factors(lora_module, adapter)
    dw = scale * (b @ a)
    return dw.T if getattr(lora_module, "fan_in_fan_out", False) else dw


def singular_values(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    """All singular values of a 2-D matrix, descending, float64 (numpy SVD; min(m, n) values)."""
    m = matrix.detach().double().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix, np.float64)
    if m.ndim != 2:
        raise ValueError(f"singular_values expects a 2-D matrix, got shape {m.shape}")
    if m.size == 0:
        return np.zeros(0)
    return np.linalg.svd(m, compute_uv=False)


def low_rank_singular_values(b: torch.Tensor, a: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """The r largest singular values of scale·B·A (B [m, r], A [r, n]) without forming the m × n product.

    With B = Q_B R_B and Aᵀ = Q_A R_A (thin QR), scale·B·A = Q_B (scale·R_B R_Aᵀ) Q_Aᵀ, so its nonzero
    singular values are those of the r × r core. Returns min(r, m, n) values, descending, float64. Cost:
    two thin QRs, O((m + n)·r²), instead of an SVD of the m × n matrix.
    """
    bb = b.detach().double().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    aa = a.detach().double().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    _, rb = np.linalg.qr(bb)
    _, ra = np.linalg.qr(aa.T)
    return np.linalg.svd(scale * (rb @ ra.T), compute_uv=False)


def _sv(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Singular values of a 2-D matrix, or a 1-D array taken as singular values already."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 1:
        return np.sort(np.abs(arr.astype(np.float64)))[::-1]
    return singular_values(arr)


def stable_rank(matrix: torch.Tensor | np.ndarray) -> float:
    """‖M‖²_F / ‖M‖²₂ = Σσᵢ² / σ₁² of a 2-D matrix (or of a 1-D array of its singular values); 0.0 for zero."""
    s = _sv(matrix)
    if s.size == 0 or s[0] == 0.0:
        return 0.0
    return float(np.sum(s * s) / (s[0] * s[0]))


def effective_rank(matrix: torch.Tensor | np.ndarray) -> float:
    """exp(entropy of σᵢ / Σσⱼ) of a 2-D matrix (or a 1-D array of singular values); 0.0 for zero."""
    s = _sv(matrix)
    total = float(s.sum()) if s.size else 0.0
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


def lora_modules(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """(path, layer) of every LoRA layer in a PEFT model, in model order; paths drop PEFT's
    `base_model.model.` prefix (e.g. `bert.encoder.layer.0.attention.self.query`)."""
    out = []
    for name, m in model.named_modules():
        if hasattr(m, "lora_A") and hasattr(m, "lora_B") and len(getattr(m, "lora_A", {})) > 0:
            out.append((name.split("base_model.model.", 1)[-1], m))
    return out


def module_kind(path: str) -> str:
    """query | key | value | attn-out | ffn-in | ffn-out (BERT's paths), else the last path component."""
    if re.search(r"attention\.self\.(query|key|value)$", path):
        return path.rsplit(".", 1)[1]
    if path.endswith("attention.output.dense"):
        return "attn-out"
    if path.endswith("intermediate.dense"):
        return "ffn-in"
    if re.search(r"layer\.\d+\.output\.dense$", path):
        return "ffn-out"
    return path.rsplit(".", 1)[-1]


def svd_rows(model: torch.nn.Module, adapter: str | None = None, top: int = 8) -> list[dict[str, Any]]:
    """One row per LoRA module of `model`: module path, layer, kind, shape, rank r, α/r, ‖ΔW‖_F, ‖ΔW‖₂,
    stable rank, effective rank, the `top` largest singular values (sv_1 … sv_top) and all of them
    (`singular_values`, a list: for results.json, not the CSV).

    Singular values come from `low_rank_singular_values` (exact, O((m + n)·r²) per module).
    Raises ModelError when the model has no LoRA layer.
    """
    modules = lora_modules(model)
    if not modules:
        raise ModelError("the model has no LoRA layer to analyse")
    rows = []
    for path, m in modules:
        b, a, scale = lora_factors(m, adapter)
        s = low_rank_singular_values(b, a, scale)
        layer = re.search(r"layer\.(\d+)\.", path)
        row: dict[str, Any] = {
            "module": path, "layer": int(layer.group(1)) if layer else -1, "kind": module_kind(path),
            "out_features": int(b.shape[0]), "in_features": int(a.shape[1]), "rank": int(a.shape[0]),
            "scale": scale, "frobenius": float(np.sqrt(np.sum(s * s))), "spectral": float(s[0]) if s.size else 0.0,
            "stable_rank": stable_rank(s), "effective_rank": effective_rank(s),
        }
        for i in range(top):
            row[f"sv_{i + 1}"] = float(s[i]) if i < s.size else 0.0
        row["singular_values"] = [float(v) for v in s]
        rows.append(row)
    return rows
