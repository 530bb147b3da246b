"""The three kinds of compiled guests a sandbox process holds, their export checks, and the byte-bounded
LRU they are kept in.

- ``CompiledGuest`` (guest ABI kind 1, "core"): no imports; exports ``memory``, ``alloc``, ``run``.
- ``WasiGuest`` (kind 2, "WASI command"): imports only from ``wasi.ALLOWED``; exports ``memory`` and
  ``_start``.
- ``PythonGuest``: a Python step (``pystep``) and the kind-2 interpreter that runs it.

Each carries ``size_bytes``, what it costs the process: the native code of a compiled module (its
serialized size), or the source of a Python step (its interpreter is a cache entry of its own, refreshed
whenever a step that uses it runs). ``ModuleCache`` evicts the least recently used guests past
``entries_max`` or ``bytes_max``: 12 small modules took a sandbox process from 30 to 219 MiB when the cache
only counted entries. The newest entry always stays, even alone above ``bytes_max`` (it is about to run).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from wasmtime import FuncType, InstancePre, MemoryType, Module, ValType

from pangea_p2p.errors import ForbiddenImport, InvalidModule
from pangea_p2p.sandbox.pystep import PythonStep


@dataclass(frozen=True, slots=True)
class _Compiled:
    cid: str
    module: Module
    pre: InstancePre
    size_bytes: int  # its native code


@dataclass(frozen=True, slots=True)
class CompiledGuest(_Compiled):
    """A kind-1 module ready to instantiate, with the indices of its ABI exports."""

    memory_index: int
    alloc_index: int
    run_index: int


@dataclass(frozen=True, slots=True)
class WasiGuest(_Compiled):
    """A kind-2 module ready to instantiate with the deterministic WASI host."""


@dataclass(frozen=True, slots=True)
class PythonGuest:
    """A Python step and the interpreter that runs it."""

    cid: str
    step: PythonStep
    interpreter: WasiGuest
    size_bytes: int = 0


Guest = CompiledGuest | WasiGuest | PythonGuest


def _is_type(ty: Any, params: list[ValType], results: list[ValType]) -> bool:
    return isinstance(ty, FuncType) and list(ty.params) == params and list(ty.results) == results


def _memory_problem(ty: Any) -> str | None:
    if not isinstance(ty, MemoryType) or ty.is_64 or ty.is_shared:
        return "no exported 32-bit unshared memory `memory`"
    return None


def check_abi(module: Module) -> tuple[int, int, int]:
    """Refuse imports and check the kind-1 exports; the export indices of (memory, alloc, run)."""
    imports = module.imports
    if imports:
        names = ", ".join(f"{imp.module}.{imp.name}" for imp in imports[:5])
        more = f" and {len(imports) - 5} more" if len(imports) > 5 else ""
        raise ForbiddenImport(f"module imports {names}{more}; guests may import nothing")
    indices: dict[str, int] = {}
    types: dict[str, Any] = {}
    for i, export in enumerate(module.exports):
        if export.name in ("memory", "alloc", "run"):
            indices[export.name] = i
            types[export.name] = export.type
    i32, i64 = ValType.i32(), ValType.i64()
    problems = [p for p in [_memory_problem(types.get("memory"))] if p]
    if not _is_type(types.get("alloc"), [i32], [i32]):
        problems.append("no export `alloc: (i32) -> i32`")
    if not _is_type(types.get("run"), [i32, i32], [i64]):
        problems.append("no export `run: (i32, i32) -> i64`")
    if problems:
        raise InvalidModule("module does not follow the guest ABI: " + "; ".join(problems))
    return indices["memory"], indices["alloc"], indices["run"]


def check_wasi_exports(module: Module) -> None:
    """The kind-2 exports: ``memory`` and ``_start: () -> ()``; InvalidModule naming what is missing."""
    types = {export.name: export.type for export in module.exports}
    problems = [p for p in [_memory_problem(types.get("memory"))] if p]
    if not _is_type(types.get("_start"), [], []):
        problems.append("no export `_start: () -> ()`")
    if problems:
        raise InvalidModule("module imports WASI functions but is not a WASI command (guest ABI kind 2): "
                            + "; ".join(problems))


class ModuleCache:
    """Guests by canonical CID, least recently used first, bounded in count and in bytes."""

    def __init__(self, entries_max: int, bytes_max: int) -> None:
        self.entries_max = entries_max
        self.bytes_max = bytes_max
        self._guests: OrderedDict[str, Guest] = OrderedDict()
        self.bytes = 0

    def __contains__(self, cid: object) -> bool:
        return cid in self._guests

    def __len__(self) -> int:
        return len(self._guests)

    def cids(self) -> list[str]:
        return list(self._guests)

    def get(self, cid: str) -> Guest | None:
        guest = self._guests.get(cid)
        if guest is not None:
            self._guests.move_to_end(cid)
            if isinstance(guest, PythonGuest) and guest.interpreter.cid in self._guests:
                self._guests.move_to_end(guest.interpreter.cid)
        return guest

    def put(self, guest: Guest) -> None:
        old = self._guests.pop(guest.cid, None)
        if old is not None:
            self.bytes -= old.size_bytes
        self._guests[guest.cid] = guest
        self.bytes += guest.size_bytes
        while len(self._guests) > 1 and (len(self._guests) > self.entries_max or self.bytes > self.bytes_max):
            _, evicted = self._guests.popitem(last=False)
            self.bytes -= evicted.size_bytes

    def clear(self) -> None:
        self._guests.clear()
        self.bytes = 0
