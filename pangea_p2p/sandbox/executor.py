"""The in-process executor: compile guests by CID and run tasks synchronously with limits and metering.

Used by the sandbox processes of the pool (``pangea_p2p.sandbox.pool``), by benchmarks and by
``measure_speed``. Running guests in the peer's own process is safe against the guest (it is sandboxed) but
not against wasmtime aborting the process on a bug, which is why the node uses the pool.

Per module (once, keyed by CID, bounded LRU): check the bytes name the CID, compile (or load this node's own
serialized code from the disk cache), refuse any import (the allowlist is empty: no WASI, no host
functions, so no files, sockets, environment, clock or randomness), check the guest ABI exports
(``protocols/guest-abi.md``) and keep an ``InstancePre``. Failed verdicts are cached by CID too.

Per guest run: a fresh ``Store`` with the memory limit, fuel budget and epoch deadline; instantiate;
``alloc``; copy the input; ``run``; copy the output; report fuel, memory, wall and CPU time. Nothing
survives between runs but the compiled code, so task B cannot see task A's memory (nor chunk 2 chunk 1's).
A task over a chunk list (``run_chunks``) is one run per chunk, the fuel budget shared by all of them.

CIDs are canonicalised at this boundary (any multibase spelling names the same cache entry) and inputs
are seen as bytes whatever buffer they come in (``_boundary``).
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wasmtime import FuncType, InstancePre, Linker, MemoryType, Module, Store, Trap, TrapCode, ValType, WasmtimeError

from pangea_p2p.core.cid import cid_matches
from pangea_p2p.errors import (
    FailureKind,
    ForbiddenImport,
    InvalidModule,
    LocalProtocolError,
    Rejected,
    RemoteProtocolError,
    SandboxError,
)
from pangea_p2p.sandbox import _fastcall as fc
from pangea_p2p.sandbox._boundary import Input, as_input, canonical_cid, module_too_large, refusal
from pangea_p2p.sandbox.config import WASM_PAGE_BYTES, SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.engine import DiskCache, EpochTicker, engine_fingerprint, make_engine
from pangea_p2p.sandbox.result import ChunksResult, MeteringReport, SandboxResult

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

WASM_MAGIC = b"\x00asm"
TABLE_ELEMENTS_MAX = 100_000
REJECTED_CACHE_ENTRIES = 256
GUEST_ERROR_LEN = 0xFFFF_FFFF
GUEST_ERR_OUT_OF_MEMORY = 1
GUEST_ERR_INVALID_INPUT = 2
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

_TRAP_KINDS = {
    TrapCode.OUT_OF_FUEL: FailureKind.OUT_OF_FUEL,
    TrapCode.INTERRUPT: FailureKind.TIMEOUT,
    TrapCode.STACK_OVERFLOW: FailureKind.STACK_OVERFLOW,
}


@dataclass(frozen=True, slots=True)
class CompiledGuest:
    """A module ready to instantiate, with the indices of its ABI exports."""

    cid: str
    module: Module
    pre: InstancePre
    memory_index: int
    alloc_index: int
    run_index: int


class _TaskFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, trap_kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.trap_kind = trap_kind


class BytesVerifier:
    """Checks module bytes against their CID, remembering the last ``bytes`` object verified per CID.

    Hashing a 1 MiB module costs ~0.6 ms; a node keeps the module bytes it fetched and passes the same
    object every time, so an identity check makes repeated verification free.
    """

    def __init__(self, entries_max: int = 256) -> None:
        self._last: OrderedDict[str, bytes] = OrderedDict()
        self._entries_max = entries_max

    def matches(self, cid: str, data: bytes) -> bool:
        known = self._last.get(cid)
        if known is not None and known is data:
            self._last.move_to_end(cid)
            return True
        if not cid_matches(cid, data):
            return False
        if isinstance(data, bytes):
            self._last[cid] = data
            self._last.move_to_end(cid)
            while len(self._last) > self._entries_max:
                self._last.popitem(last=False)
        return True


def _is_type(ty: Any, params: list[ValType], results: list[ValType]) -> bool:
    return isinstance(ty, FuncType) and list(ty.params) == params and list(ty.results) == results


def check_abi(module: Module) -> tuple[int, int, int]:
    """Refuse imports and check the ABI exports; the export indices of (memory, alloc, run)."""
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
    problems = []
    if not isinstance(types.get("memory"), MemoryType) or types["memory"].is_64 or types["memory"].is_shared:
        problems.append("no exported 32-bit unshared memory `memory`")
    if not _is_type(types.get("alloc"), [i32], [i32]):
        problems.append("no export `alloc: (i32) -> i32`")
    if not _is_type(types.get("run"), [i32, i32], [i64]):
        problems.append("no export `run: (i32, i32) -> i64`")
    if problems:
        raise InvalidModule("module does not follow the guest ABI: " + "; ".join(problems))
    return indices["memory"], indices["alloc"], indices["run"]


def _first_line(text: str, deepest: bool = False) -> str:
    """The line of a wasmtime error that says what happened: the first (or deepest) cause, without noise."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "unknown error"
    for i, candidate in enumerate(lines):
        if candidate.startswith("Caused by:") and i + 1 < len(lines):
            causes = lines[i + 1:]
            line = causes[-1] if deepest else causes[0]
            break
    return " ".join(re.sub(r"^(\d+:\s*)?(wasm trap:\s*)?", "", line).split())[:300]


class Executor:
    """Compiles and runs guests in this process. Not thread-safe; one per process is the intended use."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.engine = make_engine(self.config)
        self._default_limits = self.config.default_limits()
        self._modules: OrderedDict[str, CompiledGuest] = OrderedDict()
        self._rejected: OrderedDict[str, SandboxError] = OrderedDict()
        self._verifier = BytesVerifier()
        self._disk = (DiskCache(self.config.cache_dir, engine_fingerprint(self.config))
                      if self.config.cache_dir is not None else None)
        self._ticker = EpochTicker(self.engine, self.config.epoch_tick_s)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ticker.stop()
        self._modules.clear()

    # -- modules -------------------------------------------------------------------------------------------

    def has_module(self, cid: str) -> bool:
        """True when ``cid`` is compiled here (or known to be refused), so its bytes are not needed."""
        canonical = self._canonical_or_none(cid)
        return canonical in self._modules or canonical in self._rejected

    def is_compiled(self, cid: str) -> bool:
        """True when ``cid`` is in the compiled-module cache."""
        return self._canonical_or_none(cid) in self._modules

    def compiled_cids(self) -> list[str]:
        """The (canonical) CIDs in the compiled-module cache, least recently used first."""
        return list(self._modules)

    @staticmethod
    def _canonical_or_none(cid: str) -> str | None:
        try:
            return canonical_cid(cid)
        except RemoteProtocolError:
            return None

    def compile(self, cid: str, module_bytes: bytes | None) -> CompiledGuest:
        """The compiled guest for ``cid`` (any spelling); raises the SandboxError of a refused module.

        InvalidModule / ForbiddenImport for a bad module (remembered by CID), Rejected for a module larger
        than this node's ``module_bytes_max`` (not remembered: another node may take it).
        """
        try:
            cid = canonical_cid(cid)
        except RemoteProtocolError as exc:
            raise InvalidModule(str(exc)) from None
        return self._compile(cid, module_bytes)

    def _compile(self, cid: str, module_bytes: bytes | None) -> CompiledGuest:
        guest = self._modules.get(cid)
        if guest is not None:
            self._modules.move_to_end(cid)
            return guest
        refused = self._rejected.get(cid)
        if refused is not None:
            raise type(refused)(refused.message)
        if module_bytes is None:
            raise LocalProtocolError(f"module {cid} is not compiled here and no bytes were given")
        if len(module_bytes) > self.config.module_bytes_max:
            raise Rejected(module_too_large(len(module_bytes), self.config.module_bytes_max))
        if not self._verifier.matches(cid, module_bytes):
            raise InvalidModule(f"module bytes do not match their content id {cid}")
        try:
            guest = self._compile_verified(cid, module_bytes)
        except SandboxError as exc:
            self._rejected[cid] = exc
            while len(self._rejected) > REJECTED_CACHE_ENTRIES:
                self._rejected.popitem(last=False)
            raise
        self._modules[cid] = guest
        while len(self._modules) > self.config.module_cache_entries:
            self._modules.popitem(last=False)
        return guest

    def _compile_verified(self, cid: str, module_bytes: bytes) -> CompiledGuest:
        if module_bytes[:4] != WASM_MAGIC:
            raise InvalidModule("module is not a WebAssembly binary (it does not start with \\0asm)")
        module = self._disk.load(self.engine, cid) if self._disk is not None else None
        compiled_here = module is None
        if module is None:
            try:
                module = Module(self.engine, module_bytes)
            except WasmtimeError as exc:
                raise InvalidModule(f"invalid WebAssembly module: {_first_line(str(exc), deepest=True)}") from None
        memory_index, alloc_index, run_index = check_abi(module)
        pre = Linker(self.engine).instantiate_pre(module)
        if compiled_here and self._disk is not None:
            self._disk.save(cid, module)
        return CompiledGuest(cid, module, pre, memory_index, alloc_index, run_index)

    # -- tasks ---------------------------------------------------------------------------------------------

    def run(self, module_cid: str, module_bytes: bytes | None, input_bytes: Input,
            limits: SandboxLimits | None = None) -> SandboxResult:
        """Run one task on one input. Never raises for anything the module, input or limits do: failures are
        values. ``input_bytes`` may be any C-contiguous buffer (LocalProtocolError for a strided view)."""
        return self.run_chunks(module_cid, module_bytes, [input_bytes], limits).single()

    def run_chunks(self, module_cid: str, module_bytes: bytes | None, chunks: Sequence[Input],
                   limits: SandboxLimits | None = None) -> ChunksResult:
        """Run one task over ``chunks``: one fresh guest instance per chunk, in order, stopping at the first
        failure. ``limits`` apply to each chunk's run, except ``fuel_max``, which is the budget of the whole
        task (each run gets what the runs before it left). See protocols/guest-abi.md, "Chunked tasks"."""
        limits = limits or self._default_limits
        views = [as_input(chunk) for chunk in chunks]
        refused = refusal(self.config, module_cid, module_bytes, views, limits)
        if refused is not None:
            return refused
        cid = canonical_cid(module_cid)  # refusal() checked it parses
        if module_bytes is not None and cid in self._modules and not self._verifier.matches(cid, module_bytes):
            return ChunksResult.failed(FailureKind.INVALID_MODULE, f"module bytes do not match their content id "
                                       f"{cid}")
        try:
            guest = self._compile(cid, module_bytes)
        except SandboxError as exc:
            return ChunksResult.failed(exc.kind, exc.message)
        return self._run_all(guest, views, limits)

    def _run_all(self, guest: CompiledGuest, views: list[bytes | memoryview], limits: SandboxLimits) -> ChunksResult:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        outputs: list[bytes] = []
        fuel_total = peak = output_total = 0
        failure: _TaskFailed | None = None
        for data in views:
            fuel_left = limits.fuel_max - fuel_total
            if fuel_left <= 0:
                failure = _TaskFailed(FailureKind.OUT_OF_FUEL, f"the task used its whole fuel budget of "
                                      f"{limits.fuel_max} before this chunk")
                break
            output, failure, fuel_used, memory_bytes = self._execute(guest, data, limits, fuel_left)
            fuel_total += fuel_used
            peak = max(peak, memory_bytes)
            if failure is not None:
                break
            output_total += len(output)
            if output_total > self.config.task_output_bytes_max:
                failure = _TaskFailed(FailureKind.OUTPUT_TOO_LARGE, f"the task's outputs add up to more than "
                                      f"the {self.config.task_output_bytes_max} bytes this node allows")
                break
            outputs.append(output)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        if failure is not None:
            return ChunksResult.failed(failure.kind, failure.message, failed_index=len(outputs),
                                       trap_kind=failure.trap_kind, fuel_used=fuel_total, peak_memory_bytes=peak,
                                       wall_time_s=wall, cpu_time_s=cpu)
        return ChunksResult(outputs, None, None, MeteringReport(fuel_total, peak, wall, cpu, None))

    def _deadline_ticks(self, wall_time_s: float) -> int:
        # +1: the first tick may come at once, so k+1 ticks guarantee at least k full tick periods.
        return math.ceil(wall_time_s / self.config.epoch_tick_s) + 1

    def _execute(self, guest: CompiledGuest, data: bytes | memoryview, limits: SandboxLimits,
                 fuel: int) -> tuple[bytes, _TaskFailed | None, int, int]:
        """One guest run with ``fuel``: (output, failure or None, fuel used, linear memory bytes at the end)."""
        store = Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes_max, table_elements=TABLE_ELEMENTS_MAX,
                         instances=1, tables=1, memories=1)
        store.set_fuel(fuel)
        store.set_epoch_deadline(self._deadline_ticks(limits.wall_time_s))
        ctx = fc.context(store)
        memory: Any = None
        output = b""
        failure: _TaskFailed | None = None
        try:
            instance = fc.instance_raw(self._instantiate(guest, store))
            memory = fc.export_at(ctx, instance, guest.memory_index).of.memory
            alloc = fc.export_at(ctx, instance, guest.alloc_index).of.func
            run = fc.export_at(ctx, instance, guest.run_index).of.func
            output = self._call_guest(ctx, memory, alloc, run, data, limits)
        except _TaskFailed as exc:
            failure = exc
        except Trap as trap:
            failure = self._classify_trap(trap, ctx, memory, limits)
        except WasmtimeError as exc:
            failure = _TaskFailed(FailureKind.TRAP, f"guest failed: {_first_line(str(exc))}", "error")
        fuel_used = fuel - store.get_fuel()
        peak = fc.memory_size(ctx, memory) if memory is not None else 0
        return output, failure, fuel_used, peak

    @staticmethod
    def _instantiate(guest: CompiledGuest, store: Store) -> Any:
        try:
            return guest.pre.instantiate(store)
        except WasmtimeError as exc:
            text = _first_line(str(exc))
            if "limit" in text:
                raise _TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, f"module needs more than the task's "
                                  f"resource limits at instantiation: {text}") from None
            raise _TaskFailed(FailureKind.INVALID_MODULE, f"module cannot be instantiated: {text}") from None

    @staticmethod
    def _call_guest(ctx: Any, memory: Any, alloc: Any, run: Any, data: bytes | memoryview,
                    limits: SandboxLimits) -> bytes:
        n = len(data)
        ptr = fc.call_i32(ctx, alloc, n) & _U32
        if n and ptr == 0:
            raise _TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED,
                              f"guest could not allocate {n} bytes for its input (memory.grow failed)")
        if ptr + n > fc.memory_size(ctx, memory):
            raise _TaskFailed(FailureKind.TRAP, f"guest alloc({n}) returned {ptr}, outside its memory",
                              "abi_violation")
        fc.write(fc.memory_base(ctx, memory), ptr, data)
        packed = fc.call_i32_i32(ctx, run, ptr, n) & _U64
        out_ptr, out_len = packed & _U32, packed >> 32
        if out_len == GUEST_ERROR_LEN:
            if out_ptr == GUEST_ERR_OUT_OF_MEMORY:
                raise _TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, "guest ran out of memory (memory.grow failed)")
            if out_ptr == GUEST_ERR_INVALID_INPUT:
                raise _TaskFailed(FailureKind.INVALID_INPUT, "guest rejected its input")
            raise _TaskFailed(FailureKind.TRAP, f"guest returned unknown error code {out_ptr}", "guest_error")
        if out_len > limits.output_bytes_max:
            raise _TaskFailed(FailureKind.OUTPUT_TOO_LARGE, f"guest returned {out_len} bytes of output, more "
                              f"than the {limits.output_bytes_max} allowed")
        if out_ptr + out_len > fc.memory_size(ctx, memory):
            raise _TaskFailed(FailureKind.TRAP, f"guest returned output at {out_ptr}+{out_len}, outside its "
                              "memory", "abi_violation")
        return fc.read(fc.memory_base(ctx, memory), out_ptr, out_len)

    @staticmethod
    def _classify_trap(trap: Trap, ctx: Any, memory: Any, limits: SandboxLimits) -> _TaskFailed:
        code = trap.trap_code
        cause = _first_line(trap.message)
        kind = _TRAP_KINDS.get(code) if code is not None else None
        if kind is FailureKind.OUT_OF_FUEL:
            return _TaskFailed(kind, f"guest used the task's whole fuel budget of {limits.fuel_max}")
        if kind is FailureKind.TIMEOUT:
            return _TaskFailed(kind, f"guest ran past its wall-time limit of {limits.wall_time_s} s")
        if kind is FailureKind.STACK_OVERFLOW:
            return _TaskFailed(kind, "guest overflowed its call stack (recursion too deep)")
        trap_kind = code.name.lower() if code is not None else "unknown"
        size = fc.memory_size(ctx, memory) if memory is not None else 0
        if memory is not None and size + WASM_PAGE_BYTES > limits.memory_bytes_max:
            return _TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, f"guest trapped ({trap_kind}) with its memory "
                               f"full ({size} of {limits.memory_bytes_max} bytes)")
        return _TaskFailed(FailureKind.TRAP, f"guest trapped: {cause}", trap_kind)
