"""Every config command's flags come from its config dataclass: each flat field has a flag, --help shows
its default, --config is accepted, and a deprecated flag name still works with a warning."""
import pytest

from mft_engine.cli import main
from mft_engine.cli.flags import given_flags, option_parameters
from mft_engine.config import RunConfig
from mft_engine.experiments.validate_scorer import ValidateConfig
from mft_engine.fields import flat_fields
from mft_engine.train import FinetuneConfig


@pytest.mark.parametrize("cls", [RunConfig, FinetuneConfig, ValidateConfig])
def test_every_flat_field_has_one_flag(cls):
    names = [p.name for p in option_parameters(cls) if "__deprecated_" not in p.name]
    assert names == [f.name for f in flat_fields(cls)]


@pytest.mark.parametrize("command,shown", [
    ("run", ["--samples", "1000", "--fraction", "0.1", "--drop-last", "--eval-batch-tokens", "8192"]),
    ("finetune", ["--method", "full", "--lora-rank", "8", "--eval-batch-tokens", "8192"]),
    ("sweep", ["--grid", "--lora-alpha", "16", "parent folder of the sweep folder"]),
    ("validate-scorer", ["--truth-precision", "float64", "--eval-batch-tokens", "4096"]),
])
def test_help_shows_every_default(command, shown, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in shown:
        assert text in out, text
    assert "--config" in out
    # --precision on validate-scorer is a hidden deprecated alias: not advertised
    if command == "validate-scorer":
        assert "--precision " not in out


def test_deprecated_flag_maps_to_the_new_field_with_a_warning(capsys):
    given = {"precision__deprecated_0": "float32", "config": None}
    flags, config = given_flags(ValidateConfig, given)
    assert flags == {"precision": "float32"} and config is None
    assert "--precision is deprecated here; use --truth-precision" in capsys.readouterr().err


def test_config_file_on_a_generated_command(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: no-such-method\n")
    assert main(["finetune", "--config", str(cfg), "--model", "bert-tiny-random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-method" in err[0]


def test_version_and_aliases(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mft_engine {version('mft_engine')}"
    # transformers' names are accepted for the same flags: a bad value names the field either way
    assert main(["run", "--learning-rate", "-1", "--quiet"]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main(["run", "--max-train-samples", "0", "--quiet"]) == 2
    assert "--samples 0" in capsys.readouterr().err
