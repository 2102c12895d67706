"""The import graph of ``src/corral``, held by tests (issue 12, "the API's imports").

- **No cycle.** Every import of a corral module counts, wherever it is written: at the top,
  inside a function (a lazy import), or under ``if TYPE_CHECKING:``. A lazy import that
  breaks a cycle at run time leaves the cycle in the design (the two modules still need
  each other), so it is reported like any other. :data:`ALLOWED_CYCLES` would name a
  cycle kept on purpose, with the reason; it is empty and should stay so.
- **The supervisor's privates stay inside it.** No module outside ``corral.supervisor``
  reads ``supervisor._anything`` (or ``self.supervisor._anything``): what others need
  has a public method.
- **The guard does not need the router**: ``corral.api.security`` takes the OpenAI error
  body from ``corral.api.openai``'s leaf helpers, not from ``corral.router``.

An edge goes to the deepest module the import names: ``from corral.api import openai``
is an edge to ``corral.api.openai``, ``from corral.router import Busy`` to
``corral.router``, ``from corral.cli import CorralGroup`` to the package ``corral.cli``.
Python also runs a package's ``__init__`` before any of its submodules; that implicit
step is not drawn as an edge (it would make every module of a package depend on all its
``__init__`` imports, which is not what the code says).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "corral"

#: Cycles kept on purpose, as frozensets of module names, each with a comment saying why.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, source: str, known, is_package: bool = False) -> dict[str, int]:
    """corral modules ``name`` imports -> line of the first such import (any nesting)."""
    tree = ast.parse(source)
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:  # corral.x.y.Name -> corral.x.y
            target = target.rpartition(".")[0]
        if target.startswith("corral") and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            mod = _absolute(node, name, is_package)
            for alias in node.names:
                add(f"{mod}.{alias.name}", node.lineno)  # a submodule, else falls back to mod
    return found


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {
        name: imports_of(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in known.items()
    }


def strongly_connected(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module (a self-import is skipped above)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def one_cycle(g: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``comp`` (breadth first)."""
    members, start = set(comp), comp[0]
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w in members and w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp  # unreachable for a true component


def describe(g: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [
        f"  {a} -> {b}  ({modules()[a].relative_to(SRC)}:{g[a][b]})"
        for a, b in zip(cycle, cycle[1:], strict=False)
    ]
    return "\n".join(steps)


def test_the_graph_sees_imports_of_every_kind():
    """The walker finds top-level, lazy, type-only, relative and submodule imports (else
    the cycle test below could pass by seeing nothing)."""
    known = {
        m: None
        for m in (
            "corral",
            "corral.a",
            "corral.a.b",
            "corral.c",
            "corral.d",
            "corral.e",
            "corral.f",
        )
    }
    source = """
from corral.a import b
import corral.c
from . import d
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from corral.e import Thing
def lazy():
    from corral.f import g
    from corral import __version__
"""
    found = imports_of("corral.x", source, known)
    assert found == {
        "corral.a.b": 2,
        "corral.c": 3,
        "corral.d": 4,
        "corral.e": 7,
        "corral.f": 9,
        "corral": 10,
    }
    assert imports_of("corral.a.b", "from ..c import x\nfrom . import y\n", known) == {
        "corral.c": 1,
        "corral.a": 2,
    }
    assert "corral.api.openai" in graph()["corral.api.app"]  # the real tree is walked
    assert strongly_connected({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == [
        ["a", "b", "c"]
    ]
    assert one_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}, ["a", "b", "c"]) == [
        "a",
        "b",
        "c",
        "a",
    ]


def test_no_import_cycle():
    g = graph()
    found = [c for c in strongly_connected(g) if frozenset(c) not in ALLOWED_CYCLES]
    report = "\n\n".join(
        f"cycle among {', '.join(comp)}:\n{describe(g, one_cycle(g, comp))}" for comp in found
    )
    assert not found, f"import cycles in src/corral:\n\n{report}"


def _private_supervisor_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """``x.supervisor._y`` and ``supervisor._y`` reads (any object called supervisor)."""
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue  # dunders (__class__, __dict__) are no one's private state
        owner = node.value
        named = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else None
        )
        if named in ("supervisor", "sup"):
            hits.append((node.lineno, f"{named}.{node.attr}"))
    return sorted(hits)


def test_the_check_for_supervisor_privates_can_fail():
    tree = ast.parse("self.supervisor._rts.get(n)\nsupervisor._resolve_model(m)\nsup.list()\n")
    assert _private_supervisor_reads(tree) == [
        (1, "supervisor._rts"),
        (2, "supervisor._resolve_model"),
    ]


def test_no_module_outside_the_supervisor_reads_its_privates():
    hits = []
    for name, path in modules().items():
        if name == "corral.supervisor" or name.startswith("corral.supervisor."):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        hits += [
            f"{path.relative_to(SRC)}:{line}: {text}"
            for line, text in _private_supervisor_reads(tree)
        ]
    assert not hits, "private supervisor members used outside it:\n" + "\n".join(hits)


def test_the_guard_does_not_import_the_router():
    assert "corral.router" not in graph()["corral.api.security"]
