"""The Triton kernels are the registered CUDA implementations of every mft op (when triton imports), and
without triton nothing is registered and the package still works."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import torch

from mft_engine.ops import triton as triton_kernels


def _mft_ops() -> set[str]:
    return {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("mft::")}


def test_every_mft_op_has_a_cuda_kernel():
    assert triton_kernels.registered()
    assert _mft_ops() == set(triton_kernels.KERNELS), "an mft op without a Triton kernel (or a stale entry)"
    for name in triton_kernels.KERNELS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mft::{name}", "CUDA"), name
        # the CPU kernel is still the C++ one
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mft::{name}", "CPU"), name


def test_ops_that_read_back_to_raise_are_cudagraph_unsafe():
    """Every op whose kernel reads a value back to the host to raise (NaN/Inf, a bad k, bad indices) is
    tagged, so torch.compile's CUDA graphs leave it out; accumulate_ raises nothing on the device."""
    tagged = {name for name in _mft_ops()
              if torch.Tag.cudagraph_unsafe in getattr(torch.ops.mft, name).default.tags}
    assert tagged == _mft_ops() - {"accumulate_"}


def test_each_kernel_takes_its_schemas_arguments():
    for name, (module, function) in triton_kernels.KERNELS.items():
        fn = getattr(importlib.import_module(f"{triton_kernels.__name__}.{module}"), function)
        positional = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        schema = getattr(torch.ops.mft, name).default._schema
        assert [p.name for p in positional] == [a.name for a in schema.arguments], name


def test_without_triton_nothing_is_registered_and_the_cpu_ops_work():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # `import triton` now raises ImportError
        "import torch\n"
        "from mft_engine import ops\n"
        "assert not ops.triton.registered() and 'triton' in ops.triton.import_error()\n"
        "assert not torch._C._dispatch_has_kernel_for_dispatch_key('mft::select_topk', 'CUDA')\n"
        "idx, thr, tied = ops.select_topk([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 1.0])], 0.5, 1)\n"
        "assert idx.tolist() == [0]\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_on_a_cuda_machine_no_kernel_is_interpreted():
    """Where CUDA is available this directory's conftest must not decorate the kernels under the
    interpreter (they would stay interpreted for the session, and tests/gpu would check the interpreter on
    device tensors): collected with CUDA faked, the interpreter tests are left out, the CUDA case of the
    compile test is in, and every kernel module that got imported holds compiled kernels."""
    code = (
        "import os, sys, torch, pytest\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "torch.cuda.is_available = lambda: True\n"
        "code = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests/ops/triton'])\n"
        "from triton.runtime.interpreter import InterpretedFunction\n"
        "mods = [m for n, m in sys.modules.items() if n.startswith('mft_engine.ops.triton.')]\n"
        "bad = [f'{m.__name__}.{k}' for m in mods for k, v in vars(m).items() if isinstance(v, InterpretedFunction)]\n"
        "print('interpreted:', bad, 'env:', os.environ.get('TRITON_INTERPRET'), 'code:', int(code))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                         cwd=Path(__file__).resolve().parents[3])
    assert "interpreted: [] env: None code: 0" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    assert "test_kernels.py" not in out.stdout
    assert "test_compiled_fullgraph_equals_eager[cuda]" in out.stdout
