"""What a module is, read from its bytes before anything is compiled: its kind, imports and size figures.

Compiling is the expensive and the dangerous step: wasmtime's compile time and memory grow with the number
and size of functions (measured: 10,000 empty functions in 100 KB take 0.85 s and 96 MiB; 100,000 in 1 MB
take 6 s and 630 MiB and produce 31 MB of native code), and a content id costs an attacker nothing to vary.
So the section headers are parsed here first, in a few microseconds per KiB, and a module is refused before
it reaches the compiler when it

- imports anything outside the allowlist of its kind (``ForbiddenImport``): a module that exports
  ``_start`` is a *WASI command* (protocols/guest-abi.md, kind 2) and may import the functions of
  ``pangea_p2p.sandbox.wasi``'s allowlist; any other module is a *core* guest (kind 1) and may import
  nothing;
- defines more than ``module_functions_max`` functions, or one function body larger than
  ``function_bytes_max`` (``InvalidModule``, saying which);
- declares a table of more than ``TABLE_ELEMENTS_MAX`` elements (``InvalidModule``: a table that large is
  no memory the task asked for, it is a module this sandbox does not run);
- lacks the exports of its kind by name (``InvalidModule``; their types are checked after compiling).

The parser reads only what these checks need (import, function, table, export and code sections) and treats the
bytes as hostile: every length is checked against what is left, LEB128 integers are bounded, and anything
malformed is ``InvalidModule`` with the offset. Sections it does not need are skipped by their length;
wasmtime validates the whole module later.
"""

from __future__ import annotations

from dataclasses import dataclass

from pangea_p2p.errors import ForbiddenImport, InvalidModule

WASM_MAGIC = b"\x00asm"
WASM_VERSION_1 = b"\x01\x00\x00\x00"
TABLE_ELEMENTS_MAX = 100_000
IMPORTS_MAX = 1_000

SECTION_IMPORT = 2
SECTION_FUNCTION = 3
SECTION_TABLE = 4
SECTION_EXPORT = 7
SECTION_CODE = 10
EXPORTS_MAX = 100_000
IMPORT_KINDS = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    name: str
    kind: str  # function, table, memory, global, tag


@dataclass(frozen=True, slots=True)
class ModuleShape:
    """The figures of a module that decide whether it may be compiled."""

    imports: tuple[Import, ...]
    exports: frozenset[tuple[str, str]]  # (name, kind) of every export
    functions: int  # defined here (imported ones not counted)
    code_bytes: int
    function_bytes_max: int  # the largest function body
    table_elements_min: int  # the largest initial table size

    @property
    def is_wasi_command(self) -> bool:
        """Kind 2: it exports ``_start`` (kind 1 exports ``alloc`` and ``run``)."""
        return ("_start", "function") in self.exports


class _Reader:
    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def fail(self, what: str) -> InvalidModule:
        return InvalidModule(f"malformed WebAssembly module: {what} at offset {self.pos}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        return self._leb(5, 0xFFFF_FFFF)

    def u64(self) -> int:
        return self._leb(10, 0xFFFF_FFFF_FFFF_FFFF)

    def _leb(self, bytes_max: int, value_max: int) -> int:
        result = shift = 0
        for _ in range(bytes_max):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                if result > value_max:
                    raise self.fail("integer too large")
                return result
            shift += 7
        raise self.fail("integer too long")

    def skip(self, n: int) -> None:
        if n > self.end - self.pos:
            raise self.fail(f"length {n} past the end")
        self.pos += n

    def name(self) -> str:
        n = self.u32()
        start = self.pos
        self.skip(n)
        try:
            return bytes(self.data[start:self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("name that is not UTF-8") from None

    def limits(self) -> int:
        flags = self.byte()
        if flags & ~0x07:
            raise self.fail(f"limits flags {flags:#x}")
        minimum = self.u64() if flags & 0x04 else self.u32()
        if flags & 0x01:
            _ = self.u64() if flags & 0x04 else self.u32()
        return minimum


def _imports(r: _Reader) -> list[Import]:
    count = r.u32()
    if count > IMPORTS_MAX:
        raise InvalidModule(f"module has {count} imports; a guest may have at most {IMPORTS_MAX}")
    out = []
    for _ in range(count):
        module, name = r.name(), r.name()
        kind = r.byte()
        if kind == 0:
            r.u32()
        elif kind == 1:
            r.byte()  # reference type
            r.limits()
        elif kind == 2:
            r.limits()
        elif kind == 3:
            r.byte()
            r.byte()
        elif kind == 4:
            r.byte()
            r.u32()
        else:
            raise r.fail(f"import kind {kind}")
        out.append(Import(module, name, IMPORT_KINDS[kind]))
    return out


def _exports(r: _Reader) -> frozenset[tuple[str, str]]:
    count = r.u32()
    if count > EXPORTS_MAX:
        raise InvalidModule(f"module has {count} exports; a guest may have at most {EXPORTS_MAX}")
    out = set()
    for _ in range(count):
        name = r.name()
        kind = r.byte()
        r.u32()
        out.add((name, IMPORT_KINDS.get(kind, "other")))
    return frozenset(out)


def _table_min(r: _Reader) -> int:
    largest = 0
    for _ in range(r.u32()):
        if r.pos < r.end and r.data[r.pos] == 0x40:  # a table with an initialiser (function-references
            break  # proposal, off in the engine): wasmtime refuses it, and the store limits tables anyway
        r.byte()  # reference type
        largest = max(largest, r.limits())
    return largest


def _code(r: _Reader) -> tuple[int, int]:
    count = r.u32()
    largest = 0
    for _ in range(count):
        size = r.u32()
        r.skip(size)
        largest = max(largest, size)
    return count, largest


def read_shape(data: bytes | memoryview, functions_max: int | None = None) -> ModuleShape:
    """The shape of ``data``; InvalidModule if it is not a WebAssembly 1.0 binary or its sections are malformed,
    or (without reading the function bodies) if it defines more than ``functions_max`` functions."""
    if bytes(data[:4]) != WASM_MAGIC:
        raise InvalidModule("module is not a WebAssembly binary (it does not start with \\0asm)")
    if bytes(data[4:8]) != WASM_VERSION_1:
        raise InvalidModule("module is not a WebAssembly 1.0 core module (version field "
                            f"{bytes(data[4:8]).hex()}; components are not run)")
    r = _Reader(data, 8)
    imports: list[Import] = []
    exports: frozenset[tuple[str, str]] = frozenset()
    functions = code_count = function_bytes = table_min = 0
    code_bytes = 0
    while r.pos < r.end:
        section = r.byte()
        size = r.u32()
        start = r.pos
        r.skip(size)
        body = _Reader(data, start, start + size)
        if section == SECTION_IMPORT:
            imports = _imports(body)
        elif section == SECTION_FUNCTION:
            functions = body.u32()
            if functions_max is not None and functions > functions_max:
                raise too_many_functions(functions, functions_max)
        elif section == SECTION_TABLE:
            table_min = _table_min(body)
        elif section == SECTION_EXPORT:
            exports = _exports(body)
        elif section == SECTION_CODE:
            code_bytes = size
            code_count, function_bytes = _code(body)
    if code_count != functions:
        raise InvalidModule(f"malformed WebAssembly module: {functions} functions declared, {code_count} bodies")
    return ModuleShape(tuple(imports), exports, functions, code_bytes, function_bytes, table_min)


def too_many_functions(functions: int, functions_max: int) -> InvalidModule:
    return InvalidModule(f"module defines {functions} functions; this node compiles at most {functions_max} "
                         "(sandbox.module_functions_max)")


def check_shape(shape: ModuleShape, *, functions_max: int, function_bytes_max: int,
                allowed_imports: frozenset[tuple[str, str]]) -> None:
    """Refuse a module this sandbox will not compile: ForbiddenImport or InvalidModule, one line saying why.

    A module exporting ``_start`` is a WASI command (kind 2) and may import the functions in
    ``allowed_imports``; any other module is kind 1 and may import nothing."""
    if shape.is_wasi_command:
        forbidden = [i for i in shape.imports if i.kind != "function" or (i.module, i.name) not in allowed_imports]
        rule = "a WASI command may import only the deterministic WASI functions of protocols/guest-abi.md"
    else:
        forbidden = list(shape.imports)
        rule = ("guests may import nothing (a WASI command, which exports _start, may import the deterministic "
                "WASI functions of protocols/guest-abi.md)")
    if forbidden:
        names = ", ".join(f"{i.module}.{i.name}" for i in forbidden[:5])
        more = f" and {len(forbidden) - 5} more" if len(forbidden) > 5 else ""
        raise ForbiddenImport(f"module imports {names}{more}; {rule}")
    needed = [("memory", "memory"), ("_start", "function")] if shape.is_wasi_command else \
        [("memory", "memory"), ("alloc", "function"), ("run", "function")]
    missing = [f"{name} ({kind})" for name, kind in needed if (name, kind) not in shape.exports]
    if missing:
        raise InvalidModule("module does not follow the guest ABI: it does not export " + ", ".join(missing))
    if shape.functions > functions_max:
        raise too_many_functions(shape.functions, functions_max)
    if shape.function_bytes_max > function_bytes_max:
        raise InvalidModule(f"module has a function body of {shape.function_bytes_max} bytes; this node compiles at "
                            f"most {function_bytes_max} per function (sandbox.function_bytes_max)")
    if shape.table_elements_min > TABLE_ELEMENTS_MAX:
        raise InvalidModule(f"module declares a table of {shape.table_elements_min} elements; a guest may have at "
                            f"most {TABLE_ELEMENTS_MAX} (this is the module's own table, not the task's memory)")
