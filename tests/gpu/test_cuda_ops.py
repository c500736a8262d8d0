"""Every mft op on CUDA tensors (the Triton kernels, compiled for the GPU, not interpreted) against the C++
kernel on the same inputs copied to the CPU, bit for bit, on the CPU tests' `sample_inputs()`; opcheck on
CUDA tensors; the literal test unfused (enable_fp_fusion=False: the interpreter cannot see this). Runs only
where CUDA and the Triton kernels are present (scripts/gpu_check.sh); skipped everywhere else."""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from mft_engine import ops

from ..ops import sample_inputs as si

if not torch._C._dispatch_has_kernel_for_dispatch_key("mft::select_topk", "CUDA"):
    pytest.skip("mft's Triton kernels are not registered (pip install 'mft_engine[gpu]')", allow_module_level=True)

OPS = {
    "detrimental_score": (si.sample_inputs_detrimental_score, ops.detrimental_score),
    "detrimental_count": (si.sample_inputs_detrimental_count, ops.detrimental_count),
    "select_topk": (si.sample_inputs_select_topk, ops.select_topk),
    "zero_topk": (si.sample_inputs_zero_topk, ops.zero_topk_),
    "accumulate": (si.sample_inputs_accumulate, ops.accumulate_),
    "zero_masked": (si.sample_inputs_zero_masked, ops.zero_masked_),
}


def _to(args, device):
    def one(x):
        if isinstance(x, torch.Tensor):
            out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=device)
            out.copy_(x)  # keeps non-contiguous layouts
            return out
        if isinstance(x, list):
            return [one(y) for y in x]
        return x
    return tuple(one(a) for a in args)


def _flat(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for y in x for t in _flat(y)]
    return []


def _cases():
    return [pytest.param(name, s, id=f"{name}-{s.desc}") for name, (make, _) in OPS.items() for s in make()]


@pytest.mark.parametrize("name,sample", _cases())
def test_cuda_equals_cpu_bit_for_bit(name, sample):
    fn = OPS[name][1]
    cpu_args, cuda_args = si.clone_args(sample.args), _to(sample.args, "cuda")
    try:
        want = fn(*cpu_args, **sample.kwargs)
    except Exception as e:  # the same error on both devices
        with pytest.raises(type(e)):
            fn(*cuda_args, **sample.kwargs)
            torch.cuda.synchronize()
        return
    got = fn(*cuda_args, **sample.kwargs)
    torch.cuda.synchronize()
    for a, b in zip(_flat(want), _flat(got)):
        si.assert_bits_equal(a, b.cpu(), f"{name} output")
    for a, b in zip(_flat(cpu_args), _flat(cuda_args)):  # what the op wrote in place
        si.assert_bits_equal(a, b.cpu(), f"{name} in-place argument")


@pytest.mark.parametrize("name", ["detrimental_score", "detrimental_count", "select_topk", "zero_masked"])
def test_opcheck_on_cuda(name):
    make, _ = OPS[name]
    op = {"detrimental_score": torch.ops.mft.detrimental_score, "detrimental_count": torch.ops.mft.detrimental_count,
          "select_topk": torch.ops.mft.select_topk, "zero_masked": torch.ops.mft.zero_masked_}[name]
    checked = 0
    for s in make()[:12]:
        args = _to(s.args, "cuda")
        try:
            getattr(ops, {"zero_masked": "zero_masked_"}.get(name, name))(*si.clone_args(s.args), **s.kwargs)
        except Exception:
            continue  # bad-input cases are the CPU tests' business
        torch.library.opcheck(op, _schema_args(name, args, s.kwargs))
        checked += 1
    assert checked


def _schema_args(name, args, kwargs):
    lr = ops.round_lr(args[2]) if name != "zero_masked" else None
    if name == "detrimental_score":
        return (args[0], args[1], lr, kwargs.get("rank_by", "shrink"), bool(kwargs.get("literal", False)))
    if name == "detrimental_count":
        return (list(args[0]), list(args[1]), lr, bool(kwargs.get("literal", False)))
    if name == "select_topk":
        return (list(args[0]), list(args[1]), lr, int(args[3]), kwargs.get("rank_by", "shrink"),
                bool(kwargs.get("literal", False)), int(kwargs.get("seed", 0)))
    return (list(args[0]), args[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_literal_is_not_contracted_into_an_fma(dtype):
    """fp32 θ − lr·g computed unfused on the GPU, as on the CPU: random inputs where an FMA would differ."""
    gen = torch.Generator().manual_seed(0)
    theta = (torch.randn(1 << 20, generator=gen) * 1e-3).to(dtype)
    grad = (torch.randn(1 << 20, generator=gen) * 10).to(dtype)
    for rank_by in ("shrink", "update"):
        want = ops.detrimental_score(theta, grad, 3e-5, rank_by=rank_by, literal=True)
        got = ops.detrimental_score(theta.cuda(), grad.cuda(), 3e-5, rank_by=rank_by, literal=True)
        si.assert_bits_equal(want, got.cpu(), f"literal {rank_by} {dtype}")


def test_the_kernels_are_compiled_not_interpreted():
    """The checks above mean something only if the CUDA kernels are Triton's compiled ones: a kernel module
    imported with TRITON_INTERPRET set stays interpreted for the session (and runs on the host)."""
    import importlib
    import os

    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    from mft_engine.ops import triton as triton_kernels

    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    for module in {m for m, _ in triton_kernels.KERNELS.values()}:
        mod = importlib.import_module(f"{triton_kernels.__name__}.{module}")
        kernels = [v for v in vars(mod).values() if isinstance(v, (JITFunction, InterpretedFunction))]
        assert kernels and not any(isinstance(k, InterpretedFunction) for k in kernels), module
