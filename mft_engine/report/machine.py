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


def _version_of(module: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(module)
    except md.PackageNotFoundError:
        return None


def _registered_backends() -> set[str]:
    """Dispatch keys (lower case) that have an implementation of mft::select_topk."""
    keys = set()
    for key in ("CPU", "CUDA", "XLA"):
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key("mft::select_topk", key):
                keys.add(key.lower())
        except (AttributeError, RuntimeError):
            pass
    return keys


def backends() -> list[dict]:
    """Every backend the engine knows, with its status: `ready` (its kernels are registered and its
    device is usable), `absent` (something is missing: `missing` says what and `extra` what brings it) or
    `no kernels` (the device works but mft's operators have no implementation for it yet).
    Cost: imports only; a CUDA query when torch has CUDA."""
    from .. import ops

    registered = _registered_backends()
    out = [{"backend": "cpu", "status": "ready" if "cpu" in registered else "no kernels",
            "detail": f"C++ kernels, path {ops.cpu_path()}"}]

    triton = _version_of("triton")
    cuda = {"backend": "cuda", "torch_cuda": torch.version.cuda, "triton": triton}
    if torch.version.cuda is None:
        cuda.update(status="absent", missing="a CUDA build of torch (this one is CPU-only)",
                    extra="install a CUDA build of torch, then pip install 'mft_engine[gpu]'")
    elif not torch.cuda.is_available():
        cuda.update(status="absent", missing="a visible CUDA device")
    else:
        i = torch.cuda.current_device()
        cuda.update(device=torch.cuda.get_device_name(i),
                    capability=".".join(map(str, torch.cuda.get_device_capability(i))))
        if triton is None:
            cuda.update(status="absent", missing="triton", extra="pip install 'mft_engine[gpu]'")
        else:
            cuda["status"] = "ready" if "cuda" in registered else "no kernels"
    if "cuda" in registered:
        cuda["kernels"] = "Triton (tested under the Triton interpreter only; never run on a GPU yet)"
    else:
        cuda["kernels"] = "Triton kernels, registered only when triton imports: pip install 'mft_engine[gpu]'"
    out.append(cuda)

    # XLA: torch_xla is not imported here (it starts the PJRT runtime); its metadata and mft's registration
    # on the XLA dispatch key (mft_engine.ops.xla.register(), done when torch_xla is installed) suffice.
    xla_version = _version_of("torch_xla")
    xla = {"backend": "xla", "torch_xla": xla_version}
    if xla_version is None:
        xla.update(status="absent", missing="torch_xla (it exists only for torch 2.9.0: a separate environment)",
                   extra="a separate environment with torch==2.9.0 and torch_xla==2.9.0: see tests/xla/run.sh")
    elif xla_version != "2.9.0" or not torch.__version__.startswith("2.9.0"):
        xla.update(status="absent", missing=f"a torch_xla matching torch (torch {torch.__version__}, "
                   f"torch_xla {xla_version}; torch_xla 2.9.0 needs torch 2.9.0)",
                   extra="pip install torch==2.9.0 torch_xla==2.9.0")
    else:
        xla["status"] = "ready" if "xla" in registered else "no kernels"
    if "xla" in registered:
        xla["kernels"] = ("torch ops lowered by torch_xla (mft_engine.ops.xla): select_mask for a fixed-shape "
                          "selection; arithmetic f64 on CPU/GPU devices, f32 on TPU (tested on PJRT CPU only)")
    else:
        xla["kernels"] = "registered only when torch_xla is installed (mft_engine.ops.xla)"
    out.append(xla)
    return out


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
