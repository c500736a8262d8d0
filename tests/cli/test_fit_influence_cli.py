"""`mft fit-influence`: the fit step on its own, saved under its name and kept when asked again."""
import json

from mft_engine.cli import main


def test_fit_influence_saves_a_named_fit_and_keeps_it(tmp_path, capsys):
    args = ["fit-influence", "--model", "bert-tiny-random", "--samples", "32", "--cg-max-iter", "3",
            "--fits-dir", str(tmp_path / "fits"), "--json", "--quiet"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["solver"] == "cg" and first["iterations"] <= 3 and first["damping"] > 0
    folder = tmp_path / "fits" / first["name"]
    assert folder.is_dir() and any(folder.iterdir())
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["name"] == first["name"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp  # kept, not solved again


def test_fit_influence_bad_solver_is_one_line(tmp_path, capsys):
    assert main(["fit-influence", "--model", "bert-tiny-random", "--solver", "magic",
                 "--fits-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--solver (influence_solver) 'magic'" in err[0]
    assert not any(tmp_path.iterdir())
