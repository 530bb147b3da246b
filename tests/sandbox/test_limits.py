"""CPU (fuel), memory and time limits, combined limits, recovery, fuel exactness, stack, heap, output."""

from __future__ import annotations

import struct

import pytest

from pangea_p2p.errors import FailureKind, MemoryLimitExceeded, OutOfFuel, StackOverflow, Timeout
from pangea_p2p.sandbox import SandboxLimits
from tests.sandbox.conftest import guest, run_guest, u32, wat_module

MiB = 1 << 20


def test_cpu_limit_stops_a_fuel_bomb_at_exactly_its_budget(executor):
    result = run_guest(executor, "fuel_bomb", fuel_max=5_000_000)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUT_OF_FUEL
    assert result.report.fuel_used == 5_000_000
    assert result.report.status is FailureKind.OUT_OF_FUEL
    with pytest.raises(OutOfFuel, match="fuel budget of 5000000"):
        result.unwrap()


def test_fuel_budget_is_enforced_within_a_few_instructions(executor):
    # wasmtime checks fuel at function entries and loop headers, so the straight-line tail after the last
    # check may overrun the budget by a few instructions; a shortfall of one loop's worth always traps.
    needed = run_guest(executor, "probe", b"F" + u32(10_000)).report.fuel_used
    assert run_guest(executor, "probe", b"F" + u32(10_000), fuel_max=needed).ok
    short = run_guest(executor, "probe", b"F" + u32(10_000), fuel_max=needed - 100)
    assert short.failure is not None
    assert short.failure.kind is FailureKind.OUT_OF_FUEL


def test_fuel_accounting_is_exact_and_repeatable(executor):
    counts = {run_guest(executor, "sha256", b"x" * 5000).report.fuel_used for _ in range(5)}
    assert len(counts) == 1
    block = struct.pack("<IIII", 2, 3, 2, 0) + struct.pack("<12d", *(0.1 * i - 0.35 for i in range(12)))
    runs = [run_guest(executor, "matmul_block", block) for _ in range(3)]
    assert len({r.unwrap() for r in runs}) == 1
    assert len({r.report.fuel_used for r in runs}) == 1


def test_fuel_grows_linearly_with_work(executor):
    f = [run_guest(executor, "probe", b"F" + u32(n)).report.fuel_used for n in (1000, 2000, 3000)]
    assert f[1] - f[0] == f[2] - f[1] > 0


def test_memory_limit_reported_by_the_guest(executor):
    result = run_guest(executor, "memory_bomb", b"\x00", memory_bytes_max=4 * MiB)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
    assert result.report.peak_memory_bytes == 4 * MiB
    with pytest.raises(MemoryLimitExceeded):
        result.unwrap()


def test_memory_limit_when_the_guest_traps_with_full_memory(executor):
    result = run_guest(executor, "memory_bomb", b"\x01", memory_bytes_max=4 * MiB)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
    assert "unreachable" in result.failure.message


def test_memory_larger_initial_memory_than_the_limit_fails_instantiation(executor):
    cid, module = wat_module("""(module (memory (export "memory") 100)
        (func (export "alloc") (param i32) (result i32) i32.const 0)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))""")
    result = executor.run(cid, module, b"", SandboxLimits(memory_bytes_max=1 * MiB))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
    assert executor.run(cid, module, b"", SandboxLimits(memory_bytes_max=8 * MiB)).ok


def test_heap_exhaustion_is_reported_and_a_smaller_heap_works(executor):
    big = run_guest(executor, "probe", b"H" + u32(64 * MiB), memory_bytes_max=32 * MiB)
    assert big.failure is not None
    assert big.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
    small = run_guest(executor, "probe", b"H" + u32(16 * MiB), memory_bytes_max=32 * MiB)
    assert small.ok
    assert 16 * MiB < small.report.peak_memory_bytes <= 32 * MiB


def test_input_larger_than_the_memory_limit_is_refused(executor):
    result = run_guest(executor, "echo", b"x" * (2 * MiB), memory_bytes_max=1 * MiB)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_INPUT


def test_time_limit_stops_an_infinite_loop(executor):
    result = run_guest(executor, "infinite_loop", wall_time_s=0.1)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert result.report.wall_time_s >= 0.1
    # far below the 30 s default: the task's own 0.1 s limit stopped it (loose, for a loaded machine)
    assert result.report.wall_time_s < 20.0
    with pytest.raises(Timeout):
        result.unwrap()


def test_combined_limits_the_first_one_reached_wins(executor):
    by_fuel = run_guest(executor, "infinite_loop", fuel_max=1_000_000, wall_time_s=10.0, memory_bytes_max=MiB)
    assert by_fuel.failure is not None
    assert by_fuel.failure.kind is FailureKind.OUT_OF_FUEL
    by_time = run_guest(executor, "fuel_bomb", fuel_max=10**10, wall_time_s=0.05, memory_bytes_max=MiB)
    assert by_time.failure is not None
    assert by_time.failure.kind is FailureKind.TIMEOUT
    by_memory = run_guest(executor, "memory_bomb", fuel_max=10**9, wall_time_s=10.0, memory_bytes_max=MiB)
    assert by_memory.failure is not None
    assert by_memory.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
    by_output = run_guest(executor, "huge_output", u32(2 * MiB), output_bytes_max=MiB, memory_bytes_max=4 * MiB)
    assert by_output.failure is not None
    assert by_output.failure.kind is FailureKind.OUTPUT_TOO_LARGE


@pytest.mark.parametrize(
    ("hostile", "data", "limits"),
    [
        ("fuel_bomb", b"", {"fuel_max": 1_000_000}),
        ("infinite_loop", b"", {"wall_time_s": 0.05}),
        ("memory_bomb", b"", {"memory_bytes_max": 2 * MiB}),
        ("deep_recursion", b"", {}),
        ("huge_output", b"", {}),
        ("probe", b"Tu", {}),
    ],
)
def test_recovery_after_a_limit_the_next_task_succeeds(executor, hostile, data, limits):
    assert not run_guest(executor, hostile, data, **limits).ok
    assert run_guest(executor, "echo", b"still alive").unwrap() == b"still alive"
    assert run_guest(executor, hostile, data, **limits).failure == run_guest(executor, hostile, data, **limits).failure


def test_stack_overflow_is_typed(executor):
    result = run_guest(executor, "deep_recursion")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.STACK_OVERFLOW
    with pytest.raises(StackOverflow):
        result.unwrap()
    assert run_guest(executor, "deep_recursion", u32(1000)).ok


def test_output_too_large_both_real_and_claimed(executor):
    real = run_guest(executor, "huge_output")
    assert real.failure is not None
    assert real.failure.kind is FailureKind.OUTPUT_TOO_LARGE
    claimed = run_guest(executor, "huge_output", u32(0xFFFFFFFF))
    assert claimed.failure is not None
    assert claimed.failure.kind is FailureKind.OUTPUT_TOO_LARGE
    fits = run_guest(executor, "huge_output", u32(1000), output_bytes_max=1000)
    assert fits.unwrap() == bytes(fits.unwrap())
    assert len(fits.unwrap()) == 1000


def test_limits_above_the_node_maxima_are_rejected(executor):
    cid, module = guest("echo")
    result = executor.run(cid, module, b"", SandboxLimits(fuel_max=executor.config.limits_max.fuel_max + 1))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.REJECTED
    assert "fuel_max" in result.failure.message


def test_metering_reports_peak_memory_and_times(executor):
    small = run_guest(executor, "probe", b"G" + u32(1))
    large = run_guest(executor, "probe", b"G" + u32(100))
    assert large.report.peak_memory_bytes - small.report.peak_memory_bytes == 99 * 65536
    busy = run_guest(executor, "probe", b"F" + u32(20_000_000))
    assert busy.report.cpu_time_s > 0.001
    assert busy.report.wall_time_s >= busy.report.cpu_time_s * 0.5


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_is_released_after_every_task(executor):
    run_guest(executor, "probe", b"H" + u32(8 * MiB))
    before = _rss_bytes()
    for _ in range(60):
        assert run_guest(executor, "probe", b"H" + u32(8 * MiB)).ok  # touches 8 MiB each time
    assert _rss_bytes() - before < 64 * MiB, "60 tasks x 8 MiB must not accumulate"
