"""Typed configs (issue 14, part 3) and integer range checks (part 4): a wrongly typed or out-of-range value
is one ConfigError line naming the field, never a traceback later."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mft_engine.cli import main
from mft_engine.config import COUNT_MAX, SEED_MAX, RunConfig, check_field_types
from mft_engine.errors import ConfigError
from mft_engine.train import FinetuneConfig


@dataclass
class Example:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str = "x"
    maybe: int | None = None
    names: list[str] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)
    table: dict[str, list[int]] = field(default_factory=dict)


@pytest.mark.parametrize("data", [
    {"count": 3}, {"count": 64.0}, {"rate": 1}, {"rate": 2e-5}, {"flag": True}, {"name": "y"},
    {"maybe": None}, {"maybe": 4}, {"names": ["a", "b"]}, {"names": "a,b"}, {"names": []},
    {"numbers": [0.1, 1]}, {"numbers": 0.5}, {"numbers": "0.1,0.2"}, {"table": {"a": [1, 2]}},
    {"not_a_field": object()},  # unknown keys are the caller's (from_dict names them)
])
def test_values_of_the_declared_type_pass(data):
    check_field_types(Example, data)


@pytest.mark.parametrize("data,message", [
    ({"count": "abc"}, "config field count: expected an integer, got 'abc' (str)"),
    ({"count": True}, "config field count: expected an integer, got True (bool)"),
    ({"count": 1.5}, "config field count: expected an integer, got 1.5 (float)"),
    ({"count": None}, "config field count: expected an integer, got null"),
    ({"rate": "fast"}, "config field rate: expected a number, got 'fast' (str)"),
    ({"rate": False}, "config field rate: expected a number, got False (bool)"),
    ({"flag": "yes"}, "config field flag: expected true or false, got 'yes' (str)"),
    ({"flag": 1}, "config field flag: expected true or false, got 1 (int)"),
    ({"name": 3}, "config field name: expected a string, got 3 (int)"),
    ({"maybe": "4"}, "config field maybe: expected an integer or null, got '4' (str)"),
    ({"names": [1]}, "config field names: expected a list of strings, got 1 (int) at item 1"),
    ({"numbers": [0.1, "x"]}, "config field numbers: expected a list of numbers, got 'x' (str) at item 2"),
    ({"numbers": {"a": 1}}, "config field numbers: expected a list of numbers, got {'a': 1} (dict)"),
    ({"table": {"a": ["1"]}}, "config field table: expected a mapping of a string to a list of integers, "
                              "got '1' (str) at item 1 at key 'a'"),
])
def test_a_mismatch_is_one_line_naming_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        check_field_types(Example, data)
    assert str(info.value) == message


def test_run_config_from_dict_checks_types_and_unknown_keys():
    with pytest.raises(ConfigError, match="config field samples: expected an integer"):
        RunConfig.from_dict({"samples": "64"})
    with pytest.raises(ConfigError, match="unknown config field"):
        RunConfig.from_dict({"sample": 64})
    cfg = RunConfig.from_dict({"samples": 64.0, "batch_size": 8, "fraction": "0.1,0.2"})
    assert cfg.data.samples == 64 and type(cfg.data.samples) is int and list(cfg.selection.fractions) == [0.1, 0.2]
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # lr_fp32 in to_dict() is accepted


def test_finetune_config_from_dict_checks_types():
    with pytest.raises(ConfigError, match="config field lora_rank: expected an integer, got '8' "):
        FinetuneConfig.from_dict({"lora_rank": "8"})
    with pytest.raises(ConfigError, match="config field samples: expected an integer or null"):
        FinetuneConfig.from_dict({"samples": [1]})
    assert FinetuneConfig.from_dict({"samples": None, "save_at": "0.6,0.7"}).save_at == [0.6, 0.7]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needle", [
    ("samples: abc\n", "config field samples: expected an integer, got 'abc' (str)"),
    ("samples: 8.5\n", "config field samples: expected an integer, got 8.5 (float)"),
    ("lr: fast\n", "config field lr: expected a number, got 'fast' (str)"),
    ("keep-last: maybe\n", "config field keep_last: expected true or false, got 'maybe' (str)"),
    ("fraction: [0.1, x]\n", "config field fraction: expected a list of numbers, got 'x' (str) at item 2"),
    ("model: [a, b]\n", "config field model: expected a string, got ['a', 'b'] (list)"),
    ("data_dir: 3\n", "config field data_dir: expected a string or null, got 3 (int)"),
    ("bogus: 1\n", "unknown config field(s) bogus"),
    ("1: 2\n", "key 1 is not a field name"),
    ("seed: -1\n", "--seed -1 must be in [0, 2**32-1]"),
])
def test_run_config_yaml_values_are_checked_before_flags_merge(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(write(tmp_path, text), {"samples": 16})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_yaml_numbers_in_exponent_form_are_floats(tmp_path):
    # YAML 1.1 reads 2e-5 as a string; every user means a number
    cfg = RunConfig.from_yaml(write(tmp_path, "lr: 2e-5\nsamples: 6.4e1\nbatch_size: 8\n"))
    assert cfg.selection.lr == 2e-5 and cfg.data.samples == 64 and type(cfg.data.samples) is int
    assert RunConfig.from_yaml(write(tmp_path, "lr: 1.5E-4\n")).selection.lr == 1.5e-4
    with pytest.raises(ConfigError, match="config field lr"):
        RunConfig.from_yaml(write(tmp_path, "lr: '2e-5'\n"))  # quoted: a string on purpose


def test_a_flag_overrides_a_wrongly_typed_file_value_only_after_the_file_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="config field samples"):
        RunConfig.from_yaml(write(tmp_path, "samples: many\n"), {"samples": 16})
    assert RunConfig.from_yaml(write(tmp_path, "samples: 32\nbatch_size: 8\n"), {"samples": 16}).data.samples == 16


def test_mft_run_config_with_a_wrong_type_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["run", "--model", "bert-tiny-random", "--quiet", "--out", str(out),
                 "--config", str(write(tmp_path, "batch_size: eight\n"))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "config field batch_size: expected an integer, got 'eight' (str)" in err
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------- integer ranges

@pytest.mark.parametrize("kw,needle", [
    (dict(seed=-1), "--seed -1 must be in [0, 2**32-1]"),
    (dict(seed=SEED_MAX + 1), "--seed 4294967296 must be in [0, 2**32-1]"),
    (dict(seed=10**20), "--seed 100000000000000000000 must be in [0, 2**32-1]"),
    (dict(samples=COUNT_MAX + 1), "--samples 9223372036854775808 must be <= 2**63-1"),
    (dict(samples=0), "--samples 0 must be >= 1"),
    (dict(batch_size=2**64), "--batch-size 18446744073709551616 must be <= 2**63-1"),
    (dict(max_length=2**64), "--max-length 18446744073709551616 must be <= 2**63-1"),
    (dict(max_length=1), "--max-length 1 must be >= 2"),
    (dict(eval_batch_tokens=0), "--eval-batch-tokens 0 must be >= 1"),
    (dict(checkpoint_every=-1), "--checkpoint-every -1 must be >= 0"),
    (dict(checkpoint_every=2**64), "--checkpoint-every 18446744073709551616 must be <= 2**63-1"),
])
def test_run_config_integers_out_of_range(kw, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.of(**kw)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_run_config_integer_edges_are_accepted():
    assert RunConfig.of(seed=0).data.seed == 0 and RunConfig.of(seed=SEED_MAX).data.seed == SEED_MAX
    assert RunConfig.of(max_length=2, checkpoint_every=0, eval_batch_tokens=1).data.max_length == 2


@pytest.mark.parametrize("kw,needle", [
    (dict(seed=-1), "--seed -1 must be in [0, 2**32-1]"),
    (dict(seed=2**64), "--seed 18446744073709551616 must be in [0, 2**32-1]"),
    (dict(samples=2**64), "--samples 18446744073709551616 must be <= 2**63-1"),
    (dict(epochs=2**64), "--epochs 18446744073709551616 must be <= 2**63-1"),
    (dict(epochs=-1, max_steps=5), "--epochs -1 must be >= 0"),
    (dict(max_steps=2**64), "--max-steps 18446744073709551616 must be <= 2**63-1"),
    (dict(max_length=2**64), "--max-length 18446744073709551616 must be <= 2**63-1"),
    (dict(eval_every=2**64), "--eval-every 18446744073709551616 must be <= 2**63-1"),
    (dict(method="lora", lora_rank=2**63 - 1), "--lora-rank 9223372036854775807 must be <= 65536"),
    (dict(freeze_layers=-1), "--freeze-layers -1 must be >= 0"),
    (dict(early_stopping_patience=-1), "--early-stopping-patience -1 must be >= 0"),
])
def test_finetune_config_integers_out_of_range(kw, needle):
    with pytest.raises(ConfigError) as info:
        FinetuneConfig.of(**kw)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_study_and_scoring_configs_check_seeds_and_counts():
    from mft_engine.experiments.scoring_setup import ScoringConfig
    from mft_engine.experiments.trials import StudyConfig

    with pytest.raises(ConfigError, match=r"--seed -1 must be in \[0, 2\*\*32-1\]"):
        ScoringConfig.of(seed=-1)
    with pytest.raises(ConfigError, match=r"--samples 18446744073709551616 must be <= 2\*\*63-1"):
        ScoringConfig.of(samples=2**64)
    with pytest.raises(ConfigError, match=r"--seed 4294967296 must be in"):
        StudyConfig.of(seed=2**32)  # through the trials' FinetuneConfig
    with pytest.raises(ConfigError, match=r"--samples 18446744073709551616 must be <= 2\*\*63-1"):
        StudyConfig.of(samples=2**64)


def test_few_shot_seed_lists_are_range_checked():
    from mft_engine.experiments.few_shot import FewShotConfig

    with pytest.raises(ConfigError, match=r"--seeds -1 must be in \[0, 2\*\*32-1\]"):
        FewShotConfig.of(seeds="1,-1")
    assert FewShotConfig.of(seeds=f"0,{SEED_MAX}").seed_list == [0, SEED_MAX]


@pytest.mark.parametrize("flag", [["--seed", "-1"], ["--seed", "99999999999999999999"],
                                  ["--max-length", "100000000000000000000"]])
def test_mft_run_integers_out_of_range_are_one_line_exit_2(tmp_path, capsys, flag):
    out = tmp_path / "results"
    code = main(["run", "--model", "bert-tiny-random", "--samples", "8", "--batch-size", "4", "--quiet",
                 "--no-control", "--out", str(out), *flag])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err and flag[0] in err
    assert not out.exists() or not any(out.iterdir())
