"""Bad input to models, data, ops and masks (issue 14, items 4 and 5): one MftError with a one-line message.

Covers: an unknown MFT_CPU_PATH, unsupported architectures, a model folder without tokenizer files, a Hub id
with no network, --max-length beyond the position embeddings, suspicious local label columns, --exclude
patterns that match nothing, and tampered mask files. Everything runs offline on tiny models (seconds).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mft_engine
from mft_engine import ops
from mft_engine.cli import main
from mft_engine.data import load_local, sources
from mft_engine.errors import ConfigError, DataError, DataNotFoundError, MaskMismatchError, MftError, ModelError
from mft_engine.masking import Mask, check_exclude_patterns, detrimental_mask
from mft_engine.models import load_model
from mft_engine.models.loading import SUPPORTED_MODEL_TYPES, position_limit
from .conftest import tiny_bert

NO_HUB_ID = "mft-test-nobody/no-such-model"


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


def assert_cli_failure(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mft: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def sst2_folder(root: Path) -> Path:
    d = root / "SST-2"
    d.mkdir(parents=True)
    rows = [f"a {'good' if i % 2 else 'bad'} movie {i} \t{i % 2}" for i in range(16)]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\nfine film \t1\nawful film \t0\n")
    return root


def run_args(model: str, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", model, "--data-dir", str(data_dir), "--samples", "8", "--batch-size", "4",
            "--quiet", "--no-control", "--out", str(out), *extra]


def minilm_tokenizer():
    from transformers import AutoTokenizer

    from mft_engine.models import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


def save_tiny(folder: Path, model_type: str, tokenizer: bool = True, **kw) -> Path:
    """A random tiny sequence classifier of `model_type` (BERT's 30,522-token vocabulary) saved to `folder`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    base = dict(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                num_labels=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type, **{**base, **kw}))
    model.save_pretrained(str(folder))
    if tokenizer:
        minilm_tokenizer().save_pretrained(str(folder))
    return folder


# ---------------------------------------------------------------------------------------- 1. MFT_CPU_PATH


def test_bad_cpu_path_environment_is_one_line_in_a_fresh_process():
    # The extension refuses the value at import; the package must still import and `mft` print one line.
    env = dict(os.environ, MFT_CPU_PATH="bogus", PYTHONPATH=str(Path(mft_engine.__file__).parents[1]))
    res = subprocess.run([sys.executable, "-c", "import sys; from mft_engine.cli import main; sys.exit(main(['info']))"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert_cli_failure(res.returncode, res.stderr, "MFT_CPU_PATH='bogus'", "scalar, avx2, avx512, auto")


def test_refused_cpu_path_blocks_every_kernel_until_set(monkeypatch, capsys):
    monkeypatch.setattr(ops._cpu_env, "env_error", "MFT_CPU_PATH='sse9' is not a CPU path; expected one of "
                                                   "scalar, avx2, avx512, auto")
    with pytest.raises(ops.CpuPathError, match="MFT_CPU_PATH='sse9'") as info:
        ops.cpu_path()
    assert isinstance(info.value, ConfigError)
    one_line(info.value)
    t = torch.ones(4)
    with pytest.raises(ops.CpuPathError):
        ops.detrimental_count([t], [t], 1e-3)
    with pytest.raises(ops.CpuPathError):
        load_model("bert-tiny-random", 2)
    assert_cli_failure(main(["info"]), capsys.readouterr().err, "MFT_CPU_PATH='sse9'")
    previous = ops._C.cpu_path()
    ops.set_cpu_path(previous)  # an explicit choice replaces the environment's
    assert ops.cpu_path() == previous


# ------------------------------------------------------------------------------ 2. unsupported architectures


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config

    folder = tmp_path_factory.mktemp("gpt2")
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(str(folder))
    return folder


def test_gpt2_folder_is_refused_naming_the_supported_types(gpt2_folder):
    with pytest.raises(ModelError) as info:
        load_model(str(gpt2_folder), 2)
    msg = one_line(info.value)
    assert "gpt2" in msg and ", ".join(SUPPORTED_MODEL_TYPES) in msg


def test_gpt2_folder_via_cli(gpt2_folder, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(run_args(str(gpt2_folder), sst2_folder(tmp_path / "g"), out))
    assert_cli_failure(code, capsys.readouterr().err, "gpt2", "bert")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("model_type,kw", [
    ("roberta", dict(pad_token_id=1, max_position_embeddings=66)),
    ("electra", dict(embedding_size=8)),
])
def test_bert_family_folders_load(tmp_path, model_type, kw):
    lm = load_model(str(save_tiny(tmp_path / model_type, model_type, **kw)), 2)
    assert lm.model_type == model_type and lm.kind == "folder" and lm.tokenizer_note is None
    batch = lm.tokenizer(["a fine film"], return_tensors="pt")
    assert lm.model(**batch).logits.shape == (1, 2)


def test_distilbert_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "d", "distilbert", tokenizer=False, dim=8, n_layers=1, n_heads=2, hidden_dim=16)
    with pytest.raises(ModelError, match="distilbert model"):
        load_model(str(folder), 2)


# ------------------------------------------------------------------------------- 3. no tokenizer files


def test_folder_without_tokenizer_says_which_it_falls_back_to(tmp_path, caplog):
    folder = save_tiny(tmp_path / "m", "bert", tokenizer=False)
    with caplog.at_level("WARNING", logger="mft_engine"):
        lm = load_model(str(folder), 2)
    note = one_line(lm.tokenizer_note)
    assert "no tokenizer files" in note and "all-MiniLM-L6-v2" in note and str(folder) in note
    assert "all-MiniLM-L6-v2" in lm.tokenizer_source
    assert any("no tokenizer files" in r.getMessage() for r in caplog.records)


def test_fallback_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    tiny_bert().save_pretrained(str(tmp_path / "m"))  # vocabulary of 100 tokens
    with pytest.raises(ModelError, match=r"vocabulary \(100 tokens\)") as info:
        load_model(str(tmp_path / "m"), 2)
    one_line(info.value)


# ------------------------------------------------------------------------------------ 4. Hub, no network


@pytest.fixture
def hub_down(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout: False)


def test_hub_id_without_network_fails_at_once(hub_down):
    t = time.perf_counter()
    with pytest.raises(ModelError) as info:
        load_model(NO_HUB_ID, 2)
    assert time.perf_counter() - t < 10  # transformers alone retries for ~50 s
    msg = one_line(info.value)
    assert NO_HUB_ID in msg and "not in the Hugging Face cache" in msg and "cannot be reached" in msg


def test_hub_id_with_hub_offline_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        load_model(NO_HUB_ID, 2)


def test_hub_id_via_cli(hub_down, tmp_path, capsys):
    code = main(run_args(NO_HUB_ID, sst2_folder(tmp_path / "g"), tmp_path / "results"))
    assert_cli_failure(code, capsys.readouterr().err, NO_HUB_ID, "cannot be reached")


def test_probe_of_a_closed_endpoint_is_fast(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t = time.perf_counter()
    assert sources.hub_reachable(3.0) is False
    assert time.perf_counter() - t < 3.5
    assert sources.hub_host() == "127.0.0.1"


def test_missing_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "model"), 2)


def test_dataset_hub_failure_is_one_line(monkeypatch):
    import importlib.machinery
    import types

    def load_dataset(name, config, split):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore")

    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataNotFoundError, match="hub:nyu-mll/glue/cola/train") as info:
        sources.load_from_hub("cola", "train")
    one_line(info.value)


# --------------------------------------------------------------------------------------- 5. --max-length


def test_max_length_beyond_position_embeddings():
    with pytest.raises(ConfigError) as info:
        load_model("bert-tiny-random", 2, max_length=513)
    assert one_line(info.value) == "--max-length 513 exceeds the model's max_position_embeddings 512"
    assert load_model("bert-tiny-random", 2, max_length=512).max_tokens == 512


def test_max_length_counts_the_roberta_position_offset(tmp_path):
    folder = save_tiny(tmp_path / "r", "roberta", pad_token_id=1, max_position_embeddings=66)
    with pytest.raises(ConfigError, match=r"--max-length 65 exceeds the model's max_position_embeddings 64 "
                                          r"\(66 position embeddings, 2 reserved"):
        load_model(str(folder), 2, max_length=65)
    assert load_model(str(folder), 2, max_length=64).max_tokens == 64


def test_position_limit_falls_back_to_the_tokenizer():
    from types import SimpleNamespace

    assert position_limit(SimpleNamespace(model_type="x"), SimpleNamespace(model_max_length=256)) == 256
    assert position_limit(SimpleNamespace(model_type="x"), SimpleNamespace(model_max_length=int(1e30))) is None


def test_max_length_via_cli_finetune(tmp_path, capsys):
    code = main(["finetune", "--method", "full", "--model", "bert-tiny-random", "--data-dir",
                 str(sst2_folder(tmp_path / "g")), "--samples", "8", "--max-length", "600", "--quiet",
                 "--out", str(tmp_path / "results")])
    assert_cli_failure(code, capsys.readouterr().err, "--max-length 600", "512")


# ----------------------------------------------------------------------------------- 6. local file labels


def write_labels(path: Path, labels: list) -> Path:
    path.write_text("text,label\n" + "".join(f"row {i},{lab}\n" for i, lab in enumerate(labels)))
    return path


def test_label_summary(tmp_path):
    assert load_local(write_labels(tmp_path / "a.csv", [0, 1] * 10), regression=None).label_summary == \
        "2 classes (0, 1)"
    assert load_local(write_labels(tmp_path / "b.csv", ["neg", "pos", "mid"] * 3)).label_summary == \
        "3 classes (mid, neg, pos)"
    assert load_local(write_labels(tmp_path / "c.csv", [0.5, 1, 2.25] * 3), regression=None).label_summary == \
        "regression (float)"


def test_lone_class_among_thousands_is_an_error(tmp_path):
    labels = [i % 2 for i in range(3000)]
    labels[1500] = 7
    path = write_labels(tmp_path / "train.csv", labels)
    with pytest.raises(DataError) as info:
        load_local(path, regression=None)
    msg = one_line(info.value)
    assert str(path) in msg and "line 1502" in msg and "'7'" in msg


def test_lone_non_integer_among_integers_is_an_error(tmp_path):
    labels = [i % 3 for i in range(2000)]
    labels[10] = 0.5
    path = write_labels(tmp_path / "train.csv", labels)
    with pytest.raises(DataError, match=r"line 12 has label '0.5', the only non-integer") as info:
        load_local(path, regression=None)
    assert str(path) in one_line(info.value)


@pytest.mark.parametrize("labels", [
    [0, 1] * 10 + [2],                     # small file: one row is 5%, a real (if small) class
    [i % 2 for i in range(3000)] + [2] * 5,  # five rows: not "fewer than 5"
    [0.5 * (i % 7) for i in range(3000)],  # a real regression column, half of it integers
    [i % 2 for i in range(999)] + [2],    # 1 of 1000 rows: not under 0.1%
])
def test_legitimate_label_columns_still_load(tmp_path, labels):
    load_local(write_labels(tmp_path / "train.csv", labels), regression=None)


def test_lone_class_via_cli(tmp_path, capsys):
    labels = [i % 2 for i in range(2000)]
    labels[3] = 7
    write_labels(tmp_path / "train.csv", labels)
    write_labels(tmp_path / "dev.csv", [0, 1])
    code = main(["run", "--model", "bert-tiny-random", "--task", str(tmp_path), "--samples", "8", "--batch-size",
                 "4", "--quiet", "--no-control", "--out", str(tmp_path / "results")])
    assert_cli_failure(code, capsys.readouterr().err, "train.csv line 5", "'7'")


# ------------------------------------------------------------------------------------------- 7. --exclude


def test_exclude_pattern_matching_nothing(tiny_model):
    with pytest.raises(ConfigError) as info:
        check_exclude_patterns(tiny_model, "classifer, LayerNorm,nope*")
    msg = one_line(info.value)
    assert "--exclude patterns 'classifer', 'nope*' match no parameter" in msg
    assert "bert.embeddings.word_embeddings.weight" in msg and "classifier.bias" in msg
    check_exclude_patterns(tiny_model, "classifier,*.LayerNorm.*")  # substring and glob both match


def test_exclude_presets_never_error(tmp_path):
    roberta = load_model(str(save_tiny(tmp_path / "r", "roberta", pad_token_id=1)), 2).model  # no pooler
    for preset in ("original", "influence", "none"):
        check_exclude_patterns(roberta, preset)
    with pytest.raises(ConfigError, match="'pooler'"):
        check_exclude_patterns(roberta, ("classifier", "pooler"), flag="exclude")


def test_detrimental_mask_checks_user_patterns(tiny_model):
    grads = {n: torch.ones_like(p) for n, p in tiny_model.named_parameters()}
    with pytest.raises(ConfigError, match="exclude pattern 'poolr'"):
        detrimental_mask(tiny_model, grads, exclude="poolr")
    assert len(detrimental_mask(tiny_model, grads, exclude="pooler")) >= 0


# --------------------------------------------------------------------------------------- 8. tampered masks


@pytest.fixture
def saved_mask(tiny_model, tmp_path):
    names = ["bert.pooler.dense.bias", "classifier.weight"]
    params = dict(tiny_model.named_parameters())
    mask = Mask(names, [tuple(params[n].shape) for n in names], torch.tensor([0, 3, 40, 95]))
    mask.apply(tiny_model).restore(tiny_model)
    path = tmp_path / "mask.safetensors"
    mask.save(path)
    return path


def tamper(path: Path, *, indices=None, values=None, extra=None, meta=None, drop_values=False) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata())
    if indices is not None:
        tensors["indices"] = indices
    if values is not None:
        tensors["values"] = values
    if drop_values:
        tensors.pop("values")
    tensors.update(extra or {})
    if meta is not None:
        metadata["mft_mask"] = meta
    out = path.with_name("tampered.safetensors")
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.mark.parametrize("change,needles", [
    (dict(indices=torch.tensor([0, 3, 40, 96])), ["'indices'", "96", "out of range"]),
    (dict(indices=torch.tensor([-1, 3, 40, 95])), ["'indices'", "negative index -1"]),
    (dict(indices=torch.tensor([0, 40, 3, 95])), ["'indices'", "not strictly ascending", "out of order"]),
    (dict(indices=torch.tensor([0, 3, 3, 95])), ["'indices'", "duplicate"]),
    (dict(indices=torch.tensor([0, 3, 40, 95], dtype=torch.int32)), ["'indices'", "int32"]),
    (dict(indices=torch.tensor([0.0, 3.0, 40.0, 95.0])), ["'indices'", "float32"]),
    (dict(indices=torch.tensor([[0, 3], [40, 95]])), ["'indices'", "(2, 2)"]),
    (dict(values=torch.zeros(3)), ["'values'", "(3,)", "one value per index"]),
    (dict(values=torch.zeros(4, dtype=torch.int64)), ["'values'", "int64"]),
    (dict(extra={"bias": torch.zeros(1)}), ["unknown tensor 'bias'"]),
    (dict(meta="{not json"), ["malformed mft_mask metadata"]),
    (dict(meta=json.dumps({"names": ["a"], "shapes": [[2], [3]]})), ["malformed", "'shapes'"]),
])
def test_tampered_mask_is_refused_at_load(saved_mask, change, needles):
    path = tamper(saved_mask, **change)
    with pytest.raises(MaskMismatchError) as info:
        Mask.load(path)
    msg = one_line(info.value)
    for n in [str(path), *needles]:
        assert n in msg, msg


def test_unreadable_mask_file(tmp_path):
    path = tmp_path / "mask.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(MaskMismatchError, match=f"mask file {path} could not be read"):
        Mask.load(path)


def test_mask_checked_against_the_model_at_apply(saved_mask, tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    other = tiny_bert(num_labels=3)
    with pytest.raises(MaskMismatchError, match=r"classifier.weight of shape \(2, 32\)") as info:
        Mask.load(saved_mask).apply(other)
    assert str(saved_mask) in one_line(info.value)
    renamed = tamper(saved_mask, meta=json.dumps({"names": ["bert.pooler.dense.bias", "head.weight"],
                                                  "shapes": [[32], [2, 32]], "info": {}}))
    with pytest.raises(MaskMismatchError, match="names parameter 'head.weight'"):
        Mask.load(renamed).apply(tiny_model)
    # a mask built in memory with an index past its tensors: refused before any element is zeroed
    bad = Mask(["classifier.bias"], [(2,)], torch.tensor([0, 2]))
    with pytest.raises(MaskMismatchError, match="index 2, out of range for the 2 elements"):
        bad.apply(tiny_model)
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())
    good = Mask.load(saved_mask)
    good.apply(tiny_model)
    good.restore(tiny_model)
    assert all(torch.equal(p, before[n]) for n, p in tiny_model.named_parameters())


def test_every_error_here_is_an_mft_error():
    for cls in (ConfigError, DataError, ModelError, MaskMismatchError, ops.CpuPathError):
        assert issubclass(cls, MftError)
