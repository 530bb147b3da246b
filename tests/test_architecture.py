"""The cheapest guards of the design: pangea_p2p/core stays pure (no I/O, no clock, no global randomness), and
no module of pangea_p2p is in an import cycle.

Walks the AST of every module under pangea_p2p/core, and of every pangea_p2p module they import, and fails on
an import of an I/O or clock module, a call of module-level ``random`` functions, or a call of ``open``.

Walks the AST of every module of pangea_p2p for its imports of pangea_p2p modules — every one: at the top,
under ``if TYPE_CHECKING:``, inside functions (a cycle hidden from the interpreter still says that two modules
are one thing, or that a third is missing) — and fails on a cycle, but for the known ones listed below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pangea_p2p"
FORBIDDEN = {
    "trio", "libp2p", "socket", "time", "os", "asyncio", "threading", "subprocess", "selectors",
    "datetime", "pathlib", "multiprocessing", "wasmtime", "httpx", "h11", "sqlite3", "shutil",
    "signal", "tempfile", "concurrent", "multiaddr", "sniffio", "anyio", "trio_typing",
}


def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "pangea_p2p":
        return None
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    return None


def violations(source: str, filename: str) -> tuple[list[str], list[str]]:
    """(problems, pangea_p2p modules imported) of one module's source."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    imported: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "random":
                problems += [
                    f"{filename}:{node.lineno}: from random import {a.name} (pass an rng instead)"
                    for a in node.names if a.name != "Random"
                ]
            imported += [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in FORBIDDEN:
                problems.append(f"{filename}:{node.lineno}: imports {name}")
            imported.append(name)
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id == "random" and func.attr not in {"Random"}):
                problems.append(f"{filename}:{node.lineno}: calls random.{func.attr} (pass an rng instead)")
            if isinstance(func, ast.Name) and func.id in {"open", "input", "print"}:
                problems.append(f"{filename}:{node.lineno}: calls {func.id}()")
    return problems, [m for m in imported if m.startswith("pangea_p2p")]


def core_closure_problems() -> list[str]:
    todo = sorted(PKG.joinpath("core").rglob("*.py"))
    assert todo, "pangea_p2p/core has no modules"
    seen: set[Path] = set()
    problems: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen or path.name.endswith("_pb2.py"):
            continue
        seen.add(path)
        found, imported = violations(path.read_text(), str(path.relative_to(ROOT)))
        problems += found
        for name in imported:
            dep = _module_path(name)
            if dep is not None and dep not in seen:
                todo.append(dep)
    return problems


def test_core_is_pure() -> None:
    assert core_closure_problems() == []


@pytest.mark.parametrize(
    "source",
    [
        "import time\n",
        "from os import path\n",
        "import trio.lowlevel\n",
        "from libp2p import new_host\n",
        "import random\nx = random.random()\n",
        "from random import choice\n",
        "with open('f') as f: pass\n",
    ],
)
def test_checker_catches_impurity(source: str) -> None:
    problems, _ = violations(source, "example.py")
    assert problems, f"checker missed an impurity in {source!r}"


def test_checker_allows_injected_rng() -> None:
    problems, _ = violations("import random\ndef f(rng: random.Random) -> float:\n    return rng.random()\n", "x")
    assert problems == []


def test_importing_core_loads_no_io_library() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in PKG.joinpath("core").rglob("*.py")
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'trio', 'libp2p', 'wasmtime', 'asyncio'})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"importing the core loaded: {out.stdout.strip()}"


# --- import cycles ------------------------------------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool, modules: Iterable[str]) -> set[str]:
    """The modules among ``modules`` that the module ``name`` imports, wherever the import statement is.
    ``from pkg import x`` names the module ``pkg.x`` if there is one, else ``pkg``."""
    known = set(modules)

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            targets = [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            module = resolve(target)
            if module is not None and module != name:
                found.add(module)
    return found


def import_graph(package: Path = PKG) -> dict[str, set[str]]:
    """module -> the package's modules it imports (see ``imports_of``)."""
    paths = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    return {name: imports_of(p.read_text(), name, p.name == "__init__.py", paths) for name, p in paths.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_import_cycles() -> None:
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles (imports under TYPE_CHECKING and in functions count too): {found}"


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        # a.py imports b at the top; b.py imports a only for type checking
        ({"a": "import pkg.b\n", "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"},
         [{"pkg.a", "pkg.b"}]),
        # the import inside a function counts; so does a relative one, and one through three modules
        ({"a": "from pkg.b import x\n", "b": "def f():\n    from . import c\n", "c": "from .a import y\n"},
         [{"pkg.a", "pkg.b", "pkg.c"}]),
        # an import of the package (its __init__) is not an import of every module in it
        ({"a": "import pkg\n", "b": "from pkg import a\n"}, []),
        ({"a": "import pkg.b\n", "b": "import json\n"}, []),
    ],
)
def test_the_cycle_finder_sees_every_import(tmp_path: Path, modules: dict[str, str], expected: list[set[str]]) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in modules.items():
        (package / f"{name}.py").write_text(source)
    assert sorted(map(sorted, cycles(import_graph(package)))) == sorted(map(sorted, expected))
