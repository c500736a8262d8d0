import pytest
import torch

from mft_engine.config import EXCLUDE_PRESETS
from mft_engine.errors import MaskMismatchError, NonFiniteError
from mft_engine.masking import Mask, eligible_parameters, is_excluded, random_mask, select_detrimental
from mft_engine.masking.selection import k_for
from mft_engine.ops import reference as ref

from ..conftest import tiny_bert


def fake_grads(model, seed=0, scale=1e-2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) * scale for n, p in model.named_parameters()}


def test_k_is_ceil_of_exact_decimal_product():
    assert k_for(0.1, 30) == 3
    assert k_for(0.1, 31) == 4
    assert k_for(1.0, 7) == 7
    assert k_for(0.01, 0) == 0
    assert k_for(0.3, 10) == 3


def test_presets():
    names = ["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.output.LayerNorm.weight",
             "bert.encoder.layer.0.attention.self.query.weight", "bert.pooler.dense.weight", "classifier.bias"]
    orig = [n for n in names if not is_excluded(n, EXCLUDE_PRESETS["original"])]
    infl = [n for n in names if not is_excluded(n, EXCLUDE_PRESETS["influence"])]
    assert orig == names[:3]
    assert infl == [names[2]]
    assert not is_excluded(names[2], ("*.layer.1.*",)) and is_excluded(names[2], ("*.layer.0.*",))


@pytest.mark.parametrize("rank_by", ["shrink", "update"])
@pytest.mark.parametrize("literal", [False, True])
def test_selection_equals_reference(rank_by, literal):
    model = tiny_bert()
    grads = fake_grads(model)
    named = eligible_parameters(model, EXCLUDE_PRESETS["original"])
    sels = select_detrimental(named, grads, 0.5, [0.05, 0.5, 1.0], rank_by, literal)
    thetas = [p.detach() for _, p in named]
    gs = [grads[n] for n, _ in named]
    n_det = int(sum(int(ref.reference_detrimental_count([t], [g], 0.5, literal=literal).sum()) for t, g in zip(thetas, gs)))
    for s in sels:
        assert s.n_detrimental_eligible == n_det
        assert s.k == k_for(s.fraction, n_det)
        idx, thr, tied = ref.reference_select_topk(thetas, gs, 0.5, s.k, rank_by=rank_by, literal=literal)
        assert torch.equal(s.mask.indices, idx)


def test_apply_restore_is_exact_and_zeroes(tmp_path):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    named = eligible_parameters(model, EXCLUDE_PRESETS["original"])
    sel = select_detrimental(named, fake_grads(model), 0.5, 0.1)[0]
    mask = sel.mask.apply(model)
    counts = mask.per_tensor_counts()
    assert sum(counts.values()) == sel.k > 0
    flat = torch.cat([model.get_parameter(n).detach().reshape(-1) for n in mask.names])
    assert torch.all(flat[mask.indices] == 0)
    changed = sum(int((model.get_parameter(n) != before[n]).sum()) for n in mask.names)
    assert changed <= sel.k
    mask.save(tmp_path / "m.safetensors")
    mask.restore(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    loaded = Mask.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.indices, mask.indices) and torch.equal(loaded.values, mask.values)
    loaded.apply(model)
    loaded.restore(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_mask_on_another_model_is_refused(tmp_path):
    model = tiny_bert()
    named = eligible_parameters(model, EXCLUDE_PRESETS["original"])
    mask = select_detrimental(named, fake_grads(model), 0.5, 0.1)[0].mask
    mask.save(tmp_path / "m.safetensors")
    other = tiny_bert(num_labels=2)
    other.bert.encoder.layer[1].output.dense = torch.nn.Linear(64, 16)
    with pytest.raises(MaskMismatchError, match="shape"):
        Mask.load(tmp_path / "m.safetensors").apply(other)
    (tmp_path / "bad.safetensors").write_bytes(b"not a mask")
    with pytest.raises(MaskMismatchError):
        Mask.load(tmp_path / "bad.safetensors")


def test_nonfinite_gradient_names_the_parameter():
    model = tiny_bert()
    grads = fake_grads(model)
    grads["bert.encoder.layer.1.intermediate.dense.weight"][3, 2] = float("nan")
    named = eligible_parameters(model, EXCLUDE_PRESETS["original"])
    with pytest.raises(NonFiniteError, match="bert.encoder.layer.1.intermediate.dense.weight"):
        select_detrimental(named, grads, 0.5, 0.1)


def test_random_control_is_uniform_and_seeded():
    model = tiny_bert()
    named = eligible_parameters(model, EXCLUDE_PRESETS["original"])
    a = random_mask(named, 500, seed=3)
    b = random_mask(named, 500, seed=3)
    assert torch.equal(a.indices, b.indices)
    assert a.indices.unique().numel() == 500
    assert bool((a.indices[1:] > a.indices[:-1]).all())
    assert int(a.indices.max()) < sum(p.numel() for _, p in named)
