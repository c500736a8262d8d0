"""Fine-tuning methods (full, BitFit, LoRA, 8-bit LoRA, QLoRA, layer freezing, learned masks), the shared
training loop, checkpoints at target accuracy, and `finetune(config)`, the run behind `mft finetune`.

Each method is one module registering a `Method` subclass (imported by registry.py); `get_method(name)`
finds it.
"""
from . import registry  # noqa: F401  (first: importing a method's module registers it)
from .checkpoints import CheckpointTargets, TargetRecord
from .config import FinetuneConfig, parse_targets
from .loop import train_model
from .method import Method, Prepared, get_method, method_names, register_method
from .run import FinetuneResult, finetune

__all__ = ["CheckpointTargets", "FinetuneConfig", "FinetuneResult", "Method", "Prepared", "TargetRecord",
           "finetune", "get_method", "method_names", "parse_targets", "register_method", "train_model"]
