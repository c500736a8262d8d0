"""`mft show RESULTS_DIR`: a finished results folder's summary and where its plots are, as one text."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .folder import PARTIAL_SUFFIX

#: Files read as the folder's summary, first found wins (mft run / finetune / studies write summary.txt).
SUMMARY_FILES = ("summary.txt", "summary.md", "methods.md")


def plots(folder: str | Path) -> list[Path]:
    """The folder's plots (*.png, its own and one level of subfolders), absolute, sorted by name."""
    root = Path(folder).resolve()
    return sorted([*root.glob("*.png"), *root.glob("*/*.png")])


def show(results_dir: str | Path) -> str:
    """The text `mft show` prints: the folder's summary (summary.txt, else the first of SUMMARY_FILES),
    then "plots:" and each plot's absolute path, then where results.json is.

    Raises ConfigError (one line naming the path) when the path is not a folder, is an unfinished
    `.NAME.partial` folder, or holds neither a summary nor results.json. Reads only; writes nothing."""
    path = Path(results_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"mft show {results_dir}: no such folder")
    if not path.is_dir():
        raise ConfigError(f"mft show {results_dir}: not a folder (give a results folder, e.g. results/mft_<time>)")
    if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
        raise ConfigError(f"mft show {results_dir}: an unfinished run's folder (it has no summary until it commits)")
    summary = next((path / n for n in SUMMARY_FILES if (path / n).is_file()), None)
    results = path / "results.json"
    if summary is None and not results.is_file():
        raise ConfigError(f"mft show {results_dir}: not a results folder (no {SUMMARY_FILES[0]} or results.json in it)")
    parts = []
    if summary is not None:
        try:
            parts.append(summary.read_text(encoding="utf-8", errors="replace").rstrip("\n"))
        except OSError as e:
            raise ConfigError(f"mft show {results_dir}: cannot read {summary.name} ({e.strerror or e})") from None
    found = plots(path)
    parts.append("")
    parts.append("plots:" if found else "plots: none")
    parts += [f"  {p}" for p in found]
    if results.is_file():
        parts.append(f"results: {results.resolve()}")
    return "\n".join(parts) + "\n"
