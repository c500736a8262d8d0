"""The package's shape, read from its source: imports flow down the floors, and no module reaches into
another module's private names.

Both checks parse every module of mft_engine with `ast` (imports inside functions included, relative
imports resolved), so they see what a reader sees, without importing anything.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "mft_engine"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Floors, bottom first: a module may import from its own floor and the floors below, never from above.
# An entry is the first name under mft_engine/: a subpackage or a top-level module.
FLOORS: list[list[str]] = [
    # kernels, task data, model loading, settings (config; selection_spec, the one selection description)
    ["ops", "data", "models", "config", "fields", "selection_spec", "errors", "device", "_optional", "_C"],
    ["collect", "masking", "evaluate", "report"],   # one step of the flow each
    ["scoring", "train", "integrations", "prune"],  # built on the steps
    ["experiments", "export", "bench", "app"],      # whole pipelines, their measures, the browser app
    ["cli"],                                        # the command line over all of it
]
FLOOR_OF = {unit: i for i, units in enumerate(FLOORS) for unit in units}
# Modules that may import from any floor: the package root (the public API) and entry points.
UNRESTRICTED_MODULES = {PACKAGE}
UNRESTRICTED_NAMES = {"__main__"}
# Private names any module may use: the compiled extension.
PRIVATE_ALLOWED = {f"{PACKAGE}._C"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
# Compiled modules (no source to read, but importable like any module).
EXTENSIONS = {f"{PACKAGE}._C"}
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}
TREES = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` in `module`, as Python resolves it."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join(base + ([name] if name else []))


@dataclass(frozen=True)
class Use:
    """One use of a package name in `module`: `target` is a module; `name`, when set, an attribute of it
    (`from target import name`, or `alias.name` where `alias` is bound to the module `target`)."""

    module: str
    line: int
    target: str
    name: str | None = None

    def where(self) -> str:
        return f"{MODULES[self.module].relative_to(ROOT.parent)}:{self.line}"


def _uses(module: str, tree: ast.Module, is_package: bool) -> list[Use]:
    """Every import in `module` (at any depth), and every attribute read through a name bound to a package
    module (`from .. import ops` then `ops._args`)."""
    out: list[Use] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append(Use(module, node.lineno, a.name))
                if a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES or f"{base}.{a.name}" in EXTENSIONS:  # `from pkg import sub`
                    out.append(Use(module, node.lineno, f"{base}.{a.name}"))
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
                else:
                    out.append(Use(module, node.lineno, base, a.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if target.split(".")[0] == PACKAGE:
                out.append(Use(module, node.lineno, target, node.attr))
    return [u for u in out if u.target.split(".")[0] == PACKAGE]


USES = [u for m in MODULES for u in _uses(m, TREES[m], m in PACKAGES)]


def _unit(module: str) -> str | None:
    """The floor entry a module belongs to (None for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_module_sits_on_a_floor():
    """A new subpackage or top-level module is placed on a floor before the checks can judge it."""
    units = {_unit(m) for m in [*MODULES, *EXTENSIONS]} - {None} - UNRESTRICTED_NAMES
    assert not sorted(units - set(FLOOR_OF)), "place these in FLOORS (tests/test_architecture.py)"


def upward_imports(uses: list[Use]) -> set[str]:
    """The uses that import from a higher floor, or from the package root, described one per line."""
    upward = set()
    for u in uses:
        if u.module in UNRESTRICTED_MODULES or u.module.split(".")[-1] in UNRESTRICTED_NAMES:
            continue
        src, dst = _unit(u.module), _unit(u.target)
        if dst is None and u.name is not None and u.name.startswith("__"):
            continue  # the root's metadata (`from .. import __version__`): Python imports the root first
        if src not in FLOOR_OF or (dst is not None and dst not in FLOOR_OF):
            continue  # not placed yet: test_every_module_sits_on_a_floor names it
        if dst is None:
            upward.add(f"{u.where()}: {u.module} imports the package root (the API, above every floor)")
        elif FLOOR_OF[dst] > FLOOR_OF[src]:
            upward.add(f"{u.where()}: {src} (floor {FLOOR_OF[src]}) imports {u.target} "
                       f"(floor {FLOOR_OF[dst]})")
    return upward


def test_imports_flow_down():
    upward = upward_imports(USES)
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _owner_allows(owner: str, module: str) -> bool:
    """Whether `module` may use a private name of `owner`: its own, or, for a package, one of its modules
    (a private submodule such as ops/_args.py is the package's own)."""
    if owner in PACKAGES:
        return module == owner or module.startswith(owner + ".")
    return module == owner


def private_crossings(uses: list[Use]) -> set[str]:
    """`from X import _y`, `import X._y` and `X._y` through an imported module X, unless the importer owns
    `_y` (X itself, or a module inside the package X); `_C` is exempt."""
    crossing = set()
    for u in uses:
        path = u.target.split(".") + ([u.name] if u.name else [])
        for i in range(1, len(path)):  # every private step: ops._args, and _y in `from ._args import _y`
            owner, used = ".".join(path[:i]), ".".join(path[:i + 1])
            if _private(path[i]) and used not in PRIVATE_ALLOWED and not _owner_allows(owner, u.module):
                crossing.add(f"{u.where()}: {u.module} uses {used}")
                break
    return crossing


def test_no_module_imports_another_modules_private_names():
    crossing = private_crossings(USES)
    assert not crossing, "private names used outside their module:\n" + "\n".join(sorted(crossing))


def _private_members(tree: ast.Module) -> set[str]:
    """Private attribute names a module defines: `x._y = ...`, and names assigned or defined in a class
    body."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    out.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    out.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {n for n in out if _private(n)}


def test_no_module_reads_another_modules_private_attributes():
    """`obj._y` where `_y` is a private attribute some other package module defines (e.g. a dataclass's
    `_cache`) and this module does not: the owner should offer a public accessor. Names the package never
    defines (torch's or the standard library's) are out of scope."""
    members = {m: _private_members(t) for m, t in TREES.items()}
    defined = set().union(*members.values())
    crossing = set()
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in defined
                    and node.attr not in members[m]):
                owners = sorted(o for o, names in members.items() if node.attr in names)
                crossing.add(f"{MODULES[m].relative_to(ROOT.parent)}:{node.lineno}: {m} reads "
                             f"{ast.unparse(node)} (defined in {', '.join(owners)})")
    assert not crossing, "private attributes read outside their module:\n" + "\n".join(sorted(crossing))


def test_resolve_follows_python():
    """`from ..a import b` in a module and in a package __init__ resolve as Python resolves them."""
    assert _resolve("mft_engine.x.y", False, 2, "a") == "mft_engine.a"
    assert _resolve("mft_engine.x.y", False, 1, None) == "mft_engine.x"
    assert _resolve("mft_engine.x", True, 1, "a") == "mft_engine.x.a"
    assert _resolve("mft_engine.x", True, 2, None) == "mft_engine"
    assert _resolve("mft_engine.x.y", False, 0, "mft_engine.z") == "mft_engine.z"


def test_the_checks_refuse_what_they_should():
    """The rules on hand-made uses: each line names a use the checks must refuse or allow."""
    m = "mft_engine.train.loop"
    assert upward_imports([Use(m, 1, "mft_engine.experiments.mft_study", "Progress")])  # floor 2 → 3
    assert upward_imports([Use("mft_engine.ops.select_topk", 1, "mft_engine", "run_study")])  # the public API
    assert not upward_imports([Use(m, 1, "mft_engine.report.progress", "Progress")])  # 2 → 1
    assert not upward_imports([Use(m, 1, "mft_engine.scoring.inputs", "ScoringInputs")])  # same floor
    assert not upward_imports([Use("mft_engine.report.machine", 1, "mft_engine", "__version__")])
    assert not upward_imports([Use("mft_engine", 1, "mft_engine.cli", "main")])  # the root imports anything

    assert private_crossings([Use("mft_engine.scoring.scorers.gradient", 1, "mft_engine.ops._args", "round_lr")])
    assert private_crossings([Use("mft_engine.scoring.curvature.lowrank", 1, "mft_engine.scoring.curvature.hvp", "_prepare")])
    assert private_crossings([Use("mft_engine.ops.select_topk", 1, "mft_engine.ops._args", "_NONFINITE")])
    assert private_crossings([Use("mft_engine.bench.zeroing", 1, "mft_engine.ops._reference")])
    assert not private_crossings([Use("mft_engine.ops.select_topk", 1, "mft_engine.ops._args", "round_lr")])
    assert not private_crossings([Use("mft_engine.ops", 1, "mft_engine.ops._fake")])  # a package's own
    assert not private_crossings([Use("mft_engine.ops", 1, "mft_engine._C")])
    package_private = Use("mft_engine.train.lora", 1, "mft_engine._optional", "has_bitsandbytes")
    assert not private_crossings([package_private])  # _optional is the package mft_engine's own


def test_the_walk_sees_imports_in_functions_and_reads_through_aliases():
    """Imports inside functions, relative imports and `alias._name` reads all reach the checks, so a passing
    check is not an empty one."""
    source = ("from .. import ops\n"
              "def f():\n"
              "    from ..experiments import mft_study as study\n"
              "    from ..scoring.hvp import _prepare\n"
              "    return study.run_study, ops._args\n")
    uses = _uses("mft_engine.train.loop", ast.parse(source), is_package=False)
    found = {(u.target, u.name) for u in uses}
    assert {("mft_engine.ops", None), ("mft_engine.experiments.mft_study", None),
            ("mft_engine.experiments.mft_study", "run_study"), ("mft_engine.scoring.hvp", "_prepare"),
            ("mft_engine.ops", "_args")} <= found
    # experiments sits above train: the import (line 3) and the read through its alias (line 5)
    assert {line.split(": ")[0] for line in upward_imports(uses)} == {"mft_engine/train/loop.py:3",
                                                                   "mft_engine/train/loop.py:5"}
    used = {line.split(" uses ")[1] for line in private_crossings(uses)}
    assert used == {"mft_engine.scoring.hvp._prepare", "mft_engine.ops._args"}
    assert len(USES) > 500  # the package itself was read
