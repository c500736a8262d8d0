"""`main`: the `mft` entry point. Bad input (any MftError) prints one line `mft: error: ...` and exits 2,
with no traceback; Ctrl-C and SIGTERM end with a line saying what was kept (130)."""
from __future__ import annotations

import sys
import warnings

import typer
from torch.distributed.elastic.multiprocessing.errors import record

from ..errors import MftError
from .apps import app


def _interrupted_line() -> str:
    from ..report.folder import interrupt_note

    note = interrupt_note()
    return f"mft: interrupted; {note}" if note else "mft: interrupted"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"mft: warning: {message}\n"


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


# torchrun / accelerate: an unexpected exception on any rank is written where the launcher reads it, so
# its traceback reaches the launcher's summary (outside a launcher the decorator does nothing).
@record
def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the Typer app, turning MftError (and file-system errors such as a full disk) into
    one line on stderr and exit code 2; Ctrl-C and SIGTERM end with a line saying what was kept (130)."""
    import signal

    from ..report.folder import filesystem_error

    # SIGTERM (schedulers, `kill`) cleans up like Ctrl-C instead of dying with a half-written folder.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    format_before = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        rv = app(args=argv, standalone_mode=False)
    except MftError as e:
        print(f"mft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_line(), file=sys.stderr)
        return 130
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except Exception as e:  # file-system errors outside a results folder; click's usage errors
        err = filesystem_error(e)
        if err is not None:
            print(f"mft: error: {err}", file=sys.stderr)
            return 2
        usage, abort = _click_exception_types()
        if isinstance(e, usage):
            e.show()
            return 2
        if isinstance(e, abort):
            print(_interrupted_line(), file=sys.stderr)
            return 130
        raise
    finally:
        warnings.formatwarning = format_before
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # Without standalone mode, typer turns Ctrl-C into a returned 130 (and typer.Exit into its code).
    if rv == 130:
        print(_interrupted_line(), file=sys.stderr)
    return rv if isinstance(rv, int) else 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error, abort) exception types of click and of the click copy that typer >= 0.26 vendors."""
    import click

    usage, abort = [click.exceptions.ClickException], [click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        usage.append(vendored.ClickException)
    if isinstance(getattr(typer, "Abort", None), type):
        abort.append(typer.Abort)
    return tuple(usage), tuple(abort)
