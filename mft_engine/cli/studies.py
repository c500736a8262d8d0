"""`mft study ...`: the fine-tuning studies, one command per study config."""
from __future__ import annotations

from typing import Any

import typer

from ..experiments.data_centric import DataCentricConfig
from ..experiments.few_shot import FewShotConfig
from ..experiments.noise import NoiseConfig
from ..experiments.transfer import TransferConfig
from .apps import QUIET_HELP, study_app
from .flags import build_config, with_config_flags
from .output import command_progress, print_result

_JSON_HELP = "print the study's table and folder as one JSON object"


def _run_study(config_cls: type, runner, given: dict[str, Any], json_out: bool, quiet: bool,
               table_key: str = "table") -> None:
    """Build the study config from --config and the flags given, run the study, print its summary or JSON."""
    cfg = build_config(config_cls, given)
    with command_progress(quiet or json_out) as progress:
        result = runner(cfg, progress)
    rec = result.record
    print_result(result.out_dir, {"study": rec["study"], "out_dir": str(result.out_dir), "data": rec["data"],
                                  "primary_metric": rec["primary_metric"], table_key: rec[table_key],
                                  "timings": rec["timings"]}, json_out, quiet)


@study_app.command("data-centric")
@with_config_flags(DataCentricConfig)
def study_data_centric(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """A teacher's per-sample loss ranks the pool; equal-size subsets (uniform, easy, hard, middle, mixed) are
    each fine-tuned the same way. Writes results/data_centric_<timestamp>/."""
    from ..experiments.data_centric import run_data_centric

    _run_study(DataCentricConfig, run_data_centric, given, json_out, quiet)


@study_app.command("noise")
@with_config_flags(NoiseConfig)
def study_noise(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Train clean, test on corrupted text (emoji, character and word noise) at several levels; and
    noise-augmented training tested the same way. Writes results/noise_<timestamp>/."""
    from ..experiments.noise import run_noise

    _run_study(NoiseConfig, run_noise, given, json_out, quiet)


@study_app.command("few-shot")
@with_config_flags(FewShotConfig)
def study_few_shot(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """Scaling curve: fine-tune on k = 16, 32, 64, ... rows (class-balanced, nested) up to the pool, over
    seeds. Writes results/few_shot_<timestamp>/."""
    from ..experiments.few_shot import run_few_shot

    _run_study(FewShotConfig, run_few_shot, given, json_out, quiet, table_key="curve")


@study_app.command("transfer")
@with_config_flags(TransferConfig, hidden=TransferConfig.HIDDEN_FLAGS)
def study_transfer(
    json_out: bool = typer.Option(False, "--json", help=_JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """LoRA on --task (SST-2), then frozen adapter + new head on --target-task (MRPC) vs LoRA from scratch,
    per placement; SVD and stable rank of every LoRA update. Writes results/transfer_<timestamp>/."""
    from ..experiments.transfer import run_transfer

    _run_study(TransferConfig, run_transfer, given, json_out, quiet)
