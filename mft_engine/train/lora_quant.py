"""LoRA over a bitsandbytes-quantized base: `lora8` (LLM.int8 8-bit weights) and `qlora` (4-bit NF4 with double
quantization, bf16 compute). The adapters, the placement, the trained head and the adapter folder are LoRA's
(lora.py); only the base model differs.

How the base is built: the fp32 model the run loaded (the same weights and seeded head every other method starts
from, whatever the source: minilm, bert-*-random, a folder, the Hub) is written to a temporary folder and
reloaded with `from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`, transformers' supported
quantization path (in-place replacement of the layers is internal API in transformers 5). The classifier and
the pooler are skipped (`llm_int8_skip_modules`, which transformers also applies to 4-bit): the head must stay an
unquantized nn.Linear for PEFT to train it. `prepare_model_for_kbit_training` then freezes the base and turns on
gradient checkpointing (its default); the run records whether it is on.

bitsandbytes is imported lazily, only when one of these methods prepares or loads a model; `get_method` fails
with one line when it is missing or too old, `prepare` / `load` when it cannot run on the model's device.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._optional import bitsandbytes_missing, silence_bitsandbytes_notices
from ..errors import ConfigError, ModelError
from .lora import LoRA, lora_targets, quiet_peft
from .method import Prepared, read_method_file, register_method

#: modules left in full precision: the trained head and the pooler that feeds it
SKIP_MODULES = [r"(.*\.)?classifier", r"(.*\.)?pooler"]

_RUNS_ON: dict[tuple[str, str], str | None] = {}  # (method, device type) → None or why not


class QuantizedLoRA(LoRA):
    """LoRA on a quantized copy of the model (subclasses choose the quantization). Trainable and stored: exactly
    LoRA's at the same placement and rank (the adapter matrices in fp32 and the head)."""

    #: weight bits of the quantized linear layers
    bits: ClassVar[int] = 0
    gradient_checkpointing: ClassVar[bool] = True  # prepare_model_for_kbit_training's default; set per run

    def __init__(self) -> None:
        self._require_installed()

    def _require_installed(self) -> None:
        missing = bitsandbytes_missing()
        if missing is not None:
            raise ConfigError(f"--method {self.name} needs bitsandbytes: {missing} "
                              "(pip install 'bitsandbytes>=0.50', or mft_engine's [quant] extra)")

    def quantization_config(self):
        """The transformers BitsAndBytesConfig of this method."""
        raise NotImplementedError

    def quantization_notes(self) -> dict[str, Any]:
        """How the base is quantized, for results.json."""
        raise NotImplementedError

    def _smoke_test(self, device: torch.device) -> None:
        """Quantize a small layer and run it forward on `device`: raises whatever bitsandbytes raises."""
        raise NotImplementedError

    def require_bitsandbytes(self, device: torch.device) -> None:
        """Import bitsandbytes and check that this method's quantized layers run on `device`; ConfigError
        naming what failed otherwise. Cost: one import (seconds), then a 64 × 64 layer once per device type."""
        key = (self.name, device.type)
        if key not in _RUNS_ON:
            self._require_installed()
            silence_bitsandbytes_notices()
            try:
                import bitsandbytes
            except Exception as e:  # noqa: BLE001  (a broken build raises anything, OSError to RuntimeError)
                raise ConfigError(f"--method {self.name}: bitsandbytes failed to import "
                                  f"({type(e).__name__}: {_first_line(e)})") from None
            try:
                self._smoke_test(device)
                _RUNS_ON[key] = None
            except Exception as e:  # noqa: BLE001  (whatever fails is reported as the reason)
                _RUNS_ON[key] = (f"--method {self.name}: bitsandbytes {bitsandbytes.__version__} cannot run "
                                 f"{self.bits}-bit layers on {device.type} ({type(e).__name__}: {_first_line(e)})")
        if _RUNS_ON[key] is not None:
            raise ConfigError(_RUNS_ON[key])

    def quantize(self, model: torch.nn.Module) -> torch.nn.Module:
        """A quantized copy of `model` (a transformers PreTrainedModel) on the same device, in eval mode: its linear
        layers in bitsandbytes' 8-bit or 4-bit form, the classifier and pooler (SKIP_MODULES), embeddings and
        LayerNorms as they were. `model` is left unchanged. Cost: one write and one read of the weights through a
        temporary folder, plus the quantization (one pass over the linear weights)."""
        from ..models.loading import quiet_transformers

        if not hasattr(model, "save_pretrained"):
            raise ModelError(f"--method {self.name} needs a Hugging Face model (save_pretrained / from_pretrained), "
                             f"not {type(model).__name__}")
        param = next(model.parameters())
        self.require_bitsandbytes(param.device)
        with tempfile.TemporaryDirectory(prefix="mft_quant_") as tmp, quiet_transformers(), quiet_peft():
            model.save_pretrained(tmp)
            quantized = type(model).from_pretrained(tmp, quantization_config=self.quantization_config(),
                                                    dtype=param.dtype, device_map={"": str(param.device)},
                                                    local_files_only=True)
        # the temporary folder is gone: keep the source's name (PEFT records it as the adapter's base model)
        quantized.name_or_path = model.name_or_path
        _keep_plain_4bit_layout(quantized)
        return quantized.eval()

    def prepare(self, model: torch.nn.Module, config) -> Prepared:
        """Quantize a copy of `model`, freeze it and turn on gradient checkpointing
        (prepare_model_for_kbit_training), then add LoRA's adapters and head (`LoRA.wrap`). The returned model is
        the wrapped quantized copy; `model` itself is not changed."""
        options = self.options_of(config)
        targets = lora_targets(model, options)  # before the costly copy: a bad placement fails at once
        quantized = self.quantize(model)  # first: it checks bitsandbytes before peft imports it

        from peft import prepare_model_for_kbit_training

        quantized.config.use_cache = False  # a classifier caches nothing; avoids transformers' notice under checkpointing
        with quiet_peft():
            # non-reentrant checkpointing: what torch recommends (the reentrant default warns), and it needs no
            # hook making the embedding outputs require grad
            quantized = prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=True,
                                                        gradient_checkpointing_kwargs={"use_reentrant": False})
            self.gradient_checkpointing = bool(getattr(quantized, "is_gradient_checkpointing", False))
        n_quantized = sum(1 for m in quantized.modules() if _is_bnb_linear(m))
        prepared = self.wrap(quantized, options, targets)
        prepared.notes.update({"quantization": {**self.quantization_notes(), "quantized_linear_layers": n_quantized,
                                                "skip_modules": list(SKIP_MODULES),
                                                "built_by": "save_pretrained to a temporary folder, then "
                                                            "from_pretrained(quantization_config=...)"},
                               "gradient_checkpointing": self.gradient_checkpointing})
        return prepared

    def adapter_source(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Only the adapter and head tensors: `model.state_dict()` would also serialize every quantized layer's
        state (and, for a 4-bit weight in bitsandbytes' CPU-packed layout, undo the packing lossily)."""
        return {n: p for n, p in model.named_parameters() if "lora_" in n or ".modules_to_save." in n}

    def load(self, model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
        """Quantize a copy of the base `model` (same name and seed as the trained one) as `prepare` did and wrap it
        with the saved adapter and head; returns the PeftModel in eval mode. Quantization is deterministic, so the
        predictions equal those of the trained model."""
        folder = Path(folder)
        if read_method_file(folder).get("method") != self.name:
            raise ModelError(f"{folder} does not hold a {self.name} adapter")
        return super().load(self.quantize(model), folder)

    def merged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A plain fp32 Hugging Face model for `save_pretrained` checkpoints: the quantized base weights
        dequantized, ΔW = (alpha / r)·B·A added in fp32 (merging into the quantized weights would requantize and
        lose most of a small update), the trained head in place, gradient checkpointing off. It equals the trained
        model up to the quantized layers' compute precision (int8 / bf16 matmuls there, fp32 here).
        Cost: one copy of the quantized model, then one fp32 weight matrix per quantized layer."""
        from peft.tuners.lora import LoraLayer

        from ..models.loading import quiet_transformers

        with quiet_peft(), quiet_transformers():
            wrapped = copy.deepcopy(model)
            inner = wrapped.get_base_model()
            deltas = {}
            for name, module in inner.named_modules():
                if isinstance(module, LoraLayer):
                    for adapter in module.active_adapters:
                        if adapter in module.lora_A:
                            d = module.get_delta_weight(adapter).float()
                            deltas[name] = deltas[name] + d if name in deltas else d
            plain = wrapped.unload()  # drops the adapters; the trained head replaces the original one
            plain.dequantize(dtype=torch.float32)
            if getattr(plain, "is_gradient_checkpointing", False):
                plain.gradient_checkpointing_disable()
        with torch.no_grad():
            for name, d in deltas.items():
                plain.get_submodule(name).weight.add_(d)
        # The hook PEFT adds under gradient checkpointing to make the embedding outputs require grad: the copy
        # keeps it, and disable_input_require_grads cannot remove it there (its handles point at the original).
        for module in plain.modules():
            for key, hook in list(module._forward_hooks.items()):
                if getattr(hook, "__name__", "") == "make_inputs_require_grads":
                    del module._forward_hooks[key]
        for attr in ("is_loaded_in_8bit", "is_loaded_in_4bit"):
            plain.__dict__.pop(attr, None)
        plain.float()  # bnb's Linear4bit casts its bias to the compute dtype (bf16) in its first forward
        for p in plain.parameters():
            p.requires_grad_(False)
        return plain.eval()


def _keep_plain_4bit_layout(model: torch.nn.Module) -> None:
    """Turn off bitsandbytes' repacking of 4-bit weights for its AVX512-BF16 CPU kernel.

    bitsandbytes 0.50 repacks a Linear4bit's weight on its first eval forward without gradients on such CPUs; a
    later training forward on the packed weight fails ("a view of a leaf Variable that requires grad is being
    used in an in-place operation"), and state_dict() undoes the packing lossily (the block scales are
    re-quantized, shifting later predictions). The training loop validates between steps, so every forward
    keeps the plain layout: the one training uses, which save → load reproduces exactly."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _is_bnb_linear(module: torch.nn.Module) -> bool:
    return type(module).__module__.startswith("bitsandbytes") and isinstance(module, torch.nn.Linear)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no message"


@register_method
class LoRA8(QuantizedLoRA):
    """LoRA over an 8-bit base (bitsandbytes LLM.int8: int8 weights with one scale per output row; input columns
    with an outlier above transformers' default threshold of 6 go through an fp16 matmul)."""

    name = "lora8"
    summary = "LoRA over an 8-bit (bitsandbytes LLM.int8) base + trained classifier head"
    bits = 8

    def quantization_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(SKIP_MODULES))

    def quantization_notes(self) -> dict[str, Any]:
        import bitsandbytes

        return {"bits": 8, "scheme": "LLM.int8 (bitsandbytes Linear8bitLt)",
                "outlier_threshold": self.quantization_config().llm_int8_threshold,
                "bitsandbytes": bitsandbytes.__version__}

    def _smoke_test(self, device: torch.device) -> None:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
        layer = layer.to(device).eval()
        with torch.no_grad():
            out = layer(torch.ones(2, 64, device=device))
        if not torch.isfinite(out).all():
            raise RuntimeError("a quantized forward returned non-finite values")


@register_method
class QLoRA(QuantizedLoRA):
    """QLoRA: LoRA over a 4-bit NF4 base with double quantization (the block scales quantized too), computing
    in bf16."""

    name = "qlora"
    summary = "LoRA over a 4-bit NF4 (double-quantized, bf16 compute) base + trained classifier head"
    bits = 4

    def quantization_config(self):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=list(SKIP_MODULES))

    def quantization_notes(self) -> dict[str, Any]:
        import bitsandbytes

        return {"bits": 4, "scheme": "NF4, double quantization (bitsandbytes Linear4bit)",
                "compute_dtype": "bfloat16", "bitsandbytes": bitsandbytes.__version__}

    def _smoke_test(self, device: torch.device) -> None:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
        layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
        _keep_plain_4bit_layout(layer)
        layer = layer.to(device).eval()
        with torch.no_grad():
            out = layer(torch.ones(2, 64, device=device))
        if not torch.isfinite(out).all():
            raise RuntimeError("a quantized forward returned non-finite values")
