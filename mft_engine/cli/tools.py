"""`mft compare`, `mft export`, `mft app` and `mft info`: tables, checkpoints, the browser app, the machine."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import MftError
from .apps import app


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="finetune results folders (results/finetune_*)"),
    out: str = typer.Option("results", help="parent folder of the compare_<timestamp> folder"),
    json_out: bool = typer.Option(False, "--json", help="print the table rows and the folder as one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", help="print nothing but errors"),
) -> None:
    """The methods table over finetune runs: methods.csv, methods.md and methods_tradeoff.png (metric on the
    evaluation half vs trainable share vs time). Writes results/compare_<timestamp>/."""
    from ..report.compare import compare_runs

    result = compare_runs(run_dirs, out)
    if json_out:
        print(json.dumps({"out_dir": str(result.out_dir), "rows": result.rows}))
    elif not quiet:
        print((result.out_dir / "methods.md").read_text())
        print(f"results: {result.out_dir}")


@app.command()
def export(
    results_dir: Path = typer.Argument(..., help="an mft run results folder"),
    out_dir: Path = typer.Argument(..., help="where to write the masked Hugging Face checkpoint"),
    fraction: Optional[float] = typer.Option(None, help="which fraction's mask (needed when the run had several)"),
) -> None:
    """Write the masked model of a run as a Hugging Face checkpoint folder (loads with --model OUT_DIR)."""
    from ..export import export_masked

    path = export_masked(results_dir, out_dir, fraction)
    print(f"wrote {path}")


@app.command("app")
def app_command(
    folders: Optional[list[str]] = typer.Argument(None, help="more folders to preload (so --models A B C works)",
                                                  show_default=False),
    models: Optional[list[str]] = typer.Option(None, "--models", help="results or model folders to preload "
                                               "(mft run, finetune, checkpoint, export); the bundled fine-tuned MiniLM (minilm-sst2) is "
                                               "always offered", show_default=False),
    host: str = typer.Option("127.0.0.1", help="address to serve on (0.0.0.0 exposes the app to the network)"),
    port: Optional[int] = typer.Option(None, help="port to serve on (default: gradio's first free from 7860)"),
    share: bool = typer.Option(False, "--share/--no-share", help="also open a public gradio.live link"),
) -> None:
    """A browser page to see, try and compare models: predict a text, a CSV, inspect a results folder's
    masks and curves, compare two models. Needs the [app] extra (gradio)."""
    import importlib.util
    import os

    # Before gradio is imported: it reads this once, at import.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if importlib.util.find_spec("gradio") is None:
        raise MftError('mft app needs gradio: pip install -e ".[app]"')
    from ..app.ui import serve

    serve([*(models or []), *(folders or [])], host=host, port=port, share=share)


@app.command()
def info(json_out: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """Versions, threads, CPU features, the active kernel path, and every backend (cpu, cuda, xla) with
    its status and, where one is absent, what is missing and what brings it."""
    from ..report import backends, machine_info, versions

    data = {**versions(), **machine_info(), "backends": backends()}
    if json_out:
        print(json.dumps(data))
        return
    for k, v in data.items():
        if k == "backends":
            continue
        print(f"{k:<16} {', '.join(v) if isinstance(v, list) else v}")
    for b in data["backends"]:
        rest = "; ".join(f"{k}: {v}" for k, v in b.items() if k not in ("backend", "status") and v is not None)
        print(f"{'backend ' + b['backend']:<16} {b['status']}" + (f" ({rest})" if rest else ""))


@app.command()
def show(results_dir: Path = typer.Argument(..., help="a results folder (mft run, finetune, sweep, study, ...)")) -> None:
    """Print a results folder's summary and the paths of its plots."""
    from ..report.show import show as show_text

    print(show_text(results_dir))
