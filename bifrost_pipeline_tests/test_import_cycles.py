"""No import cycle anywhere in bifrost_pipeline/.

Every import counts: at module level, inside a function (a lazy import only hides a cycle until the day
it runs first), and under TYPE_CHECKING (a type checker follows it like any other). An edge goes from a
module to the module it names: `from a.b import c` names the module a.b.c when there is one, else a.b.
The parent packages Python runs on the way (a/__init__.py for a.b) are not edges: a package whose
__init__ imports its own submodules is not a cycle.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import bifrost_pipeline

PACKAGE_DIR = Path(bifrost_pipeline.__file__).parent

# Import edges (importer, imported) that close a cycle in another part of issue 10, ignored here until
# that part is merged. Empty it then: test_the_known_cycles_are_still_there fails for a stale entry.

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` is, or the package module it is an attribute of (None outside the package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The package's modules that `module` imports anywhere in its file, with the line of each."""
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path.name == "__init__.py", node)
            targets = [_known(f"{source}.{alias.name}", modules) for alias in node.names]
        for target in targets:
            if target is not None and target != module:
                out[target] = min(out.get(target, node.lineno), node.lineno)
    return out


def import_graph(root: Path) -> Graph:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None; depth-first, in sorted order so that the answer is stable."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]  # per module on the path: the imports still to follow
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                done.add(path.pop())
                pending.pop()
            elif nxt in path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                pending.append(iter(sorted(graph[nxt])))
    return None


def reaches(graph: Graph, start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def describe(cycle: list[str], graph: Graph) -> str:
    return "\n".join(f"  {a} (line {graph[a][b]}) -> {b}" for a, b in pairwise(cycle))


def test_no_import_cycle_in_the_package():
    graph = import_graph(PACKAGE_DIR)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle:\n" + describe(cycle, graph)


def test_every_kind_of_import_counts(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import a\n")  # a package importing its own module: no cycle
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b": 3} and graph["pkg.sub.b"] == {"pkg.c": 2} and graph["pkg"] == {"pkg.a": 1}
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert describe(cycle, graph).splitlines()[0] == "  pkg.a (line 3) -> pkg.sub.b"
    # The parent packages run on the way (pkg, pkg.sub) are no edges: without c's import, no cycle is left.
    (pkg / "c.py").write_text("import pkg.sub\n")
    assert find_cycle(import_graph(pkg)) is None
