"""The README's Python API example runs as written (the block under "## Python API")."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "the README's Python API section has no python block"
    return m.group(1)


def test_readme_api_block_runs_as_written(tmp_path, monkeypatch):
    code = api_block()
    assert "path =" in code and "collect_gradients" in code, "the example says where path and the gradients come from"
    monkeypatch.chdir(tmp_path)  # it saves mask.safetensors in the working folder
    scope: dict = {}
    exec(compile(code, str(README) + ":api", "exec"), scope)
    mask, model = scope["mask"], scope["model"]
    assert (tmp_path / "mask.safetensors").is_file()
    assert len(mask) > 0 and "Mask(" in repr(mask) and "\n" not in repr(mask)
    flat = __import__("torch").cat([model.get_parameter(n).detach().reshape(-1) for n in mask.names])
    assert bool((flat[mask.indices] == 0).all()), "apply=True zeroed the selected entries"
