"""Invalid modules, traps, typed errors."""

from __future__ import annotations

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import SANDBOX_ERRORS, FailureKind, InvalidModule, Rejected, SandboxError, Trap, sandbox_error
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.executor import Executor
from tests.sandbox.conftest import run_guest, wat_module

INVALID = {
    "committed_invalid": None,
    "empty": b"",
    "random_bytes": bytes(range(200)),
    "wat_text": b'(module (memory (export "memory") 1))',
    "truncated": b"\x00asm\x01\x00\x00\x00\x01\x05",
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_modules_are_refused_with_a_clear_message(executor, case):
    if INVALID[case] is None:
        result = run_guest(executor, "invalid")
    else:
        data = INVALID[case]
        result = executor.run(cid_of(data), data, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "\n" not in result.failure.message
    assert len(result.failure.message) < 400
    with pytest.raises(InvalidModule):
        result.unwrap()


def test_type_error_in_a_function_body_is_invalid(executor):
    cid, module = wat_module("""(module (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i64.const 1)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))""")  # i64 where i32 is declared
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "type mismatch" in result.failure.message


def test_wrong_abi_exports_are_invalid(executor):
    cid, module = wat_module("""(module (memory (export "memory") 1)
        (func (export "alloc") (param i64) (result i32) i32.const 0))""")
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "does not export run (function)" in result.failure.message, "missing names: refused before compiling"
    cid, module = wat_module("""(module (memory (export "memory") 1)
        (func (export "alloc") (param i64) (result i32) i32.const 0)
        (func (export "run") (param i32) (result i64) i64.const 0))""")
    result = executor.run(cid, module, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert "alloc: (i32) -> i32" in result.failure.message
    assert "run: (i32, i32) -> i64" in result.failure.message


def test_oversized_module_is_rejected_by_this_node_not_declared_invalid():
    # the size limit is this node's configuration: another node may take the task, so REJECTED
    with Executor(SandboxConfig(workers=1, module_bytes_max=1024)) as ex:
        data = b"\x00asm\x01\x00\x00\x00" + b"\x00" * 2000
        result = ex.run(cid_of(data), data, b"")
        assert result.failure is not None
        assert result.failure.kind is FailureKind.REJECTED
        assert "more than the 1024 this node allows" in result.failure.message
        assert not ex.has_module(cid_of(data)), "a node-specific refusal is not remembered as a verdict"
        with pytest.raises(Rejected):
            ex.compile(cid_of(data), data)


def test_refused_modules_are_remembered_by_cid(executor):
    first = run_guest(executor, "invalid")
    second = run_guest(executor, "invalid")
    assert first.failure == second.failure
    from pangea_p2p.guests import load_guest

    assert executor.has_module(cid_of(load_guest("invalid")))
    assert not executor.is_compiled(cid_of(load_guest("invalid")))


@pytest.mark.parametrize(
    ("code", "trap_kind"),
    [
        (b"u", "unreachable"),
        (b"d", "integer_division_by_zero"),
        (b"o", "memory_out_of_bounds"),
        (b"n", "indirect_call_to_null"),
        (b"v", "integer_overflow"),
        (b"c", "bad_conversion_to_integer"),
    ],
)
def test_traps_are_typed_and_the_executor_keeps_working(executor, code, trap_kind):
    result = run_guest(executor, "probe", b"T" + code)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TRAP
    assert result.failure.trap_kind == trap_kind
    assert "\n" not in result.failure.message
    with pytest.raises(Trap) as info:
        result.unwrap()
    assert info.value.trap_kind == trap_kind
    assert run_guest(executor, "echo", b"ok").unwrap() == b"ok"


def test_every_failure_kind_has_an_error_class():
    assert set(SANDBOX_ERRORS) == set(FailureKind)
    for kind in FailureKind:
        error = sandbox_error(kind, "message")
        assert isinstance(error, SandboxError)
        assert error.kind is kind


def test_guest_refusing_its_input(executor):
    result = run_guest(executor, "probe", b"X")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_INPUT


def test_missing_module_bytes_is_our_bug_not_the_guests(executor):
    from pangea_p2p.errors import LocalProtocolError

    cid, _ = wat_module("(module)")
    with pytest.raises(LocalProtocolError, match="no bytes were given"):
        executor.compile(cid, None)
    with pytest.raises(LocalProtocolError):
        executor.run(cid, None, b"", SandboxLimits())
