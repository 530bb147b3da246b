"""One guest run of each kind: a fresh store, the limits, the call, the outcome (private to the sandbox).

Every run gets a new ``Store`` with the task's memory limit, the fuel left in the task's budget and an epoch
deadline of one epoch; the ``DeadlineAlarm`` is armed with the run's real wall-time deadline and disarmed
after it. Nothing survives between runs but the compiled code.

- kind 1 (``CompiledGuest``): ``alloc``, copy the input, ``run``, copy the output (guest-abi.md), through
  the thin C calls of ``_fastcall``.
- kind 2 (``WasiGuest``): ``_start`` with the deterministic WASI host (``wasi``): stdin is the input, fd 3
  the output, stdout and stderr the log; ``proc_exit(0)`` or returning is success.
- Python (``PythonGuest``): the interpreter as a kind-2 run with the step's runner (``pystep``), its exit
  code mapped to a typed failure.

Traps are classified the same way for all kinds: fuel, interrupt (the wall-time limit) and stack overflow
are their own failures; any other trap with the memory full is ``MemoryLimitExceeded``; else ``Trap``
with the trap's name.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from wasmtime import Engine, Store, Trap, TrapCode, WasmtimeError

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import _fastcall as fc
from pangea_p2p.sandbox import pystep
from pangea_p2p.sandbox.config import WASM_PAGE_BYTES, SandboxLimits
from pangea_p2p.sandbox.engine import DeadlineAlarm, first_line
from pangea_p2p.sandbox.kinds import CompiledGuest, Guest, PythonGuest, WasiGuest
from pangea_p2p.sandbox.modshape import TABLE_ELEMENTS_MAX
from pangea_p2p.sandbox.wasi import OutputOverflow, WasiExit, WasiHost, WasiRun

GUEST_ERROR_LEN = 0xFFFF_FFFF
GUEST_ERR_OUT_OF_MEMORY = 1
GUEST_ERR_INVALID_INPUT = 2
WASI_TABLES_MAX = 8  # compiled C and Rust WASI programs have one function table; MicroPython has one too
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

_TRAP_KINDS = {
    TrapCode.OUT_OF_FUEL: FailureKind.OUT_OF_FUEL,
    TrapCode.INTERRUPT: FailureKind.TIMEOUT,
    TrapCode.STACK_OVERFLOW: FailureKind.STACK_OVERFLOW,
}


class TaskFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, trap_kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.trap_kind = trap_kind


@dataclass(slots=True)
class RunOutcome:
    output: bytes
    failure: TaskFailed | None
    fuel_used: int
    memory_bytes: int
    log: bytes = b""


class Runner:
    """Runs guests of every kind on one engine, one at a time."""

    def __init__(self, engine: Engine, alarm: DeadlineAlarm, wasi: WasiHost) -> None:
        self.engine = engine
        self.alarm = alarm
        self.wasi = wasi

    def run(self, guest: Guest, data: bytes | memoryview, limits: SandboxLimits, fuel: int,
            log_room: int) -> RunOutcome:
        if isinstance(guest, CompiledGuest):
            return self._core(guest, data, limits, fuel)
        if isinstance(guest, WasiGuest):
            outcome, code = self._wasi(guest, [b"guest"], data, data, limits, fuel, log_room)
            if code and outcome.failure is None:
                outcome.failure = TaskFailed(FailureKind.TRAP, f"guest exited with status {code}", "exit")
                outcome.output = b""
            return outcome
        return self._python(guest, data, limits, fuel, log_room)

    def _store(self, limits: SandboxLimits, fuel: int, tables: int) -> Store:
        store = Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes_max, table_elements=TABLE_ELEMENTS_MAX,
                         instances=1, tables=tables, memories=1)
        store.set_fuel(fuel)
        store.set_epoch_deadline(1)
        self.alarm.arm(time.monotonic() + limits.wall_time_s)
        return store

    # -- kind 1 --------------------------------------------------------------------------------------------

    def _core(self, guest: CompiledGuest, data: bytes | memoryview, limits: SandboxLimits,
              fuel: int) -> RunOutcome:
        store = self._store(limits, fuel, tables=1)
        ctx = fc.context(store)
        memory: Any = None
        output = b""
        failure: TaskFailed | None = None
        try:
            instance = fc.instance_raw(_instantiate(guest.pre, store))
            memory = fc.export_at(ctx, instance, guest.memory_index).of.memory
            alloc = fc.export_at(ctx, instance, guest.alloc_index).of.func
            run = fc.export_at(ctx, instance, guest.run_index).of.func
            output = _call_guest(ctx, memory, alloc, run, data, limits)
        except TaskFailed as exc:
            failure = exc
        except Trap as trap:
            failure = classify_trap(trap, fc.memory_size(ctx, memory) if memory is not None else None, limits)
        except WasmtimeError as exc:
            failure = TaskFailed(FailureKind.TRAP, f"guest failed: {first_line(str(exc))}", "error")
        finally:
            self.alarm.disarm()
        peak = fc.memory_size(ctx, memory) if memory is not None else 0
        return RunOutcome(output, failure, fuel - store.get_fuel(), peak)

    # -- kind 2 --------------------------------------------------------------------------------------------

    def _wasi(self, guest: WasiGuest, argv: list[bytes], stdin: bytes | memoryview, seed_input: bytes | memoryview,
              limits: SandboxLimits, fuel: int, log_room: int) -> tuple[RunOutcome, int | None]:
        """A kind-2 run: its outcome and exit code (None when it trapped or failed otherwise)."""
        run = WasiRun(argv, stdin, limits.output_bytes_max, max(0, log_room),
                      lambda: hashlib.sha256(guest.cid.encode() + b"\0" + seed_input).digest())
        store = self._store(limits, fuel, tables=WASI_TABLES_MAX)
        memory: Any = None
        failure: TaskFailed | None = None
        code: int | None = None
        self.wasi.run = run
        try:
            instance = _instantiate(guest.pre, store)
            exports = instance.exports(store)
            memory = exports["memory"]
            try:
                exports["_start"](store)
                code = 0
            except WasiExit as exit_:
                code = exit_.code
        except TaskFailed as exc:
            failure = exc
        except OutputOverflow as exc:
            failure = TaskFailed(FailureKind.OUTPUT_TOO_LARGE, str(exc))
        except Trap as trap:
            failure = classify_trap(trap, memory.data_len(store) if memory is not None else None, limits)
        except WasmtimeError as exc:
            failure = TaskFailed(FailureKind.TRAP, f"guest failed: {first_line(str(exc))}", "error")
        finally:
            self.alarm.disarm()
            self.wasi.run = None
        peak = memory.data_len(store) if memory is not None else 0
        output = bytes(run.output) if failure is None else b""
        return RunOutcome(output, failure, fuel - store.get_fuel(), peak, run.log), code

    # -- Python steps --------------------------------------------------------------------------------------

    def _python(self, guest: PythonGuest, data: bytes | memoryview, limits: SandboxLimits, fuel: int,
                log_room: int) -> RunOutcome:
        heap = pystep.heap_bytes(limits.memory_bytes_max)
        if heap == 0:
            failure = TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, "a Python step needs a memory_bytes_max of at "
                                 f"least {pystep.PY_MEMORY_BYTES_MIN} bytes")
            return RunOutcome(b"", failure, 0, 0)
        outcome, code = self._wasi(guest.interpreter, pystep.argv(heap), pystep.stdin(guest.step, data), data,
                                   limits, fuel, log_room)
        if outcome.failure is None and code is not None:
            failed = pystep.failure_of(code, outcome.output, heap)
            if failed is not None:
                outcome.failure = TaskFailed(*failed)
                outcome.output = b""
        return outcome


def _instantiate(pre: Any, store: Store) -> Any:
    try:
        return pre.instantiate(store)
    except WasmtimeError as exc:
        text = first_line(str(exc))
        if "table" in text and "limit" in text:
            raise TaskFailed(FailureKind.INVALID_MODULE, f"module's tables are larger than a guest may have "
                             f"({TABLE_ELEMENTS_MAX} elements, {WASI_TABLES_MAX} tables): {text}") from None
        if "limit" in text:
            raise TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, f"module needs more than the task's "
                             f"memory limit at instantiation: {text}") from None
        raise TaskFailed(FailureKind.INVALID_MODULE, f"module cannot be instantiated: {text}") from None


def _call_guest(ctx: Any, memory: Any, alloc: Any, run: Any, data: bytes | memoryview,
                limits: SandboxLimits) -> bytes:
    n = len(data)
    ptr = fc.call_i32(ctx, alloc, n) & _U32
    if n and ptr == 0:
        raise TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED,
                         f"guest could not allocate {n} bytes for its input (memory.grow failed)")
    if ptr + n > fc.memory_size(ctx, memory):
        raise TaskFailed(FailureKind.TRAP, f"guest alloc({n}) returned {ptr}, outside its memory", "abi_violation")
    fc.write(fc.memory_base(ctx, memory), ptr, data)
    packed = fc.call_i32_i32(ctx, run, ptr, n) & _U64
    out_ptr, out_len = packed & _U32, packed >> 32
    if out_len == GUEST_ERROR_LEN:
        if out_ptr == GUEST_ERR_OUT_OF_MEMORY:
            raise TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, "guest ran out of memory (memory.grow failed)")
        if out_ptr == GUEST_ERR_INVALID_INPUT:
            raise TaskFailed(FailureKind.INVALID_INPUT, "guest rejected its input")
        raise TaskFailed(FailureKind.TRAP, f"guest returned unknown error code {out_ptr}", "guest_error")
    if out_len > limits.output_bytes_max:
        raise TaskFailed(FailureKind.OUTPUT_TOO_LARGE, f"guest returned {out_len} bytes of output, more "
                         f"than the {limits.output_bytes_max} allowed")
    if out_ptr + out_len > fc.memory_size(ctx, memory):
        raise TaskFailed(FailureKind.TRAP, f"guest returned output at {out_ptr}+{out_len}, outside its memory",
                         "abi_violation")
    return fc.read(fc.memory_base(ctx, memory), out_ptr, out_len)


def classify_trap(trap: Trap, memory_size: int | None, limits: SandboxLimits) -> TaskFailed:
    code = trap.trap_code
    cause = first_line(trap.message)
    kind = _TRAP_KINDS.get(code) if code is not None else None
    if kind is FailureKind.OUT_OF_FUEL:
        return TaskFailed(kind, f"guest used the task's whole fuel budget of {limits.fuel_max}")
    if kind is FailureKind.TIMEOUT:
        return TaskFailed(kind, f"guest ran past its wall-time limit of {limits.wall_time_s} s")
    if kind is FailureKind.STACK_OVERFLOW:
        return TaskFailed(kind, "guest overflowed its call stack (recursion too deep)")
    trap_kind = code.name.lower() if code is not None else "unknown"
    if memory_size is not None and memory_size + WASM_PAGE_BYTES > limits.memory_bytes_max:
        return TaskFailed(FailureKind.MEMORY_LIMIT_EXCEEDED, f"guest trapped ({trap_kind}) with its memory "
                          f"full ({memory_size} of {limits.memory_bytes_max} bytes)")
    return TaskFailed(FailureKind.TRAP, f"guest trapped: {cause}", trap_kind)
