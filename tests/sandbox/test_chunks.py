"""Tasks over chunk lists (``run_chunks``): per-chunk outputs, the first failure and its index, metering
summed over the chunks, the fuel budget shared by the whole task, the other limits per chunk."""

from __future__ import annotations

import hashlib
import os

import pytest

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.errors import FailureKind, OutOfFuel, Trap
from pangea_p2p.sandbox import ChunksResult, Executor, SandboxConfig, SandboxLimits, open_sandbox
from tests.sandbox.conftest import guest, u32, wat_module

MiB = 1 << 20


def _spin(n: int) -> bytes:
    return b"F" + u32(n)


def test_one_output_per_chunk_and_the_report_sums_the_runs(executor):
    cid, module = guest("sha256")
    chunks = [b"", b"abc", b"x" * 100_000, bytes(range(256))]
    result = executor.run_chunks(cid, module, chunks)
    assert result.unwrap() == [hashlib.sha256(c).digest() for c in chunks]
    singles = [executor.run(cid, module, c).report for c in chunks]
    assert result.report.fuel_used == sum(r.fuel_used for r in singles)
    assert result.report.peak_memory_bytes == max(r.peak_memory_bytes for r in singles)
    assert result.report.status is None
    assert result.failed_index is None
    assert result.report.wall_time_s > 0


def test_the_first_failure_stops_the_task_and_names_its_chunk(executor):
    cid, module = guest("probe")
    result = executor.run_chunks(cid, module, [b"Eok", b"Tu", b"Eafter"])
    assert result.outputs is None
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TRAP
    assert result.failure.trap_kind == "unreachable"
    assert result.failed_index == 1
    assert result.report.status is FailureKind.TRAP
    # fuel: the whole first run and the failed second one; the third never ran
    ran = executor.run(cid, module, b"Eok").report.fuel_used + executor.run(cid, module, b"Tu").report.fuel_used
    assert result.report.fuel_used == ran
    with pytest.raises(Trap, match=r"^chunk 1: guest trapped"):
        result.unwrap()


def test_fuel_is_one_budget_for_the_whole_task(executor):
    cid, module = guest("probe")
    per_chunk = executor.run(cid, module, _spin(5000)).report.fuel_used
    chunks = [_spin(5000)] * 3
    assert executor.run_chunks(cid, module, chunks, SandboxLimits(fuel_max=3 * per_chunk)).ok
    short = executor.run_chunks(cid, module, chunks, SandboxLimits(fuel_max=2 * per_chunk + per_chunk // 2))
    assert short.failure is not None
    assert short.failure.kind is FailureKind.OUT_OF_FUEL
    assert short.failed_index == 2
    assert short.report.fuel_used == 2 * per_chunk + per_chunk // 2
    exhausted = executor.run_chunks(cid, module, chunks, SandboxLimits(fuel_max=2 * per_chunk))
    assert exhausted.failed_index == 2
    assert exhausted.report.fuel_used == 2 * per_chunk
    with pytest.raises(OutOfFuel, match="chunk 2: the task used its whole fuel budget"):
        exhausted.unwrap()


def test_memory_limit_applies_to_each_chunk_not_their_sum(executor):
    cid, module = guest("probe")
    limits = SandboxLimits(memory_bytes_max=4 * MiB)
    result = executor.run_chunks(cid, module, [b"H" + u32(3 * MiB)] * 4, limits)
    assert result.ok, result.failure
    assert 3 * MiB < result.report.peak_memory_bytes <= 4 * MiB
    too_big = executor.run_chunks(cid, module, [b"Eok", b"E" + bytes(5 * MiB)], limits)
    assert too_big.failure is not None
    assert too_big.failure.kind is FailureKind.INVALID_INPUT
    assert too_big.failed_index == 1
    assert too_big.report.fuel_used == 0, "an input that cannot fit is refused before any chunk runs"


def test_output_limit_applies_per_chunk_and_the_node_bounds_the_sum():
    cid, module = guest("echo")
    with Executor(SandboxConfig(workers=1, task_output_bytes_max=1024)) as ex:
        per_chunk = ex.run_chunks(cid, module, [b"a" * 600, b"b" * 600], SandboxLimits(output_bytes_max=500))
        assert per_chunk.failure is not None
        assert per_chunk.failure.kind is FailureKind.OUTPUT_TOO_LARGE
        assert per_chunk.failed_index == 0
        summed = ex.run_chunks(cid, module, [b"a" * 600, b"b" * 600])
        assert summed.failure is not None
        assert summed.failure.kind is FailureKind.OUTPUT_TOO_LARGE
        assert summed.failed_index == 1
        assert "outputs add up" in summed.failure.message
        assert ex.run_chunks(cid, module, [b"a" * 500, b"b" * 500]).ok


def test_each_chunk_runs_in_a_fresh_instance(executor):
    cid, module = guest("probe")
    secret = b"CHUNK-SECRET-" + bytes(range(40))
    outputs = executor.run_chunks(cid, module, [b"S" + secret, b"P"]).unwrap()
    assert outputs[0] == b""
    assert len(outputs[1]) >= 5 * 65536
    assert b"CHUNK-SECRET" not in outputs[1]


def test_chunked_runs_are_deterministic_and_accept_any_contiguous_buffer(executor):
    cid, module = guest("wordcount_map")
    text = b"the cat and the hat " * 50
    chunks = [text, bytearray(text[:77]), memoryview(text)[5:300], b""]
    first = executor.run_chunks(cid, module, chunks)
    second = executor.run_chunks(cid, module, [bytes(c) for c in chunks])
    assert first.unwrap() == second.unwrap()
    assert first.report.fuel_used == second.report.fuel_used


def test_an_empty_chunk_list_still_checks_the_module(executor):
    cid, module = guest("echo")
    empty = executor.run_chunks(cid, module, [])
    assert empty.unwrap() == []
    assert empty.report.fuel_used == 0
    bad_cid, bad_module = wat_module("(module)")
    refused = executor.run_chunks(bad_cid, bad_module, [])
    assert refused.failure is not None
    assert refused.failure.kind is FailureKind.INVALID_MODULE
    assert refused.failed_index is None


def test_framed_task_input_round_trip(executor):
    # what the job layer does: unframe the task input, run it, frame the outputs
    cid, module = guest("echo")
    framed = frame_chunks([b"one", b"", b"three" * 1000])
    outputs = executor.run_chunks(cid, module, unframe_chunks(framed)).unwrap()
    assert frame_chunks(outputs) == framed


async def test_pool_runs_a_chunk_list_in_one_round_trip_with_the_executors_result(executor):
    cid, module = guest("sha256")
    chunks = [os.urandom(i * 37 % 5000) for i in range(2000)]
    async with open_sandbox(SandboxConfig(workers=2)) as sandbox:
        result = await sandbox.run_chunks(cid, module, chunks)
        assert sandbox.stats().completed == 1
    local = executor.run_chunks(cid, module, chunks)
    assert result.unwrap() == local.unwrap() == [hashlib.sha256(c).digest() for c in chunks]
    assert result.report.fuel_used == local.report.fuel_used
    assert result.report.peak_memory_bytes == local.report.peak_memory_bytes


async def test_pool_reports_the_failed_chunk_and_large_chunks_cross_intact():
    probe_cid, probe = guest("probe")
    echo_cid, echo = guest("echo")
    big = [os.urandom(3 * MiB), b"", os.urandom(MiB + 1)]
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        failed = await sandbox.run_chunks(probe_cid, probe, [b"Eok", b"Eok", b"Td"])
        assert isinstance(failed, ChunksResult)
        assert failed.failure is not None
        assert failed.failure.trap_kind == "integer_division_by_zero"
        assert failed.failed_index == 2
        assert failed.report.fuel_used > 0
        assert (await sandbox.run_chunks(echo_cid, echo, big)).unwrap() == big
        assert (await sandbox.run_chunks(echo_cid, echo, [])).unwrap() == []


async def test_pool_applies_the_task_fuel_budget_across_chunks(executor):
    cid, module = guest("probe")
    per_chunk = executor.run(cid, module, _spin(5000)).report.fuel_used
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        result = await sandbox.run_chunks(cid, module, [_spin(5000)] * 4, SandboxLimits(fuel_max=3 * per_chunk))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.OUT_OF_FUEL
    assert result.failed_index == 3
    assert result.report.fuel_used == 3 * per_chunk
