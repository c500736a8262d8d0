"""Results folders: atomic creation, run logs, JSON/CSV/summary writers, plots, machine and version stamps."""
from .folder import ResultsFolder, timestamp
from .machine import machine_info, versions
from .plots import plot_layer_zeroed, plot_training_loss

__all__ = ["ResultsFolder", "machine_info", "plot_layer_zeroed", "plot_training_loss", "timestamp", "versions"]
