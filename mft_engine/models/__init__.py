"""Models: the bundled pretrained MiniLM, random BERT shapes, checkpoint folders and Hub ids."""
from .loading import (SUPPORTED_MODEL_TYPES, LoadedModel, check_architecture, check_max_length, load_model, minilm_path,
                      position_limit)

__all__ = ["LoadedModel", "SUPPORTED_MODEL_TYPES", "check_architecture", "check_max_length", "load_model", "minilm_path",
           "position_limit"]
