"""Every Triton kernel under the Triton interpreter (conftest.py), on CPU tensors, called directly, against
ops.reference on the same sample_inputs() as the CPU kernel tests: ties, ±0, subnormals, the 2|θ|
boundary, empty and non-contiguous tensors, fp16/bf16 and mixed dtypes, k = 0 and k = all; plus tiles
small enough that one tensor spans many programs, many small tensors in one launch, Inf/NaN, and the
same exception types as the C++ kernels on bad input. Bit-exact comparisons throughout."""
from __future__ import annotations

import pytest
import torch

from mft_engine.ops import reference as ref
from mft_engine.ops.triton import (
    accumulate,
    detrimental_count,
    detrimental_score,
    select_topk,
    zero_masked,
    zero_topk,
)

from ..sample_inputs import (
    assert_bits_equal,
    clone_args,
    make_tensor,
    sample_inputs_accumulate,
    sample_inputs_detrimental_count,
    sample_inputs_detrimental_score,
    sample_inputs_select_topk,
    sample_inputs_zero_masked,
    sample_inputs_zero_topk,
)

SELECT = sample_inputs_select_topk()
ZERO = sample_inputs_zero_topk()
# tiles of 2 x 16 elements: the larger lists span dozens of programs per tensor, so the prefix sums
# across programs and the ties split between programs are exercised
SMALL_TILES = {"block": 16, "steps": 2}


def _check_select(sample, **tiles) -> None:
    idx, thr, tied = select_topk.select_topk(*sample.args, **sample.kwargs, **tiles)
    e_idx, e_thr, e_tied = ref.reference_select_topk(*sample.args, **sample.kwargs)
    assert idx.dtype == torch.int64 and thr.dtype == torch.float64 and tied.dtype == torch.int64
    assert thr.dim() == 0 and tied.dim() == 0
    assert torch.equal(idx, e_idx), sample.desc
    assert_bits_equal(thr, e_thr, sample.desc)
    assert int(tied) == int(e_tied), sample.desc


def _check_zero(sample, **tiles) -> None:
    got_args, want_args = clone_args(sample.args), clone_args(sample.args)
    idx, values, thr, tied = zero_topk.zero_topk_(*got_args, **sample.kwargs, **tiles)
    e_idx, e_values, e_thr, e_tied = ref.reference_zero_topk_(*want_args, **sample.kwargs)
    assert torch.equal(idx, e_idx), sample.desc
    assert_bits_equal(values, e_values, sample.desc)
    assert_bits_equal(thr, e_thr, sample.desc)
    assert int(tied) == int(e_tied), sample.desc
    for got, want in zip(got_args[0], want_args[0]):
        assert_bits_equal(got, want, sample.desc)
    # and restore_ puts every theta back bit for bit
    zero_masked.restore_(got_args[0], idx, values)
    for got, orig in zip(got_args[0], sample.args[0]):
        assert_bits_equal(got, orig, sample.desc)


# ---- element-wise ops ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", sample_inputs_detrimental_score(), ids=repr)
def test_detrimental_score_matches_reference(sample):
    assert_bits_equal(detrimental_score.detrimental_score(*sample.args),
                      ref.reference_detrimental_score(*sample.args), sample.desc)


@pytest.mark.parametrize("sample", sample_inputs_accumulate(), ids=repr)
def test_accumulate_matches_reference(sample):
    got, want = clone_args(sample.args), clone_args(sample.args)
    accumulate.accumulate_(*got)
    ref.reference_accumulate_(*want)
    for a, b in zip(got[:4], want[:4]):
        assert_bits_equal(a, b, sample.desc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_accumulate_propagates_nan_and_inf_as_the_cpu_kernel(dtype):
    # Against the C++ kernel, not the reference: torch's own float16 -> float32 conversion turns the NaN
    # 0x7e00 into 0x7fffffff, the kernels (csrc half_to_float) into 0x7fc00000. A GPU may return its
    # canonical NaN from the additions: NaN bits are only checked here, under the interpreter.
    grad = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40, 2.0]).to(dtype)
    args = (torch.ones(6), torch.ones(6), torch.ones(6, dtype=torch.int32), torch.ones(6, dtype=torch.int32), grad)
    got, want = clone_args(args), clone_args(args)
    accumulate.accumulate_(*got)
    torch.ops.mft.accumulate_.default(*want)
    for a, b in zip(got[:4], want[:4]):
        assert_bits_equal(a, b, str(dtype))


# ---- list ops -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", sample_inputs_detrimental_count(), ids=repr)
def test_detrimental_count_matches_reference(sample):
    assert torch.equal(detrimental_count.detrimental_count(*sample.args),
                       ref.reference_detrimental_count(*sample.args)), sample.desc


@pytest.mark.parametrize("sample", sample_inputs_detrimental_count()[2::9], ids=repr)
def test_detrimental_count_with_small_tiles(sample):
    assert torch.equal(detrimental_count.detrimental_count(*sample.args, **SMALL_TILES),
                       ref.reference_detrimental_count(*sample.args)), sample.desc


@pytest.mark.parametrize("sample", SELECT, ids=repr)
def test_select_topk_matches_reference(sample):
    _check_select(sample)


@pytest.mark.parametrize("sample", SELECT[8::10], ids=repr)
def test_select_topk_with_small_tiles(sample):
    _check_select(sample, **SMALL_TILES)


@pytest.mark.parametrize("sample", ZERO, ids=repr)
def test_zero_topk_matches_reference(sample):
    _check_zero(sample)


@pytest.mark.parametrize("sample", ZERO[9::10], ids=repr)
def test_zero_topk_with_small_tiles(sample):
    _check_zero(sample, **SMALL_TILES)


@pytest.mark.parametrize("k", [1, 32, 33, 500])
def test_ties_split_across_programs_go_to_the_lower_index(k):
    # 500 equal scores over two tensors and 16 programs: the k chosen are the first k in flat order
    # (32 ends exactly at a program boundary, 33 one past it)
    thetas = [torch.ones(300), -torch.ones(200)]
    grads = [torch.ones(300), -torch.ones(200)]
    for run in (select_topk.select_topk, zero_topk.zero_topk_):
        out = run([t.clone() for t in thetas], grads, 0.5, k, "shrink", False, **SMALL_TILES)
        assert torch.equal(out[0], torch.arange(k)), run.__name__
        assert out[-2].item() == 0.5 and int(out[-1]) == 500


def test_many_small_tensors_in_one_launch():
    # 200 tensors (a seventh empty), three dtypes interleaved, non-contiguous ones among them: one launch
    # per pass covers them all
    shapes = [(i % 5, 3) if i % 7 else (0,) for i in range(200)]
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    thetas = [make_tensor(s, dtypes[i % 3], "ties" if i % 2 else "normal", i, "theta", 1.0, i % 4 == 1)
              for i, s in enumerate(shapes)]
    grads = [make_tensor(s, dtypes[(i + 1) % 3], "ties" if i % 2 else "normal", i, "grad", 1.0, i % 4 == 1)
             for i, s in enumerate(shapes)]
    counts = detrimental_count.detrimental_count(thetas, grads, 1.0, False)
    assert torch.equal(counts, ref.reference_detrimental_count(thetas, grads, 1.0))
    k = int(counts.sum()) // 3
    idx, thr, tied = select_topk.select_topk(thetas, grads, 1.0, k, "update", False)
    e_idx, e_thr, e_tied = ref.reference_select_topk(thetas, grads, 1.0, k, "update")
    assert torch.equal(idx, e_idx)
    assert_bits_equal(thr, e_thr)
    assert int(tied) == int(e_tied)


@pytest.mark.parametrize("sample", sample_inputs_zero_masked(), ids=repr)
def test_zero_masked_and_restore_match_reference(sample):
    got, want = clone_args(sample.args), clone_args(sample.args)
    saved = zero_masked.zero_masked_(*got)
    assert_bits_equal(saved, ref.reference_zero_masked_(*want), sample.desc)
    for a, b in zip(got[0], want[0]):
        assert_bits_equal(a, b, sample.desc)
    zero_masked.restore_(got[0], got[1], saved)
    for a, b in zip(got[0], sample.args[0]):
        assert_bits_equal(a, b, sample.desc)


def test_zero_masked_moves_bits_exactly():
    # NaN payloads, -0.0 and subnormals come back as they were: the kernel copies bits, not values
    bits = torch.tensor([0x7FC00001, -2147483648, 1, 0x3F800000], dtype=torch.int32)
    params = [bits.view(torch.float32).clone(), torch.tensor([-0.0, 5.0], dtype=torch.float16)]
    orig = [p.clone() for p in params]
    params16 = [params[1]]
    saved = zero_masked.zero_masked_([params[0]], torch.tensor([0, 1, 2]))
    assert_bits_equal(saved, orig[0][:3])
    zero_masked.restore_([params[0]], torch.tensor([0, 1, 2]), saved)
    assert_bits_equal(params[0], orig[0])
    saved16 = zero_masked.zero_masked_(params16, torch.tensor([0]))
    assert_bits_equal(saved16, orig[1][:1])


# ---- Inf/NaN and bad input ------------------------------------------------------------------------------------

def _with_nonfinite():
    thetas = [make_tensor((6, 5), torch.float32, "normal", i) for i in range(3)]
    grads = [make_tensor((6, 5), torch.bfloat16, "normal", i, "grad") for i in range(3)]
    thetas[2][1, 1] = float("inf")
    grads[1][4, 0] = float("nan")
    return thetas, grads


def test_nonfinite_input_names_the_first_bad_element_and_writes_nothing():
    thetas, grads = _with_nonfinite()
    message = "non-finite value in grads[1] at element 20"
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        detrimental_count.detrimental_count(thetas, grads, 1.0, False)
    for k in (0, 3):
        with pytest.raises(RuntimeError, match=r"grads\[1\] at element 20"):
            select_topk.select_topk(thetas, grads, 1.0, k, "shrink", False)
        before = [t.clone() for t in thetas]
        with pytest.raises(RuntimeError, match=r"grads\[1\] at element 20"):
            zero_topk.zero_topk_(thetas, grads, 1.0, k, "shrink", False)
        for t, b in zip(thetas, before):
            assert_bits_equal(t, b)
    with pytest.raises(RuntimeError, match="non-finite value in theta at element 6"):
        detrimental_score.detrimental_score(thetas[2], grads[2], 1.0, "shrink", False)


def test_nonfinite_message_is_the_cpu_kernels():
    thetas, grads = _with_nonfinite()
    with pytest.raises(RuntimeError) as cpu:
        torch.ops.mft.select_topk.default(thetas, grads, 1.0, 2, "shrink", False, 0)
    with pytest.raises(RuntimeError) as tri:
        select_topk.select_topk(thetas, grads, 1.0, 2, "shrink", False)
    assert str(tri.value) == str(cpu.value).splitlines()[0]


def _pair(n=6, dtype=torch.float32):
    return make_tensor((n,), dtype, "normal", 1), make_tensor((n,), dtype, "normal", 1, "grad")


def _bad_inputs():
    """(id, op, factory of fresh arguments): fresh per call so that aliasing cases keep their aliases."""
    t, g = _pair()
    t16, g16 = _pair(dtype=torch.float16)

    def acc(*shape_and_dtypes):
        return lambda: tuple(torch.zeros(s, dtype=d) for s, d in shape_and_dtypes)

    return [
        ("score lr=0", "detrimental_score", lambda: (t, g, 0.0, "shrink", False)),
        ("score lr overflows fp32", "detrimental_score", lambda: (t, g, 1e39, "shrink", False)),
        ("score rank_by", "detrimental_score", lambda: (t, g, 0.5, "biggest", False)),
        ("score shape", "detrimental_score", lambda: (t, g[:5], 0.5, "shrink", False)),
        ("score int dtype", "detrimental_score", lambda: (t.to(torch.int32), g, 0.5, "shrink", False)),
        ("count lengths", "detrimental_count", lambda: ([t, t], [g], 0.5, False)),
        ("count float64", "detrimental_count", lambda: ([t.double()], [g], 0.5, False)),
        ("select k<0", "select_topk", lambda: ([t], [g], 0.5, -1, "shrink", False, 0)),
        ("select k too big", "select_topk", lambda: ([t], [g], 0.5, 7, "shrink", False, 0)),
        ("zero dtypes differ", "zero_topk_", lambda: ([t.clone(), t16.clone()], [g, g16], 0.5, 1, "shrink", False, 0)),
        ("zero non-contiguous", "zero_topk_",
         lambda: ([torch.ones((4, 2))[:, 0]], [torch.ones(4)], 0.5, 1, "shrink", False, 0)),
        ("zero theta is a grad", "zero_topk_", lambda: ([t.clone(), t16], [g, t16], 0.5, 1, "shrink", False, 0)),
        ("zero thetas alias", "zero_topk_", lambda: ([t, t], [g, g], 0.5, 1, "shrink", False, 0)),
        ("mask order", "zero_masked_", lambda: ([t.clone()], torch.tensor([0, 3, 3]))),
        ("mask range", "zero_masked_", lambda: ([t.clone()], torch.tensor([0, 6]))),
        ("mask negative", "zero_masked_", lambda: ([t.clone()], torch.tensor([-1, 2]))),
        ("mask int32 indices", "zero_masked_", lambda: ([t.clone()], torch.tensor([0], dtype=torch.int32))),
        ("mask 2-D indices", "zero_masked_", lambda: ([t.clone()], torch.tensor([[0]]))),
        ("mask dtypes differ", "zero_masked_", lambda: ([t.clone(), t16.clone()], torch.tensor([0]))),
        ("restore dtype", "restore_", lambda: ([t.clone()], torch.tensor([0]), torch.zeros(1, dtype=torch.float16))),
        ("restore length", "restore_", lambda: ([t.clone()], torch.tensor([0]), torch.zeros(2))),
        ("restore order", "restore_", lambda: ([t.clone()], torch.tensor([2, 1]), torch.zeros(2))),
        ("accumulate dtype", "accumulate_", acc((3, torch.float32), (3, torch.float32), (3, torch.float32),
                                                (3, torch.int32), (3, torch.float32))),
        ("accumulate shape", "accumulate_", acc((3, torch.float32), (3, torch.float32), (3, torch.int32),
                                                (3, torch.int32), (4, torch.float32))),
    ]


def _tensors(args) -> list[torch.Tensor]:
    return [x for a in args for x in (a if isinstance(a, list) else [a]) if isinstance(x, torch.Tensor)]


TRITON_OF = {"detrimental_score": detrimental_score.detrimental_score,
             "detrimental_count": detrimental_count.detrimental_count, "select_topk": select_topk.select_topk,
             "zero_topk_": zero_topk.zero_topk_, "zero_masked_": zero_masked.zero_masked_,
             "restore_": zero_masked.restore_, "accumulate_": accumulate.accumulate_}


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_bad_input_raises_what_the_cpu_kernel_raises_and_writes_nothing(case):
    _, op, make = case
    with pytest.raises(Exception) as cpu:
        getattr(torch.ops.mft, op).default(*make())
    mine = make()
    before = [x.clone() for x in _tensors(mine)]
    with pytest.raises(Exception) as tri:
        TRITON_OF[op](*mine)
    assert type(tri.value) is type(cpu.value), (str(cpu.value), str(tri.value))
    for b, a in zip(before, _tensors(mine)):
        assert torch.equal(a, b), case[0]


@pytest.mark.parametrize("name", ["count", "order", "range"])
def test_messages_are_the_cpu_kernels(name):
    t, g = _pair()
    call = {"count": ("select_topk", ([t], [g], 0.5, 7, "shrink", False, 0)),
            "order": ("zero_masked_", ([t.clone()], torch.tensor([1, 4, 2]))),
            "range": ("zero_masked_", ([t.clone()], torch.tensor([1, 6])))}[name]
    with pytest.raises(Exception) as cpu:
        getattr(torch.ops.mft, call[0]).default(*call[1])
    with pytest.raises(Exception) as tri:
        TRITON_OF[call[0]](*call[1])
    assert str(tri.value) == str(cpu.value).splitlines()[0]
