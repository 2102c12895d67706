"""The code's shape, held by tests: no long function anywhere a newcomer has to read.

Limits from issue 12: no Python function in ``src/`` over 80 lines, no web view's ``mount``
over 120 and no other JavaScript function over 80. A function that long does several
things; each should have a name. The JavaScript is measured by a small scanner (strings,
template literals and comments skipped) so the check needs no Node.js.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "corral"
PY_LIMIT = 80
JS_MOUNT_LIMIT = 120
JS_LIMIT = 80


def python_functions():
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(SRC), node.name, node.end_lineno - node.lineno + 1


_JS_FUNCTION = re.compile(r"\b(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)\s*\(")


def _skip(text: str, i: int, depth: list[str]) -> int:
    """Index after the string, template or comment starting at ``text[i]``, else ``i``."""
    c, nxt = text[i], text[i + 1 : i + 2]
    if c == "/" and nxt == "/":
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if c == "/" and nxt == "*":
        return text.index("*/", i + 2) + 2
    if c == "/" and _regex_may_start(text, i):  # a regex literal: to its closing slash
        j, in_class = i + 1, False
        while in_class or text[j] != "/":
            if text[j] == "\\":
                j += 1
            elif text[j] == "[":
                in_class = True
            elif text[j] == "]":
                in_class = False
            j += 1
        return j + 1
    if c in "'\"":
        j = i + 1
        while text[j] != c:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    if c == "`":
        j = i + 1
        while text[j] != "`":
            if text[j] == "\\":
                j += 2
                continue
            if text.startswith("${", j):  # a placeholder: code until its closing brace
                depth.append("${")
                return j + 2
            j += 1
        return j + 1
    return i


def _regex_may_start(text: str, i: int) -> bool:
    """A ``/`` starts a regex where an operand is expected (after an operator or keyword)."""
    j = i - 1
    while j >= 0 and text[j] in " \t\n":
        j -= 1
    if j < 0 or text[j] in "(,=:[!&|?{};+-*%<>~^":
        return True
    word = re.search(r"[A-Za-z_$][\w$]*$", text[: j + 1])
    return bool(word) and word.group() in ("return", "typeof", "case", "of", "in")


def js_body_lines(text: str, start: int) -> int:
    """Lines from the function's header at ``start`` to its closing brace."""
    i = text.index("{", text.index(")", start))
    stack: list[str] = []
    while True:
        j = _skip(text, i, stack)
        if j != i:
            i = j
            continue
        c = text[i]
        if c == "{":
            stack.append("{")
        elif c == "}":
            top = stack.pop()
            if top == "${":  # back inside the template literal: find where it ends
                k = i + 1
                while text[k] != "`":
                    if text.startswith("${", k):
                        stack.append("${")
                        break
                    k += 2 if text[k] == "\\" else 1
                else:
                    i = k + 1
                    continue
                i = k + 2
                continue
            if not stack:
                return text.count("\n", start, i) + 1
        i += 1


def js_functions():
    for path in sorted((SRC / "web").rglob("*.js")):
        text = path.read_text()
        for m in _JS_FUNCTION.finditer(text):
            line_start = text.rfind("\n", 0, m.start()) + 1
            prefix = text[line_start : m.start()]
            if "//" in prefix or "*" in prefix.strip()[:1]:
                continue  # in a comment
            yield path.relative_to(SRC), m.group(1), js_body_lines(text, m.start())


def test_the_js_scanner_measures_what_it_should():
    src = (
        "export function mount(root) {\n"
        "  const s = `a ${x ? `{${y}}` : '}'} b`; // }\n"
        "  /* } */ const r = '{', re = /[}]\\/{/g, half = a / 2 / b;\n"
        "  if (a) { b(); }\n"
        "}\n"
        "function two() { return 1; }\n"
    )
    assert [(n, ln) for n, ln in _measure(src)] == [("mount", 5), ("two", 1)]


def _measure(text: str):
    return [(m.group(1), js_body_lines(text, m.start())) for m in _JS_FUNCTION.finditer(text)]


def test_no_python_function_is_over_80_lines():
    found = list(python_functions())
    assert len(found) > 500, f"the walk found only {len(found)} functions under {SRC}"
    long = [f"{p}: {name} ({n} lines)" for p, name, n in found if n > PY_LIMIT]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def test_no_js_function_is_too_long():
    found = list(js_functions())
    assert any(name == "mount" for _, name, _ in found), "the scanner found no view's mount"
    long = [
        f"{p}: {name} ({n} lines)"
        for p, name, n in found
        if n > (JS_MOUNT_LIMIT if name == "mount" else JS_LIMIT)
    ]
    assert not long, "split these into named render functions:\n" + "\n".join(long)


@pytest.mark.parametrize("limit", [PY_LIMIT])
def test_the_python_measure_counts_whole_functions(limit, tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(limit))
    tree = ast.parse(f"def f():\n{body}\n")
    fn = tree.body[0]
    assert fn.end_lineno - fn.lineno + 1 == limit + 1


# -- the floors: which package may import which (docs/DESIGN.md, "Map") ---------------------
# A package is a top-level module or subpackage of corral; ``corral`` itself (the version)
# may be imported by anyone. Imports inside functions count: a lazy import is still a
# dependency of the design.
_LEAVES = {"errors": set(), "net": set(), "redact": set(), "events": set()}
ALLOWED: dict[str, set[str]] = {
    **_LEAVES,
    "__main__": {"cli"},
    "types": {"errors"},
    "gguf": {"errors"},
    "gpu": {"errors"},
    "store": {"errors", "types", "redact"},
    "settings": {"errors", "types", "store"},
    "client": {"errors", "net", "settings"},
    "launchspec": {"errors", "types"},
    "hub": {"errors", "types", "gguf"},
    "models": {"errors", "types", "gguf", "store", "supervisor.states"},
    "keys": {"errors", "types", "store", "settings"},
    "pulls": {"errors", "events", "hub", "models", "settings", "store"},
    "builds": {"errors", "events", "gpu", "settings", "store"},
    "fit": {"errors", "gguf", "gpu", "builds"},
    "presets": {"errors", "types", "store", "builds", "launchspec", "redact"},
    "supervisor": {
        "errors", "types", "events", "redact", "store", "settings", "launchspec",
        "builds", "fit", "models", "gpu", "gguf",
    },
    "upstream": {"errors"},
    "nodes": {"errors", "types", "events", "store"},  # linked corral daemons: httpx, no more
    "ollama": {"errors", "types", "gguf"},  # pure translation: no I/O, nothing above it
    "service": {"errors", "net"},  # unit and plist texts: pure, the CLI writes them
    "metrics": {"gpu", "supervisor"},
    "doctor": {"builds", "errors", "gpu", "settings", "store", "supervisor"},
    "router": {
        "errors", "types", "events", "redact", "store", "settings", "fit", "metrics",
        "models", "presets", "supervisor", "upstream", "gpu", "launchspec",
    },
}  # fmt: skip
# api may import anything but cli; cli anything but api, except cli/daemon.py serving it.
_NOT_FOR = {"api": {"cli"}, "cli": {"api"}}
_MAY_SERVE = {("cli/daemon.py", "api")}


def _package_of(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "corral"
    if parts[:2] == ["supervisor", "states"]:
        return "supervisor.states"
    return parts[0]


def _imports(path: Path) -> set[str]:
    """The corral modules ``path`` imports, wherever in the file."""
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "corral"}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            if target.split(".")[0] != "corral":
                continue
            for alias in node.names:  # `from corral import presets` imports corral.presets
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    SRC.parent / Path(*sub.split("."))
                ).is_dir()
                found.add(sub if is_module else target)
    return found


def test_each_package_imports_only_the_floors_below_it():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        mine = _package_of(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        mine = "supervisor" if mine == "supervisor.states" else mine
        for target in sorted(_imports(path)):
            theirs = _package_of(target)
            if theirs in (mine, "corral") or theirs.split(".")[0] == mine:
                continue
            rel = str(path.relative_to(SRC))
            if mine in _NOT_FOR:
                if theirs.split(".")[0] in _NOT_FOR[mine] and (rel, theirs) not in _MAY_SERVE:
                    wrong.append(f"{rel} imports {target}")
                continue
            allowed = ALLOWED.get(mine)
            if allowed is None:
                wrong.append(f"{rel}: package {mine!r} has no row in ALLOWED (and the Map)")
            elif theirs not in allowed and theirs.split(".")[0] not in allowed:
                wrong.append(f"{rel} imports {target} ({mine} may import {sorted(allowed)})")
    assert not wrong, "imports across the floors (docs/DESIGN.md, Map):\n" + "\n".join(wrong)


def test_the_floor_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "corral" / "store"
    pkg.mkdir(parents=True)
    (tmp_path / "corral" / "router.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "db.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from corral import router\n    from . import db\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "corral")
    assert _imports(pkg / "x.py") == {"corral.router", "corral.store.db"}
