"""The public API: the README's ten-line example on a plain Hugging Face model, and import hygiene."""
import subprocess
import sys

import torch

import mft_engine

from .conftest import tiny_bert


def test_readme_example_on_a_plain_hf_model(tmp_path):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (4, 7), generator=g)
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([1, 0, 1, 0])}]
    state = mft_engine.collect_gradients(model, batches, train_mode=False)
    mask = mft_engine.detrimental_mask(model, state, lr=2e-5, fraction=0.1)
    mask.apply(model)
    mask.save(tmp_path / "mask.safetensors")
    assert len(mask) > 0
    mask.restore(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_import_needs_no_optional_backend():
    code = ("import sys, mft_engine; bad = [m for m in ('triton', 'gradio', 'torch_xla', 'bitsandbytes', 'peft') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
