"""Data-parallel collection under torchrun (2 processes, gloo, CPU) equals one process within the
stated tolerance; the shards, the per-batch dropout seeding and a failing rank."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mft_engine.collect import GradientState, collect_gradients
from mft_engine.collect.distributed import World, batch_seed, reduce_state, shard
from mft_engine.errors import ConfigError

from . import dist_collect

SCRIPT = Path(dist_collect.__file__)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread here, as each torchrun rank has; the suite's thread count is put back afterwards (other
    tests compare in-process runs with subprocess runs bit for bit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun")
    cmd = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_shards_are_contiguous_disjoint_and_cover_every_batch():
    for n in (2, 7, 8, 9):
        blocks = [shard(n, World(r, 3 if n >= 3 else 2)) for r in range(3 if n >= 3 else 2)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1
    with pytest.raises(ConfigError, match="3 batches cannot be shared by 4 processes"):
        shard(3, World(0, 4))


def test_batch_seed_depends_on_seed_and_index_only():
    assert batch_seed(42, 3) == batch_seed(42, 3)
    assert len({batch_seed(42, i) for i in range(100)} | {batch_seed(43, 0)}) == 101
    assert 0 <= batch_seed(2**32 - 1, 10**9) < 2**63


def test_one_process_is_unchanged_by_reduce_state():
    model, batches = dist_collect.batches()
    state = collect_gradients(model, batches[:2], train_mode=True, dropout_seed=1)
    assert reduce_state(state, World()) is state


def test_a_batch_draws_the_same_dropout_whichever_shard_computes_it():
    model, batches = dist_collect.batches()
    whole = collect_gradients(model, batches[:4], train_mode=True, dropout_seed=7)
    tail = collect_gradients(model, batches[2:4], train_mode=True, dropout_seed=7, first_index=2)
    assert tail.batch_losses == whole.batch_losses[2:]
    other = collect_gradients(model, batches[2:4], train_mode=True, dropout_seed=7)  # wrong offset
    assert other.batch_losses != whole.batch_losses[2:]


def test_two_gloo_processes_equal_one_process(tmp_path):
    out = tmp_path / "state.safetensors"
    r = torchrun(str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    two = GradientState.load(out)
    model, batches = dist_collect.batches()
    one = collect_gradients(model, batches, train_mode=True, dropout_seed=dist_collect.SEED)
    # every batch is computed identically (same inputs, same per-batch dropout, one thread each)
    assert two.batch_losses == one.batch_losses and two.batch_sizes == one.batch_sizes
    assert two.act_tokens == one.act_tokens
    for n in one.names:
        assert torch.equal(two.pos_count[n], one.pos_count[n]) and torch.equal(two.neg_count[n], one.neg_count[n])
        # summation order only: the fp64 sum of two fp32 halves vs one running fp32 sum over 8 batches
        bound = 8 * 2.0**-24 * one.sq_sum[n].sqrt().double() * 8 ** 0.5 + 1e-30
        assert ((two.grad_sum[n].double() - one.grad_sum[n].double()).abs() <= bound).all(), n
        assert torch.allclose(two.sq_sum[n], one.sq_sum[n], rtol=1e-5, atol=0)
    for m in one.act_sq:
        assert torch.allclose(two.act_sq[m], one.act_sq[m], rtol=1e-12, atol=0)
    # two ranks' float32 partials are added once, correctly rounded: the sum in either order, bit for bit
    parts = [GradientState.load(f"{out}.rank{r}") for r in range(2)]
    for n in one.names:
        for kind in ("grad_sum", "sq_sum"):
            a, b = (getattr(p, kind)[n] for p in parts)
            assert torch.equal(getattr(two, kind)[n], a + b) and torch.equal(a + b, b + a), (kind, n)


def test_a_failing_rank_stops_the_launcher_with_its_error(tmp_path):
    out = tmp_path / "state.safetensors"
    r = torchrun(str(out), "fail-rank=1")
    assert r.returncode != 0
    assert "rank 1 failed on purpose" in r.stdout + r.stderr
    assert not out.exists()


def test_cost_shards_are_contiguous_cover_every_batch_and_balance_tokens():
    from mft_engine.collect.distributed import shard_by_cost

    costs = [8 * 60] * 4 + [8 * 10] * 12  # four long batches first, as length-sorted rows give
    blocks = [shard_by_cost(costs, World(r, 2)) for r in range(2)]
    assert [i for b in blocks for i in b] == list(range(16))
    loads = [sum(costs[i] for i in b) for b in blocks]
    assert abs(loads[0] - loads[1]) <= max(costs)  # within one batch, where counting batches gives 1920 vs 640
    assert shard_by_cost(costs, World()) == range(16)
    assert [len(shard_by_cost([1.0, 1e9, 1.0], World(r, 3))) for r in range(3)] == [1, 1, 1]
    # the cut is the boundary nearest the equal share: [4, 1 | 1, 4], not [4, 1, 1 | 4]
    assert [shard_by_cost([4, 1, 1, 4], World(r, 2)) for r in range(2)] == [range(0, 2), range(2, 4)]
    with pytest.raises(ConfigError, match="2 batches cannot be shared by 3 processes"):
        shard_by_cost([1, 1], World(0, 3))


def test_batch_cost_counts_token_slots_of_dicts_and_length_parts():
    from mft_engine.collect.distributed import batch_cost
    from mft_engine.data.batching import Batch

    part = lambda rows, width: {"input_ids": torch.zeros(rows, width, dtype=torch.long),  # noqa: E731
                                "labels": torch.zeros(rows, dtype=torch.long)}
    assert batch_cost(part(4, 30)) == 120
    assert batch_cost(Batch([part(4, 30), part(2, 50)], 6.0)) == 220
    assert batch_cost({"labels": torch.zeros(3)}) == 1
