"""The cheapest guard of the design: pangea_p2p/core stays pure (no I/O, no clock, no global randomness).

Walks the AST of every module under pangea_p2p/core, and of every pangea_p2p module they import, and fails on
an import of an I/O or clock module, a call of module-level ``random`` functions, or a call of ``open``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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
