"""The Typer applications every command module registers on: `mft`, `mft bench`, `mft study`."""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mft_engine: find, remove and judge the parameters of a fine-tuned classifier.")

def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"mft_engine {version('mft_engine')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the package version and exit")) -> None:
    """mft_engine: find, remove and judge the parameters of a fine-tuned classifier."""


bench_app = typer.Typer(help="Benchmarks: ratios measured side by side in one run, the CPU named.")
app.add_typer(bench_app, name="bench")

study_app = typer.Typer(no_args_is_help=True, help="Fine-tuning studies: data-centric sampling, noise robustness, "
                        "few-shot scaling, LoRA transfer with SVD. Each writes results/<study>_<timestamp>/.")
app.add_typer(study_app, name="study")

JSON_HELP = "print the headline figures as one JSON object"
QUIET_HELP = "no progress bars"


def unwrap_help(typer_app: typer.Typer) -> None:
    """Give every command of `typer_app` (and of its sub-apps) its docstring as one paragraph, so the
    terminal wraps the help text instead of the source file's line breaks."""
    import inspect

    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = " ".join(inspect.getdoc(command.callback).split())
    for group in typer_app.registered_groups:
        unwrap_help(group.typer_instance)
