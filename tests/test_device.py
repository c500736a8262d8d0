"""--device: resolution against what the machine has, one line and exit 2 for a device it lacks (nothing
written) in every pipeline, and the device-generic path as the CPU runs it (results.json's device entry,
one device per op call)."""
from __future__ import annotations

import json

import pytest
import torch

from mft_engine import ops
from mft_engine.cli import main
from mft_engine.collect import GradientState
from mft_engine.device import (MemoryPeaks, check_device_spec, device_summary, resolve_device, to_device)
from mft_engine.errors import ConfigError

from .cli.test_bad_input import sst2_folder


@pytest.mark.parametrize("spec", ["cpu", "auto"])
def test_cpu_and_auto_resolve_to_cpu_without_cuda(spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto resolves to it")
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec,needle", [
    ("gpu", "'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("cuda:", "'cuda:' is not one of"),
    ("cuda:-1", "'cuda:-1' is not one of"),
    ("CPU", "'CPU' is not one of"),
    ("xla:0", "'xla:0' is not one of"),
])
def test_bad_spec_is_one_line_naming_it(spec, needle):
    with pytest.raises(ConfigError, match="--device") as e:
        check_device_spec(spec)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA build of torch with one visible device, as far as resolve_device can tell."""
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    kernels = {"CUDA": True}
    real = torch._C._dispatch_has_kernel_for_dispatch_key
    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key",
                        lambda op, key: kernels.get(key, False) if op.startswith("mft::") else real(op, key))
    return kernels


def test_cuda_resolution_on_a_one_gpu_machine(fake_cuda):
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--device cuda:7: this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:7")
    # under torchrun, cuda means cuda:LOCAL_RANK
    with pytest.raises(ConfigError, match="cuda:1: this machine has 1"):
        resolve_device("cuda", local_rank=1)


def test_cuda_without_triton_kernels_names_the_extra(fake_cuda):
    fake_cuda["CUDA"] = False
    with pytest.raises(ConfigError, match=r"pip install 'mft_engine\[gpu\]'"):
        resolve_device("cuda")


def test_xla_without_torch_xla_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch_xla", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"--device xla: torch_xla is not installed \(pip install 'mft_engine\[xla\]'"):
        resolve_device("xla")


def test_cuda_on_a_cpu_only_torch(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"CPU-only build.*--device cpu"):
        resolve_device("cuda:0")


def test_cuda_invisible(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        resolve_device("cuda")


TINY = ["--model", "bert-tiny-random", "--quiet"]


def _commands(data: str, out: str) -> dict[str, list[str]]:
    common = [*TINY, "--data-dir", data, "--out", out]
    return {
        "run": ["run", *common, "--samples", "8", "--batch-size", "4"],
        "finetune": ["finetune", *common, "--samples", "8", "--max-steps", "1"],
        "sweep": ["sweep", *common, "--samples", "8", "--max-steps", "1", "--grid", "lr=1e-4,2e-4"],
        "study": ["study", "few-shot", *common, "--max-steps", "1"],
        "validate-scorer": ["validate-scorer", *common, "--samples", "8"],
        "influence": ["influence", *common, "--samples", "8"],
        "fit-influence": ["fit-influence", *common, "--samples", "8"],
    }


@pytest.mark.parametrize("command", ["run", "finetune", "sweep", "study", "validate-scorer", "influence",
                                     "fit-influence"])
def test_every_pipeline_refuses_a_missing_device_in_one_line(tmp_path, capsys, command):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = str(sst2_folder(tmp_path / "g"))
    out = tmp_path / "results"
    args = _commands(data, str(out))[command]
    for device in ("cuda", "cuda:3"):
        code = main([*args, "--device", device])
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == 2, err
        assert len(lines) == 1 and f"--device {device}" in lines[0] and "Traceback" not in err, err
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


@pytest.mark.parametrize("bench", [["zeroing", "--model", "bert-tiny-random"], ["collect"], ["hvp"], ["cg"]])
def test_bench_refuses_a_missing_device(capsys, bench):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", *bench, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda" in err, err
    assert main(["bench", *bench, "--device", "tpu"]) == 2
    assert "'tpu' is not one of" in capsys.readouterr().err


def test_run_records_the_device_and_peak_memory_per_phase(tmp_path, capsys):
    data = str(sst2_folder(tmp_path / "g"))
    assert main(["run", *TINY, "--data-dir", data, "--out", str(tmp_path / "r"), "--samples", "8",
                 "--batch-size", "4", "--device", "cpu", "--no-control"]) == 0
    folder = next((tmp_path / "r").iterdir())
    record = json.loads((folder / "results.json").read_text())
    dev = record["device"]
    assert dev["device"] == "cpu" and dev["total_memory_bytes"] > 0
    peaks = dev["peak_memory"]["bytes"]
    assert list(peaks) == ["evaluate-before", "collect", "select", "evaluate-after"]
    assert all(v > 0 for v in peaks.values())
    # a high-water mark: never falls from one phase to the next
    assert list(peaks.values()) == sorted(peaks.values())
    assert record["config"]["device"] == "cpu"
    assert "device cpu" in (folder / "summary.txt").read_text()


def test_ops_refuse_tensors_on_two_devices():
    cpu = torch.ones(4)
    meta = torch.ones(4, device="meta")
    with pytest.raises(ValueError, match="tensors on two devices, cpu and meta"):
        ops.select_topk([cpu], [meta], 1e-3, 1)
    with pytest.raises(ValueError, match="two devices"):
        ops.zero_masked_([cpu], torch.zeros(1, dtype=torch.int64, device="meta"))
    with pytest.raises(ValueError, match="two devices"):
        ops.detrimental_count([cpu, meta], [cpu, cpu], 1e-3)


def test_state_moves_between_devices_and_keeps_its_sums():
    named = [("w", torch.ones(3, 2)), ("b", torch.ones(2))]
    st = GradientState.zeros_like(named, {"x": 1})
    st.grad_sum["w"] += 2
    st.act_sq["lin"] = torch.ones(2, dtype=torch.float64)
    assert st.to("cpu") is st  # already there: no copy
    meta = st.to("meta")
    assert meta.grad_sum["w"].device.type == "meta" and meta.act_sq["lin"].device.type == "meta"
    assert meta.names == st.names and meta.meta == st.meta


def test_to_device_moves_tensors_only():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "note": "x"}
    moved = to_device(batch, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta" and moved["note"] == "x"
    assert batch["input_ids"].device.type == "cpu"


def test_memory_peaks_on_cpu_name_their_measure():
    peaks = MemoryPeaks(torch.device("cpu"))
    with peaks.phase("a"):
        x = torch.ones(1 << 20)
    del x
    d = device_summary(torch.device("cpu"), peaks)
    assert d["peak_memory"]["bytes"]["a"] > 4 << 20
    assert "ru_maxrss" in d["peak_memory"]["measure"]


def test_memory_peaks_record_phases_one_after_another_on_cuda(monkeypatch):
    """On CUDA each phase's figure is the allocator's peak since the previous phase ended (faked here: the
    same calls a CUDA run makes, against a counter)."""
    state = {"peak": 100}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: state.update(peak=10))
    peaks = MemoryPeaks(torch.device("cuda", 0))
    peaks.record("prepare")                 # since the process started
    state["peak"] = 50
    peaks.record("ground_truth")
    peaks.record("scorers")                 # nothing allocated since: the level the reset left
    with peaks.phase("block"):
        state["peak"] = 70
    assert peaks.bytes == {"prepare": 100, "ground_truth": 50, "scorers": 10, "block": 70}
    assert "max_memory_allocated" in peaks.to_dict()["measure"]
