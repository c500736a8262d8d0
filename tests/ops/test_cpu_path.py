"""The CPU path switch: supported paths, run-time switching, MFT_CPU_PATH at import."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mft_engine import _C, ops


def test_supported_paths_start_with_scalar():
    paths = ops.supported_cpu_paths()
    assert paths[0] == "scalar"
    assert set(paths) <= {"scalar", "avx2", "avx512"}
    assert ops.cpu_path() in paths


def test_set_and_restore():
    before = ops.cpu_path()
    for name in ops.supported_cpu_paths():
        with ops.use_cpu_path(name):
            assert ops.cpu_path() == name
        assert ops.cpu_path() == before
    with ops.use_cpu_path("auto"):
        assert ops.cpu_path() == ops.supported_cpu_paths()[-1]


def test_unknown_path_is_an_error():
    with pytest.raises(ValueError, match="not a CPU path"):
        ops.set_cpu_path("sse9")
    for name in ("avx2", "avx512"):
        if name not in ops.supported_cpu_paths():
            with pytest.raises(ValueError, match="lacks"):
                ops.set_cpu_path(name)


def _run(env_value: str) -> subprocess.CompletedProcess:
    # Loads the extension file on its own (not the whole mft_engine package) in a fresh interpreter.
    env = dict(os.environ, MFT_CPU_PATH=env_value)
    code = ("import sys, importlib.util, torch\n"
            "spec = importlib.util.spec_from_file_location('_C', sys.argv[1])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(module.cpu_path())\n")
    return subprocess.run([sys.executable, "-c", code, _C.__file__], env=env, capture_output=True, text=True,
                          timeout=120)


def test_environment_variable_forces_a_path():
    res = _run("scalar")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "scalar"
    bad = _run("bogus")
    assert bad.returncode != 0
    assert "ImportError" in bad.stderr and "MFT_CPU_PATH" in bad.stderr
