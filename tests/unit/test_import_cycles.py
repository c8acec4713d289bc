"""No import cycles among mailgate's modules: a cycle makes the import order matter, and
the usual way out (an import moved into a function) hides the tangle instead of undoing it.

Counted: imports at module level (also inside ``try``/``if``), and the packages an import
runs first, except the importer's own (they are under way already, and a package that
re-exports its modules' names is not a cycle). Not counted: imports inside functions and
under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import mailgate

ROOT = Path(mailgate.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module's dotted name, its file and whether it is a package's ``__init__``."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path, package: bool) -> set[str]:
    """The dotted names ``name`` imports when it is itself imported."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: None if package else -1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                names.add(source)
                # ``from package import module`` imports the module.
                names.update(f"{source}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the mailgate modules it imports at module level (with their packages)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        edges: set[str] = set()
        for target in _imported(name, path, package):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                edges.add(".".join(parts[:i]))
            edges.discard(target)
            edges -= {p for p in edges if name.startswith(p + ".")}  # our own packages
            edges.add(target)
        graph[name] = {t for t in edges if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        todo = [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_names_the_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@functools.cache
def fresh_import_graph() -> dict[str, set[str]]:
    """import_graph() computed by a fresh interpreter: CPython 3.11.7's ast.parse can fail
    with "AST constructor recursion depth mismatch" once an earlier test of the session
    hit a RecursionError while compiling (deeply nested templates do)."""
    out = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, check=True, timeout=120
    )
    return {name: set(targets) for name, targets in json.loads(out.stdout).items()}


def test_the_graph_sees_the_imports() -> None:
    graph = fresh_import_graph()
    assert "mailgate.store.schema" in graph["mailgate.store.statements"]
    assert "mailgate.store" not in graph["mailgate.store.statements"]  # its own package
    assert "mailgate.store" in graph["mailgate.delivery.attempt"]  # runs first


def test_no_import_cycles() -> None:
    cycle = find_cycle(fresh_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


if __name__ == "__main__":
    print(json.dumps({name: sorted(targets) for name, targets in import_graph().items()}))
