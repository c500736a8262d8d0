"""The Triton kernels run here under the Triton interpreter on CPU tensors, called directly (CPU tensors
dispatch to the C++ kernels). TRITON_INTERPRET is read when a kernel is decorated, i.e. when its module
is imported, and again by the interpreter while it runs one: this conftest sets it, imports every
kernel module and puts the variable back; an autouse fixture sets it again for each test here. So the
rest of the session never sees it. Without triton installed the kernel tests are not collected.

On a machine with CUDA none of that happens: a kernel decorated under the interpreter stays interpreted
for the whole session, and then tests/gpu and the CUDA case of test_torch_compile.py would run the
interpreter on device tensors instead of the compiled kernels. There test_kernels.py is left out
(tests/gpu checks the same ops, compiled, on the device) and the rest runs on the compiled kernels."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
import torch

from mft_engine.ops import triton as triton_kernels

KERNEL_MODULES = sorted({module for module, _ in triton_kernels.KERNELS.values()})
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = HAVE_TRITON and not torch.cuda.is_available()

# test_torch_compile.py needs no triton: it compiles calls to the ops on CPU tensors.
collect_ignore_glob = ([] if INTERPRET else ["test_kernels.py"]) + \
    ([] if HAVE_TRITON else ["test_registration.py", "test_compile.py"])

if INTERPRET:
    names = [f"{triton_kernels.__name__}.{m}" for m in KERNEL_MODULES]
    early = [n for n in names if n in sys.modules]
    if early:
        raise RuntimeError(f"{early} were imported before tests/ops/triton/conftest.py (compiled, not "
                           "interpreted); these tests must be the first to import the kernel modules")
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


@pytest.fixture(autouse=True)
def triton_interpret(monkeypatch):
    """TRITON_INTERPRET=1 while a test of this directory runs (the interpreter reads it at run time), where
    the kernels are interpreted."""
    if INTERPRET:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
