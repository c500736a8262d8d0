import torch
from torch.nn.utils import prune

from mft_engine.config import EXCLUDE_PRESETS
from mft_engine.masking import eligible_parameters, select_detrimental
from mft_engine.prune import DetrimentalUnstructured, global_detrimental

from ..conftest import tiny_bert
from .test_masking import fake_grads


def test_global_prune_matches_mask():
    model = tiny_bert()
    grads = fake_grads(model)
    names = [n for n, _ in eligible_parameters(model, EXCLUDE_PRESETS["original"]) if n.endswith("weight")
             and "embeddings" not in n and "LayerNorm" not in n]
    named = [(n, model.get_parameter(n)) for n in names]
    sel = select_detrimental(named, grads, 0.5, 0.2)[0]
    mask = sel.mask
    global_detrimental(model, grads, names, amount=0.2, lr=0.5)
    masks = torch.cat([dict(model.named_buffers())[n + "_mask"].reshape(-1) for n in names])
    assert torch.equal(torch.nonzero(masks == 0).reshape(-1), mask.indices)


def test_single_tensor_prune():
    model = tiny_bert()
    lin = model.bert.encoder.layer[0].intermediate.dense
    g = torch.randn_like(lin.weight) * 1e-2
    DetrimentalUnstructured.apply(lin, "weight", amount=0.5, grad=g, lr=0.5)
    assert hasattr(lin, "weight_orig") and hasattr(lin, "weight_mask")
    zeroed = int((lin.weight_mask == 0).sum())
    sel = select_detrimental([("w", lin.weight_orig)], {"w": g}, 0.5, 0.5)[0]
    assert zeroed == sel.k
    prune.remove(lin, "weight")
