"""The results-folder contract every writing command follows.

A new run reserves `.NAME.partial` with an exclusive `mkdir` (so two runs never share one), writes
everything there, and renames it to NAME at commit without ever replacing anything (NAME_2, NAME_3, …
when NAME appeared meanwhile). On failure the engine removes only what this process wrote:

- a new run's partial folder is removed, unless it holds a resumable checkpoint, which is kept and named;
- a resumed folder is put back as it was found: files this process created are removed and files it
  replaced are restored from hard links taken before the replacement (the checkpoint is the exception:
  it may have advanced, and it stays a valid checkpoint of the same run);
- checkpoints are deleted only after the final rename succeeded.

Out-of-space and permission errors become one `OutputError` line naming the path.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime as _dt
import errno
import itertools
import json
import logging
import logging.handlers
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import MftError, OutputError, ResumeError

PARTIAL_SUFFIX = ".partial"
LOG_FILE = "logs/run.log"
# Errors of the file system rather than of the engine: reported as one line naming the path.
FILESYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                     errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EMLINK, errno.EFBIG}
_BACKUP_PREFIX = ".mft-orig-"
_TMP_PREFIX = ".mft-tmp-"

log = logging.getLogger("mft_engine")

# What the last folder did when it was interrupted; the CLI prints it instead of a generic line.
_interrupt_note: str | None = None


def interrupt_note() -> str | None:
    """What the last interrupted ResultsFolder left behind ("... can be continued with --resume ..." or
    "... removed ..."), or None when no folder was interrupted in this process."""
    return _interrupt_note


def timestamp() -> str:
    """Local time as YYYYMMDD_HHMMSS (the original's results/experiment_<timestamp> convention)."""
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def jsonable(x: Any) -> Any:
    """`x` with NaN/Inf floats as strings and paths as str, so json.dumps writes strict JSON."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def filesystem_error(e: BaseException, where: Path | str | None = None) -> OutputError | None:
    """One-line OutputError for an error caused by the file system (full disk, permissions, a file where
    a folder is expected), naming the path; None for other errors. Besides OSError this reads the
    "(os error N)" of errors raised by Rust writers (safetensors)."""
    code = e.errno if isinstance(e, OSError) else None
    path = e.filename if isinstance(e, OSError) else None
    if code is None and not isinstance(e, OSError):
        m = re.search(r"\(os error (\d+)\)", str(e))
        code = int(m.group(1)) if m else None
    if code not in FILESYSTEM_ERRNOS:
        return None
    path = path or where
    what = os.strerror(code).lower()
    return OutputError(f"cannot write {path}: {what}" if path else f"cannot write: {what}")


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst, raising FileExistsError instead of replacing an existing dst.

    Uses Linux's renameat2(RENAME_NOREPLACE), atomic against a concurrent creator; elsewhere, or on a file
    system without it, an exists-check followed by rename (which still never replaces a non-empty folder).
    """
    libc = _libc()
    if libc is not None:
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2  # noqa: B018  (glibc >= 2.28)
        return libc
    except (OSError, AttributeError):
        return None


def candidate_names(base: str) -> Iterator[str]:
    """base, base_2, base_3, …: the names a results folder tries, in order, until one is free."""
    yield base
    for n in itertools.count(2):
        yield f"{base}_{n}"


def reserve_folder(out: Path, base: str) -> tuple[Path, str]:
    """Create `out/.NAME.partial` exclusively for the first of candidate_names(base) such that neither NAME
    nor its partial folder exists; returns (partial path, NAME). `out` must exist (check_output_parent)."""
    for name in candidate_names(base):
        if os.path.lexists(out / name):
            continue
        tmp = out / f".{name}{PARTIAL_SUFFIX}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise (filesystem_error(e, tmp) or e) from None
        return tmp, name


def check_output_parent(out: Path, flag: str = "--out") -> bool:
    """Create `out` (and its parents) when missing; OutputError when it is not a writable folder.
    Returns whether this call created it."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out} is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if isinstance(e, (FileExistsError, NotADirectoryError)):
            raise OutputError(f"{flag} {out} is not a directory (a part of its path is a file)") from None
        raise (filesystem_error(e, out) or OutputError(f"{flag} {out} cannot be created ({e.strerror})")) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out} is not writable")
    return created


def json_bytes(data: Any) -> bytes:
    """How every results-folder JSON file is written: `jsonable(data)`, indented by 2, one final newline."""
    return (json.dumps(jsonable(data), indent=2) + "\n").encode()


@contextlib.contextmanager
def _temporary_for(final: Path, before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """A temporary path beside `final` (same extension, this process's name), renamed over `final` when
    the block ends without error (after `before_replace()`), removed otherwise: a file complete or absent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{_TMP_PREFIX}{os.getpid()}-{final.name}")
    try:
        yield tmp
        if before_replace is not None:
            before_replace()
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class ResultsFolder:
    """`out/<prefix>_<timestamp>/` (or `out/<name>/`), built in `.<that>.partial/` until commit().

    Used as a context manager. `resume=DIR` continues an existing folder: it must already exist as a
    folder (else ResumeError, with nothing touched), and nothing is written into it — the run log
    included — until `confirm()` says the resume's own checks passed. Files the pipeline writes go through
    `write_json` / `write_text` / `write_csv` / `writing(name)`, which write a temporary file and rename it
    over the final name, so every file is either complete or absent. `keep_on_failure(path)` names a
    resumable checkpoint: while it exists, a failure or interruption keeps it (and the folder) and says so.
    """

    def __init__(self, out: str | Path, prefix: str = "mft", resume: str | Path | None = None,
                 name: str | None = None):
        self.resuming = resume is not None
        self._created_out = False
        if self.resuming:
            tmp = Path(resume)
            if not tmp.is_dir():
                raise ResumeError(f"--resume {tmp} is not a folder")
            self.tmp = tmp
            self.out = tmp.parent
            n = tmp.name
            self.final_name = n[1:-len(PARTIAL_SUFFIX)] if n.startswith(".") and n.endswith(PARTIAL_SUFFIX) else n
            self._found = {p: p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
            self._found_dirs = {p for p in tmp.rglob("*") if p.is_dir()}
        else:
            self.out = Path(out)
            self._created_out = check_output_parent(self.out)
            self.tmp, self.final_name = reserve_folder(self.out, name or f"{prefix}_{timestamp()}")
            self._found = {}
            self._found_dirs = set()
        self._base_name = self.final_name
        self._checkpoints: list[Path] = []
        self._delete_after_commit: list[Path] = []
        self._backups: dict[Path, Path] = {}
        self._confirmed = not self.resuming
        self._handler: logging.Handler | None = None
        self._buffer: logging.handlers.MemoryHandler | None = None
        self.committed = False

    @property
    def path(self) -> Path:
        return self.tmp

    # ------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "ResultsFolder":
        logger = logging.getLogger("mft_engine")
        logger.setLevel(logging.INFO)
        if self._confirmed:
            self._open_log()
        else:
            # Held in memory until confirm(): a refused resume must not even append to the run log.
            self._buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
            logger.addHandler(self._buffer)
        return self

    def _open_log(self) -> None:
        logfile = self.tmp / LOG_FILE
        if not logfile.parent.is_dir():
            logfile.parent.mkdir(parents=True)
        self._handler = logging.FileHandler(logfile)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("mft_engine").addHandler(self._handler)

    def confirm(self) -> None:
        """A resume's checks passed: from here on the folder may be written (the buffered log goes out)."""
        if self._confirmed:
            return
        self._confirmed = True
        self._open_log()
        if self._buffer is not None:
            self._buffer.setTarget(self._handler)
            self._buffer.flush()
            logging.getLogger("mft_engine").removeHandler(self._buffer)
            self._buffer.close()
            self._buffer = None

    def keep_on_failure(self, path: str | Path, delete_after_commit: bool = True) -> None:
        """Name a resumable checkpoint (a file, or a folder kept whole) inside the folder: while it exists, a
        failure or interruption keeps it, and the folder, and says how to resume; deleted after commit unless
        `delete_after_commit` is False (a sweep's finished cells)."""
        p = self.tmp / path
        if p not in self._checkpoints:
            self._checkpoints.append(p)
            if delete_after_commit:
                self._delete_after_commit.append(p)

    def _resumable(self) -> list[Path]:
        return [p for p in self._checkpoints if p.exists()]

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _interrupt_note
        for h in (self._handler, self._buffer):
            if h is not None:
                logging.getLogger("mft_engine").removeHandler(h)
                h.close()
        self._handler = self._buffer = None
        if exc_type is None or self.committed:
            return False
        interrupted = issubclass(exc_type, KeyboardInterrupt)
        kept = self._resumable()
        try:
            self._clean_up(kept, interrupted)
        except OSError as cleanup_error:  # never hide the original error behind the cleanup's
            log.warning("could not clean up %s: %s", self.tmp, cleanup_error)
        where = self._kept_text(kept, interrupted)
        if interrupted:
            _interrupt_note = where
            return False
        err = filesystem_error(exc, self.tmp)
        if err is not None:
            raise OutputError(f"{err}; {where}") from None
        if isinstance(exc, MftError) and (kept or self.resuming):
            raise type(exc)(f"{exc}; {where}") from None
        return False

    def _kept_text(self, kept: list[Path], interrupted: bool) -> str:
        if kept:
            return f"{self.tmp} can be continued with --resume {self.tmp}"
        if self.resuming:
            return f"{self.tmp} was left as it was found" if not interrupted else f"{self.tmp} was left in place"
        return f"nothing could be resumed (no checkpoint was written), so {self.tmp} was removed"

    def _clean_up(self, kept: list[Path], interrupted: bool) -> None:
        """Remove what this process wrote and may not keep (see the module docstring)."""
        if not self.resuming and not kept:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self._created_out:
                with contextlib.suppress(OSError):
                    self.out.rmdir()  # only when empty: the parent this run created for itself
            return
        keep = list(kept) + ([] if self.resuming else [self.tmp / "config.json", self.tmp / LOG_FILE])

        def is_kept(p: Path) -> bool:
            return any(p == k or k in p.parents for k in keep)

        # A resumed folder interrupted by the user keeps its progress; a failed one is put back.
        rollback = self.resuming and not interrupted
        remove_new = rollback or not self.resuming
        for p in sorted(self.tmp.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if p.name.startswith(_BACKUP_PREFIX):
                continue
            if p.is_dir() and not p.is_symlink():
                if remove_new and p not in self._found_dirs and not is_kept(p) and not any(p.iterdir()):
                    p.rmdir()
            elif p.name.startswith(_TMP_PREFIX) or (remove_new and p not in self._found and not is_kept(p)):
                p.unlink()
        for final, backup in self._backups.items():
            if rollback and not is_kept(final):
                os.replace(backup, final)
            else:
                backup.unlink(missing_ok=True)
        self._backups.clear()
        logfile = self.tmp / LOG_FILE
        if rollback and logfile in self._found and logfile.exists():
            os.truncate(logfile, self._found[logfile])

    def commit(self) -> Path:
        """Rename the finished folder to its final name (NAME, else the next free NAME_n; never over anything),
        then delete its checkpoints and backups; returns the final path."""
        if self._handler is not None:
            self._handler.flush()
        if self.tmp.name != self.final_name:
            for name in candidate_names(self._base_name):
                try:
                    rename_noreplace(self.tmp, self.out / name)
                except FileExistsError:
                    continue
                except OSError as e:
                    raise (filesystem_error(e, self.tmp) or e) from None
                break
            if name != self._base_name:
                log.warning("%s appeared while this run was running; the results are in %s", self._base_name, name)
            self.final_name = name
            old = self.tmp
            self.tmp = self.out / name
            self._checkpoints = [self.tmp / p.relative_to(old) for p in self._checkpoints]
            self._delete_after_commit = [self.tmp / p.relative_to(old) for p in self._delete_after_commit]
            self._backups = {self.tmp / f.relative_to(old): self.tmp / b.relative_to(old) for f, b in self._backups.items()}
        self.committed = True
        for p in [*self._delete_after_commit, *self._backups.values()]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        self._backups.clear()
        return self.tmp

    @property
    def final(self) -> Path:
        return self.out / self.final_name

    # -------------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path (same extension) to write `name` to; renamed over `name` when the block ends
        without error. In a resumed folder, a file replaced this way is restored on failure."""
        if not self._confirmed:
            raise RuntimeError("a resumed ResultsFolder is written before confirm()")
        final = self.tmp / name

        def back_up() -> None:
            if final in self._found and final not in self._backups and final.exists():
                backup = final.with_name(_BACKUP_PREFIX + final.name)
                with contextlib.suppress(FileNotFoundError):
                    backup.unlink()
                os.link(final, backup)
                self._backups[final] = backup

        with _temporary_for(final, back_up) as tmp:
            yield tmp

    def write_bytes(self, name: str, data: bytes) -> Path:
        with self.writing(name) as p:
            p.write_bytes(data)
        return self.tmp / name

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_bytes(name, json_bytes(data))

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def write_csv(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        rows = list(rows)
        with self.writing(name) as p, p.open("w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                w.writeheader()
                w.writerows(rows)
        return self.tmp / name


class RankWriter:
    """What a torchrun rank other than 0 writes into the folder rank 0 holds (a sweep's finished cells):
    whole files, by a temporary name renamed into place, so every file is complete or absent. The folder's
    life (its log, what a failure keeps, the commit) stays with rank 0's ResultsFolder; keep_on_failure
    is therefore a no-op here."""

    def __init__(self, path: str | Path):
        self.tmp = Path(path)

    @property
    def path(self) -> Path:
        return self.tmp

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path to write `name` to, renamed over it when the block ends without error."""
        with _temporary_for(self.tmp / name) as tmp:
            yield tmp

    def write_json(self, name: str, data: Any) -> Path:
        with self.writing(name) as p:
            p.write_bytes(json_bytes(data))
        return self.tmp / name

    def keep_on_failure(self, path: str | Path, delete_after_commit: bool = True) -> None:
        """Rank 0's folder keeps the checkpoints; nothing to do on this rank."""
