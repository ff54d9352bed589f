"""The package's imports go one way (diffperf/layers.py): no import of a higher layer, no import
circle, and no import inside a function unless a comment says why it is there (an optional
dependency, `# optional: ...`, or start-up cost, `# start-up: ...`)."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path


from diffperf.layers import LAYER_NAMES, layer_of, rank

PACKAGE = Path(__file__).resolve().parent.parent / "diffperf"
# the reason a function imports: on the import's first line or on the line above
WHY = re.compile(r"#\s*(optional|start-up)\b")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    path: Path
    rel: str  # the file, from the package's parent folder
    line: int
    target: str  # a module of the package, or the top-level name of another package
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:`: never executed

    def where(self) -> str:
        return f"{self.rel}:{self.line} ({self.module})"


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The modules an import statement loads: a module of the package (`from . import x` of a
    submodule is that submodule), else the top-level name of another package."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        if name.split(".")[0] != PACKAGE.name:
            out.append(name.split(".")[0])
            continue
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(known: dict[str, Path] | None = None) -> list[Import]:
    """Every import statement of the package."""
    known = modules() if known is None else known
    top = known[PACKAGE.name].parent.parent
    out: list[Import] = []
    for module, path in known.items():
        rel = path.relative_to(top).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"

        def walk(node: ast.AST, in_function: bool, type_checking: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, module, is_package, known):
                        out.append(Import(module, path, rel, child.lineno, target, in_function, type_checking))
                tc = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), tc)

        walk(tree, False, False)
    return out


def layer_violations(found: list[Import], known: dict[str, Path]) -> list[str]:
    bad = []
    for imp in found:
        if imp.target not in known:
            continue
        low, high = layer_of(imp.target), layer_of(imp.module)
        if rank(low) > rank(high):
            bad.append(f"{imp.where()}: imports {imp.target} of layer {low!r}, above its own layer {high!r} "
                       f"(rule: a module imports only its own layer or lower ones; layers: {' -> '.join(LAYER_NAMES)})")
    return bad


def cycles(found: list[Import], known: dict[str, Path]) -> list[list[Import]]:
    """Import circles between modules of the package (a DFS over the executed imports; imports
    under TYPE_CHECKING never run and make no circle). Each circle is given once, as its edges."""
    graph: dict[str, list[Import]] = {m: [] for m in known}
    for imp in found:
        if imp.target in known and imp.target != imp.module and not imp.type_checking:
            graph[imp.module].append(imp)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[Import] = []
    on_stack: list[str] = []
    circles, seen = [], set()

    def visit(m: str) -> None:
        state[m] = 1
        on_stack.append(m)
        for imp in graph[m]:
            t = imp.target
            if state.get(t) == 1:
                start = on_stack.index(t)
                circle = stack[start:] + [imp]
                key = frozenset((e.module, e.target) for e in circle)
                if key not in seen:
                    seen.add(key)
                    circles.append(circle)
            elif t not in state:
                stack.append(imp)
                visit(t)
                stack.pop()
        on_stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return circles


def unexplained_function_imports(found: list[Import]) -> list[str]:
    bad, lines = [], {}
    for imp in found:
        if not imp.in_function:
            continue
        text = lines.setdefault(imp.path, imp.path.read_text().splitlines())
        here, above = text[imp.line - 1], text[imp.line - 2] if imp.line > 1 else ""
        if WHY.search(here) or WHY.search(above):
            continue
        # a run of imports under one comment: the import on the line above carries the reason
        if _explained_run(text, imp.line - 1):
            continue
        bad.append(f"{imp.where()}: imports {imp.target} inside a function without saying why (rule: a function "
                   "imports only an optional dependency, '# optional: <what>', or to save start-up cost, "
                   "'# start-up: <what>', on the import's line or the line above)")
    return sorted(set(bad))


def _explained_run(text: list[str], index: int) -> bool:
    """Whether line `index` (0-based) is in a block of import lines whose first line, or the
    line above it, carries the reason."""
    i = index
    while i > 0 and re.match(r"\s*(from\s+\S+\s+)?import\s", text[i - 1]):
        i -= 1
        if WHY.search(text[i]):
            return True
    return i > 0 and i != index and WHY.search(text[i - 1]) is not None


# --- the package

def test_every_module_has_a_layer():
    unplaced = []
    for module in modules():
        try:
            layer_of(module)
        except KeyError as e:
            unplaced.append(str(e))
    assert not unplaced, "\n".join(unplaced)


def test_no_module_imports_a_higher_layer():
    known = modules()
    bad = layer_violations(imports(known), known)
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    known = modules()
    found = cycles(imports(known), known)
    assert not found, "\n".join(
        "import circle: " + " -> ".join([c[0].module] + [e.target for e in c]) + "; at "
        + ", ".join(e.where() for e in c) + " (rule: no circle between modules)" for c in found)


def test_function_level_imports_say_why():
    bad = unexplained_function_imports(imports())
    assert not bad, "\n".join(bad)


# --- the checks themselves, on a made-up package

def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    root = tmp_path / PACKAGE.name
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules(root)


def test_an_import_of_a_higher_layer_is_named_with_module_line_and_rule(tmp_path):
    known = _package(tmp_path, {"__init__.py": "", "errors.py": "\n\nfrom .report import tables\n",
                                "report/__init__.py": "", "report/tables.py": "from ..errors import UsageError\n"})
    bad = layer_violations(imports(known), known)
    assert len(bad) == 1
    assert "diffperf/errors.py:3 (diffperf.errors): imports diffperf.report.tables of layer 'report'" in bad[0]
    assert "above its own layer 'core'" in bad[0]


def test_a_circle_is_found_with_every_edge(tmp_path):
    known = _package(tmp_path, {
        "__init__.py": "", "build.py": "from . import measure\n", "measure.py": "import os\nfrom .runner import x\n",
        "runner.py": "def f():\n    from .build import y  # start-up: test\n",
        "record.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .runner import z\n"})
    found = cycles(imports(known), known)
    assert [[(e.module, e.target, e.line) for e in c] for c in found] == [[
        ("diffperf.build", "diffperf.measure", 1), ("diffperf.measure", "diffperf.runner", 2),
        ("diffperf.runner", "diffperf.build", 2)]]


def test_a_function_level_import_needs_its_reason(tmp_path):
    known = _package(tmp_path, {"__init__.py": "", "errors.py": (
        "def a():\n    import json\n"                                   # 2: no reason
        "def b():\n    import csv  # optional: nothing\n"               # 4
        "def c():\n    # start-up: slow\n    import torch\n    from torch import nn\n"  # 7, 8: one run
        "def d():\n    import math  # why not\n")})                     # 10: not a reason
    bad = unexplained_function_imports(imports(known))
    assert [b.split(":")[1].split(" ")[0] for b in bad] == ["10", "2"]
    assert all("inside a function without saying why" in b for b in bad)
