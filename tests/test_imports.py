"""The package's import graph has no cycle (STYLE: imports point down the data flow, no two modules
import each other). Every `import` / `from ... import` counts, lazy ones inside functions and
`if TYPE_CHECKING:` ones too: a knot hidden behind a lazy import is still a knot."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"splip_engine": REPO / "splip_engine", "splip_engine.export": REPO / "export",
            "splip_engine.kernels": REPO / "kernels"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, with export/ and kernels/ mapped as the wheel maps them."""
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `module` imports (`from pkg import sub` counts as importing pkg.sub)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        targets |= {name for name in names if name in known and name != module}
    return targets


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_import_cycles_finds_a_planted_knot():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_two_package_modules_import_each_other():
    known = _modules()
    graph = {module: _imported(module, path, known) for module, path in known.items()}
    assert graph["splip_engine.data.sampler"] >= {"splip_engine.data.folder", "splip_engine.data.pairs"}
    assert import_cycles(graph) == []
