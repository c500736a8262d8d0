"""`mft app`: a browser page to see, try and compare the models the engine wrote (optional extra `[app]`).

- sources.py: what a folder is (mft run / finetune results, checkpoint, export, inspect-only results) and
  which models it offers, read from its JSON files;
- store.py: loading those models lazily and once (masks applied, adapters merged, in memory only);
- tables.py: uploaded CSV / TSV files, checked;
- inspection.py: a results folder's heatmap, curves and tables, drawn from its files;
- handlers.py: predict, batch, inspect, compare — plain functions, testable without a browser;
- ui.py: the Gradio page over the handlers, and `serve` (imports gradio; nothing else here does).
"""
from .handlers import (
                       BatchResult,
                       CompareBatch,
                       CompareText,
                       Inspection,
                       TextPrediction,
                       compare_batch,
                       compare_text,
                       inspect_folder,
                       predict_batch,
                       predict_text,
)
from .sources import AppInputError, FolderInfo, ModelChoice, describe_folder, find_folders
from .store import Classifier, ModelStore

__all__ = ["AppInputError", "BatchResult", "Classifier", "CompareBatch", "CompareText", "FolderInfo", "Inspection",
           "ModelChoice", "ModelStore", "TextPrediction", "compare_batch", "compare_text", "describe_folder",
           "find_folders", "inspect_folder", "predict_batch", "predict_text"]
