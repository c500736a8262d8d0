"""`mft run`: the BERT-MFT study."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..config import RunConfig
from .apps import QUIET_HELP, app
from .flags import build_config, given_flags, with_config_flags
from .output import brief_metrics, command_progress, print_result


@app.command()
@with_config_flags(RunConfig)
def run(
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue an interrupted run from its .partial folder"),
    json_out: bool = typer.Option(False, "--json", help="print results.json's headline figures as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    **given: Any,
) -> None:
    """The BERT-MFT study: evaluate, collect gradients on N samples, zero the top detrimental fraction,
    evaluate again, and a random control. Writes results/mft_<timestamp>/."""
    from ..experiments import run_study
    from ..experiments.mft_study import resume_config

    if resume is not None:
        cfg = resume_config(resume, given_flags(RunConfig, given)[0])
    else:
        cfg = build_config(RunConfig, given)
    with command_progress(quiet or json_out) as progress:
        result = run_study(cfg, progress, resume=resume)
    if result.out_dir is None:  # a torchrun rank other than 0: rank 0 reports
        return
    rec = result.record
    print_result(result.out_dir, {
        "out_dir": str(result.out_dir), "before": brief_metrics(rec["before"]), "counts": rec["counts"],
        "fractions": [{**{k: f[k] for k in ("fraction", "k", "threshold_score", "n_tied_at_threshold")},
                       "after": brief_metrics(f["after"]),
                       **({"control": brief_metrics(f["control"])} if "control" in f else {})}
                      for f in rec["fractions"]],
        "timings": rec["timings"]}, json_out, quiet)
