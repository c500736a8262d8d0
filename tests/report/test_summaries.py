"""One-line reprs and summaries that name what they describe (issue 19)."""
from __future__ import annotations

import torch

from mft_engine.masking import Mask
from mft_engine.train.run import precision_lines


def test_mask_repr_is_one_line_with_count_tensors_and_fraction():
    m = Mask(["a", "b"], [(30, 40), (100,)], torch.arange(0, 1300, 10))
    text = repr(m)
    assert text == "Mask(130 entries of 1,300 in 2 tensors (10.00%), no values saved)"
    m.info["kind"] = "learned-mask"
    m.values = torch.zeros(130)
    assert repr(m) == "Mask(130 entries of 1,300 in 2 tensors (10.00%), values saved, learned-mask)"
    big = Mask(["w"], [(4096, 4096)], torch.arange(0, 4096 * 4096, 3))
    assert "\n" not in repr(big) and len(repr(big)) < 120


def test_finetune_summary_names_quantization_and_precision():
    plain = {"config": {"precision": "bf16"}, "method_notes": {}}
    assert precision_lines(plain) == ["precision: fp32 weights, forward/backward bf16 autocast"]
    qlora = {"config": {"precision": "fp32"}, "method_notes": {"quantization": {
        "bits": 4, "scheme": "NF4, double quantization (bitsandbytes Linear4bit)", "compute_dtype": "bfloat16",
        "quantized_linear_layers": 36, "skip_modules": ["classifier"]}}}
    q, p = precision_lines(qlora)
    assert "4-bit NF4" in q and "compute dtype bfloat16" in q and "36 linear layers quantized" in q
    assert p == "precision: adapters and head fp32, forward/backward fp32 over the quantized base"
    lora8 = {"config": {"precision": "fp32"}, "method_notes": {"quantization": {
        "bits": 8, "scheme": "LLM.int8 (bitsandbytes Linear8bitLt)", "outlier_threshold": 6.0}}}
    assert "8-bit LLM.int8" in precision_lines(lora8)[0] and "outlier threshold 6" in precision_lines(lora8)[0]
