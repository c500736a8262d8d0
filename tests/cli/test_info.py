"""`mft info` lists every backend with its status, naming what is absent and what brings it."""
from __future__ import annotations

import json

import torch

from mft_engine.cli import main


def test_info_lists_every_backend(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by = {b["backend"]: b for b in data["backends"]}
    assert set(by) == {"cpu", "cuda", "xla"}
    assert by["cpu"]["status"] == "ready" and data["kernel_path"] in by["cpu"]["detail"]
    if torch.version.cuda is None:
        assert by["cuda"]["status"] == "absent" and "CUDA build of torch" in by["cuda"]["missing"]
        assert "mft_engine[gpu]" in by["cuda"]["extra"]
    for b in by.values():
        if b["status"] == "absent":
            assert b["missing"]


def test_info_text_has_one_line_per_backend(capsys):
    assert main(["info"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("backend ")]
    assert [ln.split()[1] for ln in lines] == ["cpu", "cuda", "xla"]
