"""The errors mft_engine raises on bad input.

Each subclasses MftError and the matching built-in, so callers may catch either. Messages are one
sentence naming the bad input and what is expected; the CLI prints them without a traceback and exits 2.
"""


class MftError(Exception):
    """Base class of every error caused by bad input to mft_engine."""


class ConfigError(MftError, ValueError):
    """A configuration value is out of range or inconsistent (lr <= 0, fraction outside (0, 1], ...)."""


class DataError(MftError, ValueError):
    """A data file or folder is missing, malformed, empty, or has an unknown label."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No source for a task's data could be found."""


class ModelError(MftError, ValueError):
    """A model path or id does not name a loadable model."""


class NonFiniteError(MftError, ValueError):
    """NaN or Inf found in a parameter or its gradient; the message names the parameter."""


class MaskMismatchError(MftError, ValueError):
    """A mask file does not match the model it is applied to."""


class ResumeError(MftError, ValueError):
    """A resume checkpoint belongs to another configuration."""


class OutputError(MftError):
    """A results folder cannot be written: --out is not a writable folder, the disk is full, permission denied."""
