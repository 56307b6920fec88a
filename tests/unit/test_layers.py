"""The layering of the top-level packages, read from the source with `ast`:

    cli, harness          the `scifed` command; the whole federation on loopback
    node | coordinator    the two sides; neither imports the other
    jobs                  what a job is and computes (may be absent)
    scifed                the shared core: imports none of the above

Every import counts, including those inside functions and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("scifed", "jobs", "node", "coordinator", "harness", "cli")

# package -> the packages it must never import
FORBIDDEN = {
    "scifed": {"node", "coordinator", "jobs", "harness", "cli"},
    "jobs": {"harness", "cli"},
    "node": {"harness", "cli", "coordinator"},
    "coordinator": {"harness", "cli", "node"},
}

# Files that still break the layering and are about to be deleted. Each entry is skipped by
# every check below, and test_pending_removal_files_exist fails once the file is gone, so the
# entry has to go with it. Do not add files that are meant to stay: fix their imports.
PENDING_REMOVAL: set[str] = set()


def imported_packages(source: str, filename: str = "<src>") -> set[str]:
    """Top-level names of every absolute import in `source`, wherever it appears
    (module level, functions, classes, conditionals), plus `importlib.import_module("...")`
    with a literal name. Relative imports stay inside the file's own package; skipped."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id == "import_module")):
            found.add(node.args[0].value.split(".")[0])
    return found


def _modules() -> dict[str, tuple[str, set[str]]]:
    """Repo-relative path -> (its top-level package, the project packages it imports)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in PENDING_REMOVAL:
                continue
            deps = imported_packages(path.read_text(encoding="utf-8"), rel)
            out[rel] = (pkg, (deps & set(PACKAGES)) - {pkg})
    return out


MODULES = _modules()


def test_the_scan_sees_the_packages():
    seen = {pkg for pkg, _ in MODULES.values()}
    assert {"scifed", "node", "coordinator", "harness", "cli"} <= seen


def test_pending_removal_files_exist():
    gone = sorted(p for p in PENDING_REMOVAL if not (REPO / p).is_file())
    assert not gone, f"{gone} no longer exist: remove them from PENDING_REMOVAL"


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_no_import_from_above(pkg):
    bad = {rel: sorted(deps & FORBIDDEN[pkg])
           for rel, (owner, deps) in MODULES.items() if owner == pkg and deps & FORBIDDEN[pkg]}
    assert not bad, f"{pkg}/ must not import {sorted(FORBIDDEN[pkg])}: {bad}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_package_graph_is_acyclic():
    graph: dict[str, set[str]] = {pkg: set() for pkg in PACKAGES}
    why: dict[tuple[str, str], str] = {}
    for rel, (pkg, deps) in MODULES.items():
        for dep in deps:
            graph[pkg].add(dep)
            why.setdefault((pkg, dep), rel)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle " + " -> ".join(cycle) + " (" + ", ".join(
        f"{a}->{b} in {why[a, b]}" for a, b in pairwise(cycle)) + ")"


def test_the_checks_can_fail():
    src = "import os\nfrom scifed.x import y\nfrom . import z\n" \
          "def f():\n    from node.cli import app\n    import coordinator.db\n" \
          "    importlib.import_module('harness.federation')\n"
    assert imported_packages(src) == {"os", "scifed", "node", "coordinator", "harness"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
