"""The `mft` command: a thin shell over experiments/ and the public API, one module per command group.

Every config command's flags are generated from its config dataclass (`flags.py`); every command prints
through `output.py`. Bad input (any MftError) prints one line `mft: error: ...` and exits 2.
"""
from __future__ import annotations

# Importing the command modules registers their commands on `app`.
from . import bench, finetune, run, scoring, studies, tools  # noqa: F401
from .apps import app, unwrap_help
from .main import main

unwrap_help(app)

__all__ = ["app", "main"]
