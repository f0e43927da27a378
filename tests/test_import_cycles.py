"""No import cycles in our code: data flows one way inside each wing (DESIGN.md).

Static analysis with `ast`, so nothing is imported and the test sees what a reader sees. Every
import statement counts wherever it is: at module level, inside a function (a lazy import is still a
dependency), and under `if TYPE_CHECKING:` (a cycle of types is still a cycle of meaning). An import
depends on the module it names: `from a.b import c` on `a.b.c` when that is a module, else on `a.b`
(whose `__init__` defines `c`). Importing a submodule is not counted as depending on its package's
`__init__`: a package that re-exports its children (grafana/catalog/) is a hierarchy, not a cycle;
a child that imports a name from its package's `__init__` does depend on it. Scripts in folders
without an `__init__.py` (tools/fixtures/) may import their neighbours by bare name, as they do when
run as files; those count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("exporter", "loadgen", "simulator", "grafana", "tools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if ".venv" not in path.parts
    }


def imported_names(path: Path, module: str) -> set[tuple[str, ...]]:
    """Each import statement's candidates in `path`, most specific first: ("a.b.c", "a.b") for
    `from a.b import c`, ("a.b.c", "a.b", "a") for `import a.b.c`."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.add(tuple(".".join(parts[:i]) for i in range(len(parts), 0, -1)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y / from .. import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.update((f"{source}.{alias.name}", source) for alias in node.names)
    # a script in a folder without __init__.py imports its neighbours by bare name
    if not (path.parent / "__init__.py").exists():
        names |= {tuple(f"{package}.{name}" for name in found) for found in names}
    return names


def dependencies(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for candidates in imported_names(path, module):
            edges |= {next((name for name in candidates if name in modules), module)}
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    found = cycles(dependencies(our_modules()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(cycle) for cycle in found)


def test_the_analysis_sees_every_kind_of_import(tmp_path, monkeypatch) -> None:
    """The checker itself: module-level, function-level, TYPE_CHECKING and relative imports are edges,
    and a cycle through any of them is found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import thing\n"
    )
    (package / "d.py").write_text("import pkg.a\nfrom pkg import helper\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    modules = {module_name(p): p for p in sorted(package.rglob("*.py"))}
    graph = dependencies(modules)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == {"pkg", "pkg.a"}  # `helper` is a name in pkg/__init__.py
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
