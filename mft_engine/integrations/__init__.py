"""Adapters for other tools' training loops. Importing this package imports transformers (not done by
`import mft_engine`)."""
from .hf_callback import MftCallback

__all__ = ["MftCallback"]
