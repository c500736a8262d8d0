"""Folders the app reads, written once per session by the real commands on bert-tiny-random (about 20 s):
an `mft run` results folder with masks at two fractions, an `mft finetune --method lora` folder with its
adapter, the run exported at fraction 0.1 (a plain model folder), and small CSV files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mft_engine.cli import main


@dataclass(frozen=True)
class AppFolders:
    root: Path
    run: Path
    finetune: Path
    export: Path
    good_csv: Path


def _only(parent: Path, prefix: str) -> Path:
    found = sorted(p for p in parent.iterdir() if p.name.startswith(prefix))
    assert len(found) == 1, found
    return found[0]


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under `folders`: equal snapshots mean nothing was written there."""
    out = {}
    for f in folders:
        for dirpath, _, files in os.walk(f):
            for name in files:
                st = (Path(dirpath) / name).stat()
                out[str(Path(dirpath) / name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session")
def app_folders(tmp_path_factory) -> AppFolders:
    root = tmp_path_factory.mktemp("app_folders")
    runs = root / "results"
    assert main(["run", "--model", "bert-tiny-random", "--samples", "64", "--fraction", "0.05,0.1",
                 "--out", str(runs), "--quiet"]) == 0
    run = _only(runs, "mft_")
    assert main(["finetune", "--method", "lora", "--model", "bert-tiny-random", "--samples", "32",
                 "--max-steps", "2", "--out", str(runs), "--quiet"]) == 0
    finetune = _only(runs, "finetune_lora")
    export = root / "exported_0.1"
    assert main(["export", str(run), str(export), "--fraction", "0.1"]) == 0
    good = root / "reviews.csv"
    good.write_text("sentence,label\n\"a gripping, beautifully acted film\",1\ndull and slow,0\n"
                    "\"a mess, from start to end\",negative\nquietly moving,positive\nfine work,1\n", encoding="utf-8")
    return AppFolders(root, run, finetune, export, good)
