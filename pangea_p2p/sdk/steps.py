"""Execute steps written in Python: the module bytes of a step, from a function or a file.

    @job.execute
    def count_words(chunk: bytes) -> bytes:      # runs on the network, in MicroPython inside wasm
        ...

    python_step(count_words)                     # the step's module bytes (what Job.execute stores)
    python_file_step(Path("step.py"), "count")   # a whole file; its function ``count`` is the entry

A step is the function's own source (decorators removed), so it must be self-contained: it sees no module
globals of the file it was written in, so imports and helpers go inside it (or use ``python_file_step``,
whose whole file travels). It takes the chunk's bytes and returns bytes; ``print`` goes to the task's log.
It runs in MicroPython (a subset of Python 3: no third-party packages, no files, no network, the clock
reads 0, no garbage collection during a step). See protocols/guest-abi.md, "Python steps".
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path

from pangea_p2p.errors import ConfigError, InvalidModule
from pangea_p2p.sandbox.pystep import PythonStep

StepFn = Callable[[bytes], bytes]


def _step(source: str, entry: str, where: str) -> bytes:
    try:
        return PythonStep.of_source(source, entry).encode()
    except InvalidModule as exc:
        raise ConfigError("execute", f"{where}: {exc.message}") from None


def python_step(fn: StepFn) -> bytes:
    """The module bytes of a Python step made of ``fn``'s source; ConfigError if it cannot be one."""
    name = getattr(fn, "__name__", "")
    if not inspect.isfunction(fn) or name == "<lambda>":
        raise ConfigError("execute", f"a Python step is a function defined with def, got {fn!r}")
    free = fn.__code__.co_freevars
    if free:
        raise ConfigError("execute", f"{name} uses {', '.join(free)} from the function around it; a Python step "
                                     "must be self-contained (define what it needs inside it)")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ConfigError("execute", f"the source of {name} is not available ({exc}); use python_file_step") \
            from None
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name),
                None)
    if node is None or node.end_lineno is None:
        raise ConfigError("execute", f"cannot find the definition of {name} in its source")
    lines = source.splitlines(keepends=True)
    return _step("".join(lines[node.lineno - 1:node.end_lineno]), name, name)


def python_file_step(path: Path, entry: str | None = None) -> bytes:
    """The module bytes of a step made of the Python file ``path``, calling its function ``entry`` (default:
    the file's only top-level function). ConfigError naming the file for anything wrong."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("execute", f"cannot read {path}: {exc}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError("execute", f"{path}:{exc.lineno}: {exc.msg}") from None
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if entry is None:
        if len(functions) != 1:
            found = ", ".join(functions) or "none"
            raise ConfigError("execute", f"{path} defines {len(functions)} top-level functions ({found}); name the "
                                         f"step's function as {path}:FUNCTION")
        entry = functions[0]
    elif entry not in functions:
        raise ConfigError("execute", f"{path} defines no top-level function {entry!r}")
    return _step(source, entry, str(path))


def split_file_spec(spec: str) -> tuple[Path, str | None] | None:
    """``step.py`` or ``step.py:function`` as (path, function or None); None when ``spec`` names no .py file."""
    path, _, entry = spec.partition(".py:")
    if entry:
        return Path(path + ".py"), entry
    return (Path(spec), None) if spec.endswith(".py") else None
