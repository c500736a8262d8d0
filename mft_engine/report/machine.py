"""Stamps for results.json: the machine, its CPU features, the kernel path, and software versions."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def machine_info() -> dict:
    """CPU model, logical cores, the SIMD features that matter here, torch threads and the active kernel path."""
    from .. import ops

    model, flags = _cpu_model_and_flags()
    interesting = ["avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"]
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "cpu_features": [f for f in interesting if f in flags],
        "torch_threads": torch.get_num_threads(),
        "kernel_path": ops.cpu_path(),
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    """The commit of the source tree mft_engine runs from, or None when it is not a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def versions() -> dict:
    """Versions of python, torch, transformers and mft_engine, and the git commit."""
    import transformers

    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "mft_engine": __version__, "git_commit": git_commit()}
