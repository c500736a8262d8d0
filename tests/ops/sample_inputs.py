"""One source of inputs per op: `sample_inputs_<op>()` enumerates fixed cases and `<op>_samples()` is the
hypothesis strategy; both go through the same `build_<op>(params)` so the comparison with ops.reference,
torch.library.opcheck and the property tests see the same kinds of inputs (ties, ±0, subnormals,
boundary cases, empty tensors, non-contiguous views, fp16/bf16)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

from mft_engine import ops
from mft_engine.ops import reference as ref

PATHS = ops.supported_cpu_paths()
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
KINDS = ("normal", "ties", "edge", "boundary")
SHAPES = ((0,), (1,), (7,), (33, 17), (3, 0, 2), (5, 4, 3))


@dataclass
class Sample:
    """Positional args and kwargs of one op call, with a short description (the pytest id)."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    desc: str = ""

    def __repr__(self) -> str:
        return self.desc


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a tensor, for bit-exact comparisons (-0.0 != 0.0, NaN payloads)."""
    view = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.contiguous().view(view)


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    assert a.dtype == b.dtype, (what, a.dtype, b.dtype)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if not torch.equal(bits(a), bits(b)):
        diff = (bits(a) != bits(b)).nonzero()[:5].tolist()
        raise AssertionError(f"{what}: tensors differ at {diff}")


# ---- tensors ------------------------------------------------------------------------------------------------

def _values(n: int, kind: str, gen: torch.Generator, role: str, lr: float) -> torch.Tensor:
    """n float32 values of a kind. role "theta" or "grad" (boundary cases pair them up)."""
    if kind == "normal":
        scale = 0.05 if role == "theta" else 0.02
        return torch.randn(n, generator=gen) * scale
    if kind == "ties":  # few distinct values: ties everywhere
        pool = torch.tensor([0.25, 0.5, 1.0, 2.0, -0.25, -0.5, -1.0, -2.0])
        return pool[torch.randint(0, len(pool), (n,), generator=gen)]
    if kind == "edge":  # zeros of both signs, subnormals (fp32 and fp16), tiny and large values
        pool = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 6e-8, -6e-8, 1e-30, 3e4, -3e4, 1.0, -1.0, 0.1, -0.1])
        return pool[torch.randint(0, len(pool), (n,), generator=gen)]
    if kind == "boundary":  # |θ| and lr·|g| on and around the 2|θ| boundary (exact for power-of-two lr)
        theta_pool = torch.tensor([1.0, -1.0, 0.5, -0.5])
        if role == "theta":
            return theta_pool[torch.randint(0, 4, (n,), generator=gen)]
        mult = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0])
        return mult[torch.randint(0, len(mult), (n,), generator=gen)] / lr
    raise ValueError(kind)


def make_tensor(shape: tuple[int, ...], dtype: torch.dtype, kind: str, seed: int, role: str = "theta",
                lr: float = 0.5, noncontiguous: bool = False) -> torch.Tensor:
    """A tensor of `shape` and `dtype` filled with values of `kind`; a strided view when noncontiguous.

    For "boundary", theta and grad built with the same seed pair up element by element."""
    gen = torch.Generator().manual_seed(seed if kind == "boundary" else seed * 2 + (role == "grad"))
    n = 1
    for s in shape:
        n *= s
    if kind == "boundary" and role == "grad":
        # the same positions as the theta draw, then a multiple of θ/lr: θ·c/lr gives t = c|θ|
        theta = _values(n, kind, gen, "theta", lr)
        gen2 = torch.Generator().manual_seed(seed + 7919)
        values = theta * _values(n, kind, gen2, "grad", lr)
    else:
        values = _values(n, kind, gen, role, lr)
    t = values.reshape(shape).to(dtype)
    if noncontiguous and len(shape) >= 2:
        # same logical values, transposed storage
        t = t.transpose(0, 1).contiguous().transpose(0, 1)
    elif noncontiguous and len(shape) == 1:
        wide = torch.zeros((shape[0], 2), dtype=dtype)
        wide[:, 0] = t
        t = wide[:, 0]
    return t


# ---- detrimental_score ------------------------------------------------------------------------------------------

def build_detrimental_score(p: dict[str, Any]) -> Sample:
    shape, kind, seed, lr = p["shape"], p["kind"], p["seed"], p["lr"]
    theta = make_tensor(shape, p["theta_dtype"], kind, seed, "theta", lr, p.get("noncontiguous", False))
    grad = make_tensor(shape, p["grad_dtype"], kind, seed, "grad", lr, p.get("noncontiguous", False))
    desc = (f"{kind}-{tuple(shape)}-{str(p['theta_dtype'])[6:]}/{str(p['grad_dtype'])[6:]}-lr{lr}-{p['rank_by']}"
            f"{'-literal' if p['literal'] else ''}{'-nc' if p.get('noncontiguous') else ''}")
    return Sample((theta, grad, lr, p["rank_by"], p["literal"]), {}, desc)


def sample_inputs_detrimental_score() -> list[Sample]:
    out, seed = [], 0
    for kind in KINDS:
        for shape in SHAPES:
            for tdt, gdt in ((torch.float32, torch.float32), (torch.float16, torch.float16),
                             (torch.bfloat16, torch.float32)):
                seed += 1
                lr = 0.5 if kind == "boundary" else (1.0, 2.0 ** -10, 3.0)[seed % 3]
                out.append(build_detrimental_score(dict(
                    shape=shape, kind=kind, seed=seed, lr=lr, theta_dtype=tdt, grad_dtype=gdt,
                    rank_by=("shrink", "update")[seed % 2], literal=bool(seed // 2 % 2),
                    noncontiguous=seed % 5 == 0)))
    return out


score_params = st.fixed_dictionaries(dict(
    shape=st.sampled_from(SHAPES + ((200,), (64, 9))),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 10_000),
    lr=st.sampled_from([0.5, 0.25, 1e-3, 0.1, 7.0]),
    theta_dtype=st.sampled_from(FLOAT_DTYPES),
    grad_dtype=st.sampled_from(FLOAT_DTYPES),
    rank_by=st.sampled_from(["shrink", "update"]),
    literal=st.booleans(),
    noncontiguous=st.booleans(),
))
detrimental_score_samples = score_params.map(build_detrimental_score)


# ---- lists: detrimental_count and select_topk -----------------------------------------------------------------------

LIST_SHAPES = (
    ((7,),),
    ((5, 3), (0,), (11,)),
    ((40, 30), (30,), (0, 4), (17, 3), (1,)),
    ((257,), (64, 65)),
)


def build_lists(p: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    thetas, grads = [], []
    for i, shape in enumerate(p["shapes"]):
        dtype = p["dtypes"][i % len(p["dtypes"])]
        nc = p.get("noncontiguous", False) and i % 2 == 1
        thetas.append(make_tensor(shape, dtype, p["kind"], p["seed"] * 31 + i, "theta", p["lr"], nc))
        grads.append(make_tensor(shape, dtype, p["kind"], p["seed"] * 31 + i, "grad", p["lr"], nc))
    return thetas, grads


def _list_desc(p: dict[str, Any]) -> str:
    dts = "/".join(str(d)[6:] for d in p["dtypes"])
    return (f"{p['kind']}-{len(p['shapes'])}tensors-{dts}-lr{p['lr']}{'-literal' if p['literal'] else ''}"
            f"{'-nc' if p.get('noncontiguous') else ''}")


def build_detrimental_count(p: dict[str, Any]) -> Sample:
    thetas, grads = build_lists(p)
    return Sample((thetas, grads, p["lr"], p["literal"]), {}, _list_desc(p))


def build_select_topk(p: dict[str, Any]) -> Sample:
    """k is p["k_frac"] of the detrimental count (from the reference), so it is always valid."""
    thetas, grads = build_lists(p)
    n_det = int(ref.reference_detrimental_count(thetas, grads, p["lr"], p["literal"]).sum())
    k = min(n_det, round(p["k_frac"] * n_det)) if p["k_frac"] >= 0 else n_det
    desc = f"{_list_desc(p)}-{p['rank_by']}-k{k}of{n_det}"
    return Sample((thetas, grads, p["lr"], k, p["rank_by"], p["literal"]), {"seed": p.get("seed", 0)}, desc)


def _list_params() -> list[dict[str, Any]]:
    out, seed = [], 0
    dtype_sets = ((torch.float32,), (torch.float16,), (torch.bfloat16, torch.float32))
    for kind in KINDS:
        for shapes in LIST_SHAPES:
            for dtypes in dtype_sets:
                seed += 1
                lr = 0.5 if kind == "boundary" else (1.0, 2.0 ** -9, 4.0)[seed % 3]
                out.append(dict(shapes=shapes, dtypes=dtypes, kind=kind, seed=seed, lr=lr,
                                literal=bool(seed % 2), noncontiguous=seed % 3 == 0,
                                rank_by=("shrink", "update")[seed // 2 % 2],
                                k_frac=(0.0, 0.1, 0.5, -1.0, 0.01)[seed % 5]))
    return out


def build_zero_topk(p: dict[str, Any]) -> Sample:
    """select_topk's inputs with the thetas contiguous and of one dtype (dtypes[0]): they are written in
    place and the saved values have one dtype. Grads keep their dtypes and strides."""
    thetas, grads = build_lists(p)
    thetas = [t.to(p["dtypes"][0]).contiguous() for t in thetas]
    n_det = int(ref.reference_detrimental_count(thetas, grads, p["lr"], p["literal"]).sum())
    k = min(n_det, round(p["k_frac"] * n_det)) if p["k_frac"] >= 0 else n_det
    desc = f"{_list_desc(p)}-{p['rank_by']}-k{k}of{n_det}"
    return Sample((thetas, grads, p["lr"], k, p["rank_by"], p["literal"]), {"seed": p.get("seed", 0)}, desc)


def sample_inputs_detrimental_count() -> list[Sample]:
    return [build_detrimental_count(p) for p in _list_params()]


def sample_inputs_select_topk() -> list[Sample]:
    return [build_select_topk(p) for p in _list_params()]


def sample_inputs_zero_topk() -> list[Sample]:
    return [build_zero_topk(p) for p in _list_params()]


list_params = st.fixed_dictionaries(dict(
    shapes=st.lists(st.sampled_from(SHAPES + ((100,), (20, 20))), min_size=1, max_size=5).map(tuple),
    dtypes=st.lists(st.sampled_from(FLOAT_DTYPES), min_size=1, max_size=3).map(tuple),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 10_000),
    lr=st.sampled_from([0.5, 0.25, 1e-3, 7.0]),
    literal=st.booleans(),
    noncontiguous=st.booleans(),
    rank_by=st.sampled_from(["shrink", "update"]),
    k_frac=st.sampled_from([0.0, 0.01, 0.3, 0.5, 0.99, -1.0]),
))
detrimental_count_samples = list_params.map(build_detrimental_count)
select_topk_samples = list_params.map(build_select_topk)
zero_topk_samples = list_params.map(build_zero_topk)


# ---- accumulate_ ----------------------------------------------------------------------------------------------------

def build_accumulate(p: dict[str, Any]) -> Sample:
    shape = p["shape"]
    gen = torch.Generator().manual_seed(p["seed"])
    g_sum = torch.randn(shape, generator=gen)
    sq_sum = torch.rand(shape, generator=gen)
    pos = torch.randint(0, 5, shape, generator=gen, dtype=torch.int32)
    neg = torch.randint(0, 5, shape, generator=gen, dtype=torch.int32)
    grad = make_tensor(shape, p["dtype"], p["kind"], p["seed"], "grad", 0.5, p.get("noncontiguous", False))
    desc = f"{p['kind']}-{tuple(shape)}-{str(p['dtype'])[6:]}{'-nc' if p.get('noncontiguous') else ''}"
    return Sample((g_sum, sq_sum, pos, neg, grad), {}, desc)


def sample_inputs_accumulate() -> list[Sample]:
    out, seed = [], 0
    for kind in ("normal", "edge", "ties"):
        for shape in SHAPES:
            for dtype in FLOAT_DTYPES:
                seed += 1
                out.append(build_accumulate(dict(shape=shape, dtype=dtype, kind=kind, seed=seed,
                                                 noncontiguous=seed % 4 == 0)))
    return out


accumulate_samples = st.fixed_dictionaries(dict(
    shape=st.sampled_from(SHAPES + ((1000,), (31, 33))),
    dtype=st.sampled_from(FLOAT_DTYPES),
    kind=st.sampled_from(("normal", "edge", "ties")),
    seed=st.integers(0, 10_000),
    noncontiguous=st.booleans(),
)).map(build_accumulate)


# ---- zero_masked_ / restore_ -------------------------------------------------------------------------------------------

def build_zero_masked(p: dict[str, Any]) -> Sample:
    """params (contiguous, one dtype) and a random strictly increasing subset of flat indices."""
    gen = torch.Generator().manual_seed(p["seed"])
    params = [torch.randn(s, generator=gen).to(p["dtype"]) for s in p["shapes"]]
    total = sum(t.numel() for t in params)
    keep = torch.rand(total, generator=gen) < p["density"]
    indices = keep.nonzero().reshape(-1).to(torch.int64)
    desc = f"{len(params)}params-{str(p['dtype'])[6:]}-{indices.numel()}of{total}"
    return Sample((params, indices), {}, desc)


def sample_inputs_zero_masked() -> list[Sample]:
    out, seed = [], 0
    for shapes in LIST_SHAPES:
        for dtype in FLOAT_DTYPES:
            for density in (0.0, 0.3, 1.0):
                seed += 1
                out.append(build_zero_masked(dict(shapes=shapes, dtype=dtype, density=density, seed=seed)))
    return out


zero_masked_samples = st.fixed_dictionaries(dict(
    shapes=st.lists(st.sampled_from(SHAPES + ((100,),)), min_size=1, max_size=4).map(tuple),
    dtype=st.sampled_from(FLOAT_DTYPES),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    seed=st.integers(0, 10_000),
)).map(build_zero_masked)


def clone_args(args: tuple) -> tuple:
    """Deep copy of tensors (and lists of tensors) in args, preserving strides."""
    def one(x):
        if isinstance(x, torch.Tensor):
            out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype)
            out.copy_(x)
            return out
        if isinstance(x, list):
            return [one(y) for y in x]
        return x
    return tuple(one(a) for a in args)
