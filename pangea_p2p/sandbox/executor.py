"""The in-process executor: compile guests by CID and run tasks synchronously with limits and metering.

Used by the sandbox processes of the pool (``pangea_p2p.sandbox.pool``), by ``Job.run_local``, ``pangea
guest run``, benchmarks and ``measure_speed``. Running guests in the peer's own process is safe against the
guest (it is sandboxed) but not against wasmtime aborting the process on a bug, which is why the node uses
the pool.

Per module (once, keyed by CID, in a byte-bounded LRU, ``kinds.ModuleCache``): check the bytes name the
CID; a Python step (``pystep``) is parsed and bound to its interpreter, itself a module compiled like any
other; for WebAssembly, read the section headers (``modshape``: refuse forbidden imports, too many or too
large functions, huge tables, before any compiling), load this node's own native code from the disk cache
or compile in a separate, memory- and time-capped process (``compiler``), then check the exports of the
module's kind (1: no imports, ``alloc``/``run``; 2: deterministic WASI, ``_start``) and keep an
``InstancePre``. Refusals are remembered by CID too.

Per guest run (``runs``): a fresh ``Store`` with the memory limit, the fuel left in the task's budget and a
real-time wall-clock deadline; the output (and for kinds 2 and Python, the log); fuel, memory, wall and CPU
time. Nothing survives between runs but the compiled code, so task B cannot see task A's memory (nor chunk
2 chunk 1's). A task over a chunk list (``run_chunks``) is one run per chunk, the fuel budget shared by all
of them, the logs joined (at most ``log_bytes_max`` bytes in all).

CIDs are canonicalised at this boundary (any multibase spelling names the same cache entry) and inputs
are seen as bytes whatever buffer they come in (``_boundary``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from wasmtime import Linker, Module, WasmtimeError

from pangea_p2p.core.cid import cid_matches
from pangea_p2p.errors import (
    FailureKind,
    InvalidModule,
    LocalProtocolError,
    Rejected,
    RemoteProtocolError,
    SandboxError,
)
from pangea_p2p.sandbox import pystep
from pangea_p2p.sandbox._boundary import Input, as_input, canonical_cid, module_too_large, refusal
from pangea_p2p.sandbox.compiler import compile_isolated
from pangea_p2p.sandbox.config import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.engine import DeadlineAlarm, DiskCache, engine_fingerprint, first_line, make_engine
from pangea_p2p.sandbox.kinds import (
    CompiledGuest,
    Guest,
    ModuleCache,
    PythonGuest,
    WasiGuest,
    check_abi,
    check_wasi_exports,
)
from pangea_p2p.sandbox.modshape import check_shape, read_shape
from pangea_p2p.sandbox.result import ChunksResult, MeteringReport, SandboxResult
from pangea_p2p.sandbox.runs import Runner, TaskFailed
from pangea_p2p.sandbox.wasi import ALLOWED, WasiHost

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

REJECTED_CACHE_ENTRIES = 256


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


class Executor:
    """Compiles and runs guests in this process. Not thread-safe; one per process is the intended use."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.engine = make_engine(self.config)
        self._default_limits = self.config.default_limits()
        self._modules = ModuleCache(self.config.module_cache_entries, self.config.module_cache_bytes_max)
        self._rejected: OrderedDict[str, SandboxError] = OrderedDict()
        self._verifier = BytesVerifier()
        self._disk = (DiskCache(self.config.cache_dir, engine_fingerprint(self.config),
                                self.config.disk_cache_bytes_max)
                      if self.config.cache_dir is not None else None)
        self._alarm = DeadlineAlarm(self.engine)
        self._wasi = WasiHost(self.engine)
        self._runner = Runner(self.engine, self._alarm, self._wasi)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._alarm.stop()
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
        return self._modules.cids()

    @property
    def cached_bytes(self) -> int:
        """The native code (and Python source) held by the compiled-module cache, in bytes."""
        return self._modules.bytes

    @staticmethod
    def _canonical_or_none(cid: str) -> str | None:
        try:
            return canonical_cid(cid)
        except RemoteProtocolError:
            return None

    def compile(self, cid: str, module_bytes: bytes | None) -> Guest:
        """The compiled guest for ``cid`` (any spelling); raises the SandboxError of a refused module.

        InvalidModule / ForbiddenImport for a bad module, Rejected when this node's compile budget is not
        enough (all remembered by CID), Rejected for a module larger than this node's ``module_bytes_max``
        (not remembered: another node may take it).
        """
        try:
            cid = canonical_cid(cid)
        except RemoteProtocolError as exc:
            raise InvalidModule(str(exc)) from None
        return self._compile(cid, module_bytes)

    def _compile(self, cid: str, module_bytes: bytes | None) -> Guest:
        guest = self._modules.get(cid)
        if guest is not None:
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
            guest = self._build(cid, module_bytes)
        except SandboxError as exc:
            self._rejected[cid] = exc
            while len(self._rejected) > REJECTED_CACHE_ENTRIES:
                self._rejected.popitem(last=False)
            raise
        self._modules.put(guest)
        return guest

    def _build(self, cid: str, module_bytes: bytes) -> Guest:
        if pystep.is_python_step(module_bytes):
            step = pystep.parse_step(module_bytes)
            interpreter = pystep.interpreter_bytes(step.interpreter_cid)
            if isinstance(interpreter, str):
                raise Rejected(f"cannot run this Python step: {interpreter}")
            wasi = self._compile(step.interpreter_cid, interpreter)
            if not isinstance(wasi, WasiGuest):
                raise LocalProtocolError(f"interpreter {step.interpreter_cid} is not a WASI command")
            return PythonGuest(cid, step, wasi, len(module_bytes))
        shape = read_shape(module_bytes, self.config.module_functions_max)
        check_shape(shape, functions_max=self.config.module_functions_max,
                    function_bytes_max=self.config.function_bytes_max, allowed_imports=ALLOWED)
        native = self._disk.load(cid) if self._disk is not None else None
        module = self._deserialize(cid, native) if native is not None else None
        if module is None or native is None:
            native = compile_isolated(self.config, module_bytes)
            module = self._deserialize(cid, native)
            if module is None:
                raise LocalProtocolError(f"the compile process returned unusable native code for {cid}")
            if self._disk is not None:
                self._disk.save(cid, native)
        if not shape.is_wasi_command:
            memory_index, alloc_index, run_index = check_abi(module)
            pre = Linker(self.engine).instantiate_pre(module)
            return CompiledGuest(cid, module, pre, len(native), memory_index, alloc_index, run_index)
        check_wasi_exports(module)
        try:
            pre = self._wasi.instantiate_pre(module)
        except WasmtimeError as exc:
            raise InvalidModule(f"module's WASI imports do not have the types of guest ABI kind 2: "
                                f"{first_line(str(exc), deepest=True)}") from None
        return WasiGuest(cid, module, pre, len(native))

    def _deserialize(self, cid: str, native: bytes) -> Module | None:
        try:
            return Module.deserialize(self.engine, native)
        except WasmtimeError:
            if self._disk is not None:
                self._disk.drop(cid)
            return None

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

    def _run_all(self, guest: Guest, views: list[bytes | memoryview], limits: SandboxLimits) -> ChunksResult:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        outputs: list[bytes] = []
        log = bytearray()
        fuel_total = peak = output_total = silenced = 0
        failure: TaskFailed | None = None
        for i, data in enumerate(views):
            fuel_left = limits.fuel_max - fuel_total
            if fuel_left <= 0:
                failure = TaskFailed(FailureKind.OUT_OF_FUEL, f"the task used its whole fuel budget of "
                                     f"{limits.fuel_max} before this chunk")
                break
            room = self.config.log_bytes_max - len(log)
            outcome = self._runner.run(guest, data, limits, fuel_left, max(0, room))
            if outcome.log and room <= 0:
                silenced += 1
            elif outcome.log:
                log += (f"[chunk {i}]\n".encode() if len(views) > 1 else b"") + outcome.log
            fuel_total += outcome.fuel_used
            peak = max(peak, outcome.memory_bytes)
            failure = outcome.failure
            if failure is not None:
                break
            output_total += len(outcome.output)
            if output_total > self.config.task_output_bytes_max:
                failure = TaskFailed(FailureKind.OUTPUT_TOO_LARGE, f"the task's outputs add up to more than "
                                     f"the {self.config.task_output_bytes_max} bytes this node allows")
                break
            outputs.append(outcome.output)
        if silenced:
            log += f"[pangea: the logs of {silenced} more chunks dropped (log_bytes_max)]\n".encode()
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        if failure is not None:
            return ChunksResult.failed(failure.kind, failure.message, failed_index=len(outputs),
                                       trap_kind=failure.trap_kind, fuel_used=fuel_total, peak_memory_bytes=peak,
                                       wall_time_s=wall, cpu_time_s=cpu, log=bytes(log))
        return ChunksResult(outputs, None, None, MeteringReport(fuel_total, peak, wall, cpu, None), bytes(log))
