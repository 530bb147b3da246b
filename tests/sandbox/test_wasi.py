"""Guest ABI kind 2 (WASI command): the allowlisted functions answer the same on every run and every engine
(input on stdin, output on fd 3, log on stdout, clock 0, no directories, no environment, seeded randomness,
no sockets), typed exits, and anything outside the allowlist is refused before it runs."""

from __future__ import annotations

import struct

import pytest

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import Executor, SandboxConfig
from tests.sandbox.conftest import wat_module

W = "wasi_snapshot_preview1"
PROBE = f"""(module
  (import "{W}" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "{W}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "{W}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "{W}" "random_get" (func $random (param i32 i32) (result i32)))
  (import "{W}" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{W}" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (import "{W}" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "hello from stdout\\n/etc/passwd")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 512)))
    (drop (call $random (i32.const 520) (i32.const 16)))
    (i32.store (i32.const 536) (call $path_open (i32.const 3) (i32.const 0) (i32.const 218) (i32.const 11)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 600)))
    (drop (call $env (i32.const 540) (i32.const 544)))
    (i32.store (i32.const 548) (call $sock_send (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 600)))
    (i32.store (i32.const 16) (i32.const 200)) (i32.store (i32.const 20) (i32.const 18))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 32) (i32.const 1024)) (i32.store (i32.const 36) (i32.load (i32.const 8)))
    (i32.store (i32.const 40) (i32.const 512)) (i32.store (i32.const 44) (i32.const 40))
    (drop (call $fd_write (i32.const 3) (i32.const 32) (i32.const 2) (i32.const 24)))))"""


def exit_with(code: int, output: bool = True) -> str:
    write = ('(i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 2))'
             '(drop (call $fd_write (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 8)))') if output else ""
    return f"""(module
      (import "{W}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "{W}" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1) (data (i32.const 100) "ok")
      (func (export "_start") {write} (call $exit (i32.const {code}))))"""


def test_a_wasi_command_sees_input_fixed_clock_no_files_no_environment_no_sockets(executor: Executor) -> None:
    cid, module = wat_module(PROBE)
    result = executor.run(cid, module, b"the input")
    output = result.unwrap()
    assert output[:9] == b"the input"
    clock, random, path_errno, env_count, env_bytes, sock_errno = struct.unpack("<Q16sIIII", output[9:])
    assert clock == 0
    assert (path_errno, env_count, env_bytes, sock_errno) == (8, 0, 0, 57)  # EBADF, empty, ENOTSOCK
    assert result.log == b"hello from stdout\n"
    with Executor(SandboxConfig(workers=1)) as other:  # another engine: the same bytes, the same fuel
        again = other.run(cid, module, b"the input")
    assert (again.output, again.report.fuel_used) == (output, result.report.fuel_used)
    other_input = executor.run(cid, module, b"other input").unwrap()
    assert struct.unpack("<Q16s", other_input[11:35])[1] != random, "randomness is seeded by the input"


def test_proc_exit_zero_is_success_and_any_other_status_a_typed_exit(executor: Executor) -> None:
    assert executor.run(*wat_module(exit_with(0)), b"").unwrap() == b"ok"
    failed = executor.run(*wat_module(exit_with(7)), b"")
    assert failed.failure is not None
    assert (failed.failure.kind, failed.failure.trap_kind) == (FailureKind.TRAP, "exit")
    assert "status 7" in failed.failure.message


@pytest.mark.parametrize("imported", [
    f'(import "{W}" "proc_raise" (func (param i32) (result i32)))',
    '(import "env" "host" (func))',
    f'(import "{W}" "fd_write" (global i32))',
])
def test_a_wasi_command_importing_outside_the_allowlist_is_refused_before_it_runs(executor: Executor,
                                                                                    imported: str) -> None:
    cid, module = wat_module(f'(module {imported} (memory (export "memory") 1) (func (export "_start")))')
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORBIDDEN_IMPORT
    assert "a WASI command may import only" in result.failure.message
    assert result.report.fuel_used == 0


def test_an_allowed_name_with_the_wrong_type_is_an_invalid_module(executor: Executor) -> None:
    cid, module = wat_module(f'(module (import "{W}" "fd_write" (func (param i32) (result i32))) '
                             '(memory (export "memory") 1) (func (export "_start")))')
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "kind 2" in result.failure.message


def test_output_past_the_limit_ends_the_run(executor: Executor) -> None:
    from pangea_p2p.sandbox import SandboxLimits

    result = executor.run(*wat_module(exit_with(0)), b"", SandboxLimits(output_bytes_max=1))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUTPUT_TOO_LARGE
