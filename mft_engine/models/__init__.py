"""Models: the bundled pretrained MiniLM, random BERT shapes, checkpoint folders and Hub ids."""
from .loading import LoadedModel, load_model, minilm_path

__all__ = ["LoadedModel", "load_model", "minilm_path"]
