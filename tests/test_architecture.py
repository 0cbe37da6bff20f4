"""The house's rules, read from the imports themselves (every `import` in a module, also those
inside functions, since a lazy import is still an arrow).

Layers of `datatool`, bottom up: `core` (types, image IO, schema, drawing) -> `formats` (one module
per format) -> `dataset` (walks dataset folders) -> stages (one module per job: capture, validate,
augment, split, ...) -> runners (`beam`: the stages' per-sample functions on Apache Beam) -> `cli`. Arrows point down; a stage never imports another stage; nothing
imports the CLI; `trainer` reaches `datatool` only through `datatool.core`. No import loops.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datatool", "trainer")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = f
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules `name` imports (`from pkg import mod` counts as importing `pkg.mod`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `import datatool.core.images.x` -> the module part
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no arrow
                found.add(t)
    return found


EDGES = {name: _imports(name, path) for name, path in MODULES.items()}


# The one arrow up, named here so no other can slip in: `--detector RUN` lets every stage use a
# trained run, and `trainer.detector.RunDetector` is the one run detector (the same resize and
# outputs as `trainer predict`). It imports only `datatool.core`, so this closes no loop (checked
# by `test_no_import_loops`).
ARROWS_UP = {("datatool.core.detect", "trainer.detector")}


def layer(name: str) -> str:
    """Which layer a module belongs to: core, formats, dataset, stage, runner, cli, package, trainer."""
    parts = name.split(".")
    if parts[0] == "trainer":
        return "trainer"
    if len(parts) == 1:
        return "package"  # datatool/__init__.py: the version only
    if parts[1] in ("core", "formats", "cli"):
        return parts[1]
    if parts[1] == "dataset":
        return "dataset"
    if parts[1] == "beam":
        return "runner"
    return "stage"


# What each layer may import. A stage may be a package (`datatool.augment`): its own modules
# import each other freely, but not another stage.
ALLOWED = {
    "package": set(),
    "core": {"core", "package"},
    "formats": {"core", "formats", "package"},
    "dataset": {"core", "formats"},
    "stage": {"core", "formats", "dataset", "package"},
    "runner": {"core", "formats", "dataset", "stage", "runner", "package"},
    "cli": {"core", "formats", "dataset", "stage", "runner", "cli", "package"},
    "trainer": {"core", "trainer", "package"},
}


def _cycles() -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as a sorted list."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(EDGES[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_whole_package():
    # a broken walk (wrong root, a renamed package) would make every rule below pass vacuously
    assert {"datatool.core.sample", "datatool.formats.labelme", "datatool.dataset", "datatool.split",
            "datatool.cli", "datatool.beam.split", "trainer.fit"} <= set(MODULES)
    assert "datatool.core.sample" in EDGES["datatool.formats.labelme"]


def test_no_import_loops():
    assert _cycles() == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_arrows_point_down(name):
    mine = layer(name)
    wrong = []
    for target in sorted(EDGES[name] - {t for n, t in ARROWS_UP if n == name}):
        theirs = layer(target)
        if mine == "stage" and theirs == "stage":
            if target.split(".")[1] != name.split(".")[1]:
                wrong.append(f"{target} (a stage importing another stage: move the shared fact into datatool.core)")
        elif theirs not in ALLOWED[mine]:
            wrong.append(f"{target} ({mine} may import only {', '.join(sorted(ALLOWED[mine]))})")
    assert wrong == [], f"{name} imports " + "; ".join(wrong)


def test_the_arrow_up_exists_and_stays_lazy():
    # the exception above is live (not a stale entry), and its import sits inside a function, so
    # importing datatool.core never starts TensorFlow
    for name, target in ARROWS_UP:
        assert target in EDGES[name]
        body = ast.parse(MODULES[name].read_text(encoding="utf-8")).body
        top_level = {n.module for n in body if isinstance(n, ast.ImportFrom)}
        top_level |= {a.name for n in body if isinstance(n, ast.Import) for a in n.names}
        assert target.partition(".")[0] not in {m.partition(".")[0] for m in top_level if m}


def test_nothing_imports_the_cli():
    importers = {n for n, targets in EDGES.items() for t in targets
                 if layer(t) == "cli" and layer(n) != "cli"}
    assert importers == set()
