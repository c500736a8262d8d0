"""Results folders: atomic creation, run logs, JSON/CSV/summary writers, plots, machine and version stamps, and
the progress protocol the pipelines report through."""
from .folder import ResultsFolder, timestamp
from .machine import backends, machine_info, versions
from .plots import plot_accuracy, plot_collection_loss, plot_layer_zeroed, plot_training_loss, pyplot
from .progress import Progress
from .show import show

__all__ = ["Progress", "ResultsFolder", "backends", "machine_info", "plot_accuracy", "plot_collection_loss", "plot_layer_zeroed",
           "plot_training_loss", "pyplot", "show", "timestamp", "versions"]
