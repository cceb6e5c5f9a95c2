"""No import cycles in router/ and providers/, and no import hidden in a function body or under TYPE_CHECKING.

The module graph is read from the source (top-level imports only) and must
be acyclic; an import inside a function or an ``if TYPE_CHECKING:`` block is
how a cycle hides, so none is allowed, except the lazy ones listed in
``LAZY`` with the reason they are lazy (none of them is about a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("router", "providers")

# module -> why its function-level imports are lazy (optional, heavy, or run once by a CLI command).
LAZY = {
    "router.accounting.sinks": "each sink's driver is imported only when a sink of that kind is configured",
    "router.cli": "a subcommand imports what only it needs, so `llm-router check` stays fast",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imported(node: ast.AST, known: set[str]) -> set[str]:
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def test_the_module_graph_has_no_cycle():
    mods = modules()
    known = set(mods)
    graph = {name: set().union(*(imported(node, known) for node in tree.body)) - {name} for name, tree in mods.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_import_hides_in_a_function_body_or_under_type_checking():
    hidden = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and name not in LAZY:
                hidden += [f"{name}:{inner.lineno} inside {node.name}()" for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))]
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                hidden.append(f"{name}:{node.lineno} under TYPE_CHECKING")
    assert not hidden, "\n".join(hidden)
