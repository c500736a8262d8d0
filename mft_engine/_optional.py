"""Optional backends, checked without importing them (peft's import_utils style).

Importing mft_engine never imports an optional backend; code that needs one asks here first and raises a
one-line error naming what is missing. The checks read package metadata only (no import, no GPU probe), so
they are cheap enough to run on every call and are not cached (tests simulate a missing package by setting
`sys.modules[name] = None`).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys

#: the first bitsandbytes release whose 8-bit and 4-bit layers run on CPU
BITSANDBYTES_MIN = "0.50"


def _found(module: str) -> bool:
    if module in sys.modules and sys.modules[module] is None:  # import blocked (how tests simulate absence)
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def bitsandbytes_missing() -> str | None:
    """Why bitsandbytes cannot be used (not installed, or older than 0.50), or None when it can be imported.

    Whether it runs on a given device is checked where it is used (a quantized forward of a small layer)."""
    if not _found("bitsandbytes"):
        return f"bitsandbytes>={BITSANDBYTES_MIN} is not installed"
    version = _version("bitsandbytes")
    if version is not None:
        from packaging.version import Version

        if Version(version) < Version(BITSANDBYTES_MIN):
            return f"bitsandbytes {version} is installed but >={BITSANDBYTES_MIN} is needed (CPU support)"
    return None


def xla_missing() -> str | None:
    """Why torch_xla cannot be used (not installed, or not the 2.9.0 that matches torch 2.9.0), or None."""
    if not _found("torch_xla"):
        return "torch_xla is not installed (pip install 'mft_engine[xla]': torch==2.9.0 and torch_xla==2.9.0)"
    import torch

    version = _version("torch_xla")
    if version is not None and version.split("+")[0] != torch.__version__.split("+")[0]:
        return f"torch_xla {version} does not match torch {torch.__version__}; torch_xla 2.9.0 needs torch 2.9.0"
    return None


def has_xla() -> bool:
    """True when torch_xla is installed and matches torch (package metadata only; nothing is imported)."""
    return xla_missing() is None


def has_bitsandbytes() -> bool:
    """True when bitsandbytes >= 0.50 is installed (package metadata only; nothing is imported)."""
    return bitsandbytes_missing() is None


# Notices bitsandbytes logs as warnings that are expected and unactionable here: every int8 inference matmul on
# CPU casts its fp32 input to fp16 (once per layer per forward), and the optional `kernels` package (a CPU GEMM
# for bitsandbytes' packed 4-bit layout, fetched from the Hub, which mft_engine does not use) is absent.
_BITSANDBYTES_NOTICES = {
    "bitsandbytes.autograd._functions": "MatMul8bitLt: inputs will be cast",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
}


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_bitsandbytes_notices() -> None:
    """Drop the expected bitsandbytes notices above (only those) from its loggers; idempotent, imports nothing.
    Call before anything imports bitsandbytes (peft does, whenever it is installed)."""
    for name, prefix in _BITSANDBYTES_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))
