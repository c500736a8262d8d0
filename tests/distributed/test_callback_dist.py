"""MftCallback under DDP (torchrun, 2 gloo processes, CPU): the batches split across ranks and reduced
give the one-process mask; rank 0 alone writes; every rank zeroes the same indices, so the replicas stay
identical, also inside a Trainer's DDP run; FSDP and ZeRO-3 are refused in one line."""
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mft_engine import Mask, collect_gradients, detrimental_mask
from mft_engine.errors import ConfigError
from mft_engine.integrations import MftCallback

from . import dist_callback

SCRIPT = Path(dist_callback.__file__)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_callback")
    exe = shutil.which("torchrun")
    cmd = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    done = subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", str(SCRIPT), str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_split_and_reduced_batches_select_the_one_process_mask(ddp_run):
    saved = Mask.load(ddp_run / "masks" / "mask_epoch1.safetensors")
    lm, batches = dist_callback.model_and_batches()
    state = collect_gradients(lm.model, batches, train_mode=False, activation_stats=False)
    direct = detrimental_mask(lm.model, state, lr=1e-3, fraction=0.2)
    assert saved.names == direct.names and len(saved) > 0
    # g is the same sum in another association (2 + 2 batches, fp64 across ranks): on this model no score
    # lies within that rounding of the threshold, so the masks are identical
    assert torch.equal(saved.indices, direct.indices)
    r0 = torch.load(ddp_run / "direct_rank0.pt")
    r1 = torch.load(ddp_run / "direct_rank1.pt")
    assert all(torch.equal(r0[n], r1[n]) for n in r0)
    flat = torch.cat([r0[n].reshape(-1) for n in saved.names])
    assert bool((flat[saved.indices] == 0).all())


def test_rank0_writes_and_replicas_stay_identical_in_a_trainer(ddp_run):
    assert sorted(p.name for p in (ddp_run / "trainer_masks").iterdir()) == [
        "mask_epoch1.json", "mask_epoch1.safetensors", "mask_epoch2.json", "mask_epoch2.safetensors"]
    assert sorted(p.name for p in (ddp_run / "masks").iterdir()) == ["mask_epoch1.json", "mask_epoch1.safetensors"]
    r0 = torch.load(ddp_run / "trainer_rank0.pt")
    r1 = torch.load(ddp_run / "trainer_rank1.pt")
    assert all(torch.equal(r0[n], r1[n]) for n in r0)
    rec0 = torch.load(ddp_run / "trainer_records_rank0.pt")
    rec1 = torch.load(ddp_run / "trainer_records_rank1.pt")
    assert [r["k"] for r in rec0] == [r["k"] for r in rec1] and rec0[0]["world_size"] == 2
    # the last epoch's mask was applied on both ranks after the last step: its weights are zero
    last = Mask.load(ddp_run / "trainer_masks" / "mask_epoch2.safetensors")
    flat = torch.cat([r0[n].reshape(-1) for n in last.names])
    assert bool((flat[last.indices] == 0).all())


@pytest.mark.parametrize("args", [SimpleNamespace(fsdp=["full_shard"])])
def test_fsdp_is_refused_in_one_line(args):
    with pytest.raises(ConfigError, match="cannot run under FSDP or DeepSpeed ZeRO-3") as e:
        MftCallback().on_train_begin(args, None, None)
    assert "\n" not in str(e.value)
    assert MftCallback().on_train_begin(SimpleNamespace(fsdp=[]), None, "control") == "control"
