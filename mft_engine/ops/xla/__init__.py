"""XLA implementations of the mft ops (TPU, and any PJRT device torch_xla drives), as torch operations that
torch_xla lowers to HLO. Nothing here imports torch_xla at import time: `register()` (called by
mft_engine.ops when torch_xla is installed) only registers kernels for the XLA dispatch key, and torch_xla
is imported on the first call with XLA tensors, which exist only once the user has imported it.

Registered for the XLA key on the existing schemas: accumulate_, detrimental_score, detrimental_count,
zero_masked_, restore_ (outputs whose shapes follow from the inputs' shapes) and select_topk (through the
mask below, then one conversion to indices on the host). zero_topk_ has no XLA kernel: zero with
`torch.where` on the masks, or call zero_masked_ with select_topk's indices.

Selection as a fixed-shape entry point: the op `mft::select_mask_xla(thetas, grads, lr, k, rank_by,
literal, arithmetic)` returns one boolean mask per tensor plus the threshold and counts, with k a 0-d
tensor, so one compiled graph serves every k; `select_mask()` below is its Python face (checks, errors),
`masks_to_indices()` turns the masks into the flat indices select_topk returns, once, outside the graph.

Arithmetic: "f64" on CPU/GPU XLA devices (bit-identical to ops.reference), "f32" on TPUs (no float64,
no 64-bit bitcasts; exact within the bounds stated in arithmetic.py); MFT_XLA_ARITHMETIC or
set_arithmetic() forces one, which is how the tests run the TPU arithmetic on CPU.

Known limit: with torch_xla imported, torch.compile of code that calls the mutable ops on CPU/CUDA
tensors fails in AOTAutograd ("expected to have an entirely functional graph"), because an op with a
Functionalize kernel is not auto-functionalized; hence those kernels are registered only once torch_xla
is imported.

Functionalization: torch_xla wraps XLA tensors for functionalization. PyTorch's default handling of a
custom op there refuses ops that write their inputs, and for the others hands the XLA kernel unwrapped
tensors that cannot be mixed with the wrapped ones torch_xla creates inside it. So every op here also gets
a kernel for the Functionalize key: on XLA tensors it runs the XLA implementation on the wrappers (the
tensors it creates are wrapped alike; its in-place torch ops are functionalized as usual); on any other
device it does what functionalization does by default for the op — sync, unwrap, run the device kernel
(on copies of the arguments it writes, which become the wrappers' new values), wrap the outputs — so
CPU/CUDA code under torch.func.functionalize and torch.compile behaves as before.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from .._args import check_names, check_rank_by, raise_nonfinite, round_lr, tensor_list
from .._backend import OptionalBackend
from . import kernels
from .kernels import ENV_VAR, arithmetic_for, set_arithmetic

SELECT_MASK_SCHEMA = ("select_mask_xla(Tensor[] thetas, Tensor[] grads, float lr, Tensor k, str rank_by, "
                      "bool literal, str arithmetic=\"auto\") -> (Tensor[], Tensor, Tensor, Tensor, Tensor)")

# schema name -> implementation in kernels.py (the schema's arguments, in order)
KERNELS = {
    "accumulate_": kernels.accumulate_,
    "detrimental_score": kernels.detrimental_score,
    "detrimental_count": kernels.detrimental_count,
    "zero_masked_": kernels.zero_masked_,
    "restore_": kernels.restore_,
    "select_topk": kernels.select_topk,
}

_backend = OptionalBackend("torch_xla")
_state: dict = {"library": None}


def _select_mask_xla(thetas, grads, lr, k, rank_by, literal, arithmetic="auto"):
    from .selection import select_mask as _select

    masks, threshold, n_tied, n_det, finite = _select(
        thetas, grads, lr, k, rank_by, literal, arithmetic_for(k.device, arithmetic))
    return masks, threshold, n_tied.to(torch.int64), n_det.to(torch.int64), finite


def _select_mask_fake(thetas, grads, lr, k, rank_by, literal, arithmetic="auto"):
    masks = [t.new_empty(t.shape, dtype=torch.bool) for t in thetas]
    scalar = lambda dtype: k.new_empty((), dtype=dtype)
    return masks, scalar(torch.float64), scalar(torch.int64), scalar(torch.int64), scalar(torch.bool)


def _on_xla(args) -> bool:
    for a in args:
        for t in (a if isinstance(a, (list, tuple)) else [a]):
            if isinstance(t, torch.Tensor) and t.device.type == "xla":
                return True
    return False


def _unwrap(x):
    if isinstance(x, torch.Tensor) and torch._is_functional_tensor(x):
        torch._sync(x)
        return torch._from_functional_tensor(x)
    return x


def _wrap(out):
    if isinstance(out, torch.Tensor):
        return torch._to_functional_tensor(out)
    if isinstance(out, (list, tuple)):
        return type(out)(_wrap(o) for o in out)
    return out


def _functionalize_device_kernel(op, args):
    """What functionalization does for an op on a non-XLA device: sync and unwrap the functional tensors,
    run the op below the Functionalize key (on copies of the arguments it writes, which then become the
    wrappers' new values), wrap the outputs."""
    written = [i for i, a in enumerate(op._schema.arguments) if a.alias_info is not None and a.alias_info.is_write]
    inner = [[_unwrap(t) for t in a] if isinstance(a, (list, tuple)) else _unwrap(a) for a in args]
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Functionalize)):
        for i in written:
            inner[i] = [t.clone() for t in inner[i]] if isinstance(inner[i], list) else inner[i].clone()
        out = op(*inner)
    for i in written:
        pairs = zip(args[i], inner[i]) if isinstance(args[i], (list, tuple)) else [(args[i], inner[i])]
        for wrapper, new in pairs:
            torch._functionalize_replace(wrapper, new)
            torch._functionalize_commit_update(wrapper)
    return _wrap(out)


def _functionalize_kernel(name: str, impl):
    """The Functionalize-key kernel of op `name`: the XLA implementation on XLA tensors, run on the
    functional wrappers themselves (the tensors it creates are wrapped alike, and its in-place torch ops
    are functionalized as usual); on other devices what functionalization does by default."""
    op = getattr(torch.ops.mft, name).default

    def kernel(*args):
        if _on_xla(args):
            return impl(*args)
        return _functionalize_device_kernel(op, args)

    kernel.__name__ = kernel.__qualname__ = f"mft_functionalize_{name}"
    return kernel


def register() -> bool:
    """Registers the XLA kernels (and mft::select_mask_xla) when torch_xla is installed, and their
    Functionalize-key kernels once torch_xla is imported; returns whether both are in place (call it
    again after `import torch_xla`; `import_error()` says why nothing was registered). torch_xla itself
    is never imported here. Cost: one look-up of the installed packages."""
    if _backend.registered:
        return True
    if not _backend.installed():
        return False
    if _state["library"] is None:
        lib = torch.library.Library("mft", "FRAGMENT")  # noqa: TOR901  (kept alive in _state)
        lib.define(SELECT_MASK_SCHEMA)
        torch.library.register_fake("mft::select_mask_xla", _select_mask_fake, lib=lib)
        for name, impl in {**KERNELS, "select_mask_xla": _select_mask_xla}.items():
            lib.impl(name, impl, "XLA")  # reached when functionalization is off (XLA_DISABLE_FUNCTIONALIZATION=1)
        _state["library"] = lib
    # The Functionalize kernels only once torch_xla is imported: they change how torch.compile traces the
    # mutable ops on every device (AOTAutograd no longer auto-functionalizes an op with such a kernel, and
    # its graph then holds the in-place op: measured to fail on CPU). Processes that never import torch_xla
    # keep the stock path; XLA tensors exist only after that import, and register() is called again then
    # (device.resolve_device("xla"), or the user).
    if "torch_xla" not in sys.modules:
        return False
    for name, impl in {**KERNELS, "select_mask_xla": _select_mask_xla}.items():
        _state["library"].impl(name, _functionalize_kernel(name, impl), "Functionalize")
    return _backend.mark_registered()


def registered() -> bool:
    """Whether register() has registered the XLA kernels in this process."""
    return _backend.registered


def import_error() -> str | None:
    """Why torch_xla was not found when register() looked, or None."""
    return _backend.import_error


def device_count(k: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """k as a 0-d int64 tensor on `device` that the graph reads as data: torch_xla bakes the values 0 and 1
    of a 0-d tensor into the graph as constants (one more compilation each), so k travels as a [1] tensor
    and is reshaped on the device (one reshape node, the same for every k)."""
    if isinstance(k, torch.Tensor) and k.device.type == "xla":
        return k.to(torch.int64).reshape(())
    return torch.tensor([int(k)], dtype=torch.int64).to(device).reshape(())


def masks_to_indices(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """The True positions of the masks as ascending flat indices over the list (each tensor row-major, in
    list order): int64 [number of True] on the CPU. Cost: one device-to-host copy of the masks (1 byte per
    element) and one nonzero pass on the host."""
    parts, start = [], 0
    for m in masks:
        parts.append(m.cpu().reshape(-1).nonzero().reshape(-1) + start)
        start += m.numel()
    return torch.cat(parts) if parts else torch.zeros((0,), dtype=torch.int64)


def select_mask(thetas: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: float, k: int | torch.Tensor,
                rank_by: str = "shrink", literal: bool = False, names: Sequence[str] | None = None,
                arithmetic: str = "auto") -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """ops.select_topk's selection on XLA tensors as one boolean mask per tensor: (masks, threshold, n_tied).

    masks[i] has thetas[i]'s shape and is True at the k detrimental elements with the largest scores
    (ties to the lower flat index: exactly select_topk's set); threshold (float64 0-d, +inf for k = 0) and
    n_tied (int64 0-d) as select_topk's. All three stay on the device. k: an int or a 0-d integer tensor;
    it enters the graph as data, so one compilation serves every k (per list of shapes, dtypes, rank_by,
    literal and arithmetic). Zero the selection with `torch.where(mask, 0, theta)`; masks_to_indices()
    gives select_topk's indices.

    Raises ConfigError for lr <= 0 or a bad rank_by, NonFiniteError naming the parameter for NaN/Inf,
    ValueError unless 0 <= k <= the number of detrimental elements. Those checks read two scalars back
    after the graph ran (one synchronization per call, not per tensor).
    Cost: see selection.select_mask (about 64 compare-and-count passes over the stored keys)."""
    lr32 = round_lr(lr)
    check_rank_by(rank_by)
    thetas = tensor_list(thetas, "thetas")
    grads = tensor_list(grads, "grads")
    names = check_names(names, len(thetas))
    if len(thetas) != len(grads) or not thetas:
        raise ValueError("thetas and grads must be non-empty lists of the same length")
    device = thetas[0].device
    k_t = device_count(k, device)
    masks, threshold, n_tied, n_det, finite = torch.ops.mft.select_mask_xla.default(
        thetas, grads, lr32, k_t, rank_by, bool(literal), arithmetic)
    kernels.run_pending(list(masks) + [threshold, n_tied, n_det, finite])
    if not bool(finite.cpu()):
        # names the first bad parameter and element (reads the tensors: error path only)
        raise_nonfinite(RuntimeError("non-finite theta or grad"), names, [t.cpu() for t in thetas],
                        [g.cpu() for g in grads])
    det, k_host = int(n_det.cpu()), int(k)
    if not 0 <= k_host <= det:
        raise ValueError(f"k={k_host} exceeds the number of detrimental elements ({det}); k must be in [0, {det}]")
    return list(masks), threshold, n_tied


__all__ = ["ENV_VAR", "KERNELS", "arithmetic_for", "import_error", "masks_to_indices", "register", "registered",
           "select_mask", "set_arithmetic"]
