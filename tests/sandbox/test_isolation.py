"""Filesystem, network, process, environment, clock and randomness isolation; cross-task isolation."""

from __future__ import annotations

import struct

import pytest

from pangea_p2p.errors import FailureKind, ForbiddenImport
from pangea_p2p.sandbox import SandboxLimits
from tests.sandbox.conftest import guest, run_guest, wat_module

ABI = """
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "run") (param i32 i32) (result i64) i64.const 0)
"""

# One import per way out of the sandbox: each must be refused before anything runs.
ESCAPES = {
    "filesystem": '(import "wasi_snapshot_preview1" "path_open" '
                  '(func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))',
    "filesystem_read": '(import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))',
    "network": '(import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))',
    "network_send": '(import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))',
    "process_exit": '(import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))',
    "process_signal": '(import "wasi_snapshot_preview1" "proc_raise" (func (param i32) (result i32)))',
    "environment": '(import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))',
    "arguments": '(import "wasi_snapshot_preview1" "args_get" (func (param i32 i32) (result i32)))',
    "clock": '(import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))',
    "randomness": '(import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))',
    "host_function": '(import "env" "anything" (func))',
    "host_global": '(import "env" "g" (global i32))',
    "host_table": '(import "env" "t" (table 1 funcref))',
}


@pytest.mark.parametrize("capability", sorted(ESCAPES))
def test_any_import_is_refused_before_instantiation(executor, capability):
    cid, module = wat_module(f"(module {ESCAPES[capability]} {ABI})")
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORBIDDEN_IMPORT
    assert result.report.fuel_used == 0, "nothing of the module may run"
    with pytest.raises(ForbiddenImport, match="guests may import nothing"):
        result.unwrap()


def test_imported_memory_is_refused(executor):
    cid, module = wat_module("""(module (import "env" "memory" (memory 1))
        (export "memory" (memory 0))
        (func (export "alloc") (param i32) (result i32) i32.const 0)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))""")
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORBIDDEN_IMPORT


def test_hostile_forbidden_import_guest_names_what_it_imports(executor):
    result = run_guest(executor, "forbidden_import")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORBIDDEN_IMPORT
    assert "wasi_snapshot_preview1.path_open" in result.failure.message


def test_cross_task_isolation_task_b_cannot_see_task_a(executor):
    secret = b"TOP-SECRET-" + bytes(range(32))
    assert run_guest(executor, "probe", b"S" + secret).ok
    assert run_guest(executor, "probe", b"E" + secret * 3).ok
    dump = run_guest(executor, "probe", b"P").unwrap()
    assert len(dump) >= 5 * 65536
    assert secret not in dump
    assert b"TOP-SECRET" not in dump


def test_globals_start_fresh_in_every_task(executor):
    counter = """(module (memory (export "memory") 1) (global $n (mut i32) (i32.const 0))
        (func (export "alloc") (param i32) (result i32) i32.const 16)
        (func (export "run") (param i32 i32) (result i64)
            (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (i32.store (i32.const 0) (global.get $n))
            i64.const 0x400000000))"""  # 4 bytes at address 0
    cid, module = wat_module(counter)
    assert [executor.run(cid, module, b"").unwrap() for _ in range(3)] == [struct.pack("<I", 1)] * 3


def test_nan_results_are_canonical(executor):
    # (NaN with payload 0x123) + 1.0: without canonicalisation the payload leaks into the result bits.
    cid, module = wat_module("""(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i32.const 16)
        (func (export "run") (param i32 i32) (result i64)
            (f64.store (i32.const 0) (f64.add (f64.reinterpret_i64 (i64.const 0x7ff8000000000123)) (f64.const 1)))
            i64.const 0x800000000))""")
    assert executor.run(cid, module, b"").unwrap() == struct.pack("<Q", 0x7FF8000000000000)


def test_infinite_loop_protection_by_time_and_by_fuel(executor):
    assert run_guest(executor, "infinite_loop", wall_time_s=0.05).failure.kind is FailureKind.TIMEOUT
    assert run_guest(executor, "infinite_loop", fuel_max=10_000).failure.kind is FailureKind.OUT_OF_FUEL


def test_an_abi_violating_output_pointer_is_a_trap_not_a_host_read(executor):
    result = run_guest(executor, "probe", b"B" + struct.pack("<II", 0x7FFF0000, 0x10000))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TRAP
    assert result.failure.trap_kind == "abi_violation"


def test_an_abi_violating_alloc_is_a_trap(executor):
    cid, module = wat_module("""(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i32.const 65530)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))""")
    result = executor.run(cid, module, b"0123456789")
    assert result.failure is not None
    assert result.failure.trap_kind == "abi_violation"


def test_start_function_runs_under_the_limits(executor):
    cid, module = wat_module(f"""(module {ABI} (func $spin (loop (br 0))) (start $spin))""")
    result = executor.run(cid, module, b"", SandboxLimits(fuel_max=100_000))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUT_OF_FUEL


def test_module_cannot_create_a_second_memory_or_shared_memory(executor):
    cid, module = wat_module("""(module (memory (export "memory") 1 1 shared)
        (func (export "alloc") (param i32) (result i32) i32.const 0)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))""")
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE


def test_guest_module_bytes_are_checked_against_their_cid(executor):
    cid, _ = guest("echo")
    _, other = guest("sha256")
    result = executor.run(cid, other, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "do not match their content id" in result.failure.message
