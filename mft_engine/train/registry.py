"""Imports every built-in fine-tuning method's file, which registers it (see method.register_method).

Adding a method: one file with a `@register_method` Method subclass (its options dataclass and `describe`
included), plus one import line here. The order is the registration order: `--method`'s help lists the
methods in it, and FinetuneConfig composes their options in it (so flags and config.json keys keep it).
"""
from . import full, lora, lora_quant, bitfit, freeze, learned_mask  # noqa: F401, I001  (order: see above)
