"""The Triton kernels are the registered CUDA implementations of every mft op (when triton imports), and
without triton nothing is registered and the package still works."""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

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
