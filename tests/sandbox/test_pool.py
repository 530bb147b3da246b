"""The trio worker pool: results, concurrency, module re-sending, crashes, hangs, cancellation, bounds."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import trio

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits, open_sandbox
from tests.sandbox.conftest import guest, u32


async def wait_for(sandbox, condition, timeout_s: float = 60.0) -> None:
    """Wait until ``condition()`` holds (re-checked on every pool state change), failing after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        await sandbox.wait_until(condition)


async def test_pool_runs_tasks_in_worker_processes():
    cid, module = guest("sha256")
    async with open_sandbox(SandboxConfig(workers=2)) as sandbox:
        await sandbox.wait_ready()
        pids = sandbox.process_pids()
        assert len(pids) == 2
        assert os.getpid() not in pids
        result = await sandbox.run(cid, module, b"abc")
        assert result.unwrap() == hashlib.sha256(b"abc").digest()
        assert result.report.fuel_used > 0


async def test_concurrent_tasks_each_get_their_own_result():
    cid, module = guest("sha256")
    inputs = [bytes([i]) * (i * 977 % 70_000) for i in range(40)]
    results: dict[int, bytes] = {}
    async with open_sandbox(SandboxConfig(workers=2)) as sandbox:

        async def one(i: int) -> None:
            results[i] = (await sandbox.run(cid, module, inputs[i])).unwrap()

        async with trio.open_nursery() as nursery:
            for i in range(len(inputs)):
                nursery.start_soon(one, i)
    assert results == {i: hashlib.sha256(data).digest() for i, data in enumerate(inputs)}


async def test_large_input_and_output_cross_the_pipe_intact():
    cid, module = guest("echo")
    data = os.urandom(3 * 1024 * 1024)
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        assert (await sandbox.run(cid, module, data)).unwrap() == data
        assert (await sandbox.run(cid, module, bytearray(data[:100_000]))).unwrap() == data[:100_000]


async def test_module_bytes_are_sent_once_per_worker():
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        for i in range(10):
            assert (await sandbox.run(cid, module, u32(i))).unwrap() == u32(i)
        assert sandbox.stats().modules_sent == 1
        assert sandbox.stats().completed == 10


async def test_worker_asks_again_for_an_evicted_module():
    (cid_a, mod_a), (cid_b, mod_b) = guest("echo"), guest("sha256")
    async with open_sandbox(SandboxConfig(workers=1, module_cache_entries=1)) as sandbox:
        assert (await sandbox.run(cid_a, mod_a, b"a")).unwrap() == b"a"
        assert (await sandbox.run(cid_b, mod_b, b"b")).unwrap() == hashlib.sha256(b"b").digest()
        assert (await sandbox.run(cid_a, mod_a, b"c")).unwrap() == b"c"
        assert sandbox.stats().modules_sent == 3
        # make the pool's mirror of the worker cache wrong: the worker must answer NEED_MODULE, not fail
        worker = next(iter(sandbox._procs.values()))
        worker.cids[cid_b] = None
        assert (await sandbox.run(cid_b, mod_b, b"d")).unwrap() == hashlib.sha256(b"d").digest()
        assert sandbox.stats().modules_sent == 4


async def test_a_killed_worker_fails_its_task_and_is_replaced():
    loop_cid, loop_mod = guest("infinite_loop")
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        await sandbox.wait_ready()
        (old_pid,) = sandbox.process_pids()
        outcome = []

        async def victim() -> None:
            outcome.append(await sandbox.run(loop_cid, loop_mod, b"", SandboxLimits(wall_time_s=20.0)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(victim)
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1)
            os.kill(old_pid, signal.SIGKILL)
        (result,) = outcome
        assert result.failure is not None
        assert result.failure.kind is FailureKind.WORKER_CRASHED
        assert "killed by signal 9" in result.failure.message
        assert (await sandbox.run(cid, module, b"next")).unwrap() == b"next"
        (new_pid,) = sandbox.process_pids()
        assert new_pid != old_pid
        assert sandbox.stats().crashed == 1


async def test_a_worker_that_died_while_idle_is_replaced_before_the_next_task():
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        await sandbox.wait_ready()
        (old_pid,) = sandbox.process_pids()
        os.kill(old_pid, signal.SIGKILL)
        with trio.fail_after(60):
            await next(iter(sandbox._procs.values())).process.wait()
        assert sandbox.process_pids() == []
        assert (await sandbox.run(cid, module, b"fine")).unwrap() == b"fine"
        assert sandbox.process_pids() != [old_pid]


async def test_a_hung_worker_is_killed_after_wall_time_plus_grace():
    cid, module = guest("echo")
    config = SandboxConfig(workers=1, worker_grace_s=1.0)
    async with open_sandbox(config) as sandbox:
        assert (await sandbox.run(cid, module, b"w")).unwrap() == b"w"  # compiled: the run itself will hang
        (old_pid,) = sandbox.process_pids()
        os.kill(old_pid, signal.SIGSTOP)  # alive but never answers
        result = await sandbox.run(cid, module, b"x", SandboxLimits(wall_time_s=0.1))
        assert result.failure is not None
        assert result.failure.kind is FailureKind.TIMEOUT
        assert "killed and replaced" in result.failure.message
        assert "running the task" in result.failure.message
        assert (await sandbox.run(cid, module, b"y")).unwrap() == b"y"
        assert sandbox.stats().quarantined == 0, "a hang while running is the guest's, not the compiler's"


async def test_cancelling_the_caller_does_not_leak_or_kill_the_worker():
    loop_cid, loop_mod = guest("infinite_loop")
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        await sandbox.wait_ready()
        pids = sandbox.process_pids()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sandbox.run, loop_cid, loop_mod, b"", SandboxLimits(wall_time_s=0.3))
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1)
            nursery.cancel_scope.cancel()
        # the abandoned task finishes within its own limit; then the same worker serves the next one
        assert (await sandbox.run(cid, module, b"after")).unwrap() == b"after"
        assert sandbox.process_pids() == pids
        assert sandbox.stats().busy == 0


async def test_queue_is_bounded():
    loop_cid, loop_mod = guest("infinite_loop")
    async with open_sandbox(SandboxConfig(workers=1, queue_max=1)) as sandbox:
        await sandbox.wait_ready()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(sandbox.run, loop_cid, loop_mod, b"", SandboxLimits(wall_time_s=0.3))
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1 and sandbox.stats().queued == 1)
            refused = await sandbox.run(loop_cid, loop_mod, b"", SandboxLimits(wall_time_s=0.3))
            assert refused.failure is not None
            assert refused.failure.kind is FailureKind.REJECTED
            assert "queue is full" in refused.failure.message
            nursery.cancel_scope.cancel()


async def test_closing_the_sandbox_finishes_waiting_callers_as_cancelled():
    loop_cid, loop_mod = guest("infinite_loop")
    outcome = []
    async with trio.open_nursery() as outer:
        async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
            await sandbox.wait_ready()

            async def caller() -> None:
                outcome.append(await sandbox.run(loop_cid, loop_mod, b"", SandboxLimits(wall_time_s=20.0)))

            outer.start_soon(caller)
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1)
        pids_after_close = sandbox.process_pids()
    assert outcome[0].failure is not None
    assert outcome[0].failure.kind is FailureKind.CANCELLED
    assert pids_after_close == []
    late = await sandbox.run(loop_cid, loop_mod, b"")
    assert late.failure is not None
    assert late.failure.kind is FailureKind.CANCELLED


@pytest.mark.parametrize(
    ("case", "kind"),
    [("too_much_fuel", FailureKind.REJECTED), ("bad_cid", FailureKind.INVALID_MODULE),
     ("malformed_cid", FailureKind.INVALID_MODULE), ("module_too_big", FailureKind.REJECTED),
     ("input_too_big", FailureKind.INVALID_INPUT)],
)
async def test_pool_refuses_bad_tasks_without_using_a_worker(case, kind):
    cid, module = guest("echo")
    config = SandboxConfig(workers=1, limits_max=SandboxLimits(fuel_max=1000), module_bytes_max=1024)
    async with open_sandbox(config) as sandbox:
        if case == "too_much_fuel":
            result = await sandbox.run(cid, module, b"", SandboxLimits(fuel_max=1001))
        elif case == "bad_cid":
            result = await sandbox.run(cid, module + b"\x00", b"", SandboxLimits(fuel_max=1000))
        elif case == "malformed_cid":
            result = await sandbox.run("bafk-not-a-cid", module, b"", SandboxLimits(fuel_max=1000))
        elif case == "module_too_big":
            big_cid, big_module = guest("sha256")  # 1.8 KiB
            result = await sandbox.run(big_cid, big_module, b"", SandboxLimits(fuel_max=1000))
        else:
            result = await sandbox.run(cid, module, b"x" * 70_000,
                                       SandboxLimits(fuel_max=1000, memory_bytes_max=65536))
        assert result.failure is not None
        assert result.failure.kind is kind
        assert sandbox.stats().completed == 0


async def test_hostile_guests_through_the_pool_never_take_a_worker_down():
    async with open_sandbox(SandboxConfig(workers=2)) as sandbox:
        await sandbox.wait_ready()
        pids = sandbox.process_pids()
        expected = {
            "fuel_bomb": FailureKind.OUT_OF_FUEL, "memory_bomb": FailureKind.MEMORY_LIMIT_EXCEEDED,
            "deep_recursion": FailureKind.STACK_OVERFLOW, "forbidden_import": FailureKind.FORBIDDEN_IMPORT,
            "huge_output": FailureKind.OUTPUT_TOO_LARGE, "invalid": FailureKind.INVALID_MODULE,
            "infinite_loop": FailureKind.TIMEOUT,
        }
        limits = SandboxLimits(memory_bytes_max=8 << 20, wall_time_s=0.1)
        for name, kind in expected.items():
            cid, module = guest(name)
            data = u32(0xFFFFFFFF) if name == "huge_output" else b""
            result = await sandbox.run(cid, module, data, limits if name != "fuel_bomb" else
                                       SandboxLimits(fuel_max=1_000_000))
            assert result.failure is not None, name
            assert result.failure.kind is kind, (name, result.failure)
        assert sandbox.process_pids() == pids
        assert sandbox.stats().crashed == 0


async def test_a_worker_that_cannot_start_fails_tasks_instead_of_hanging(monkeypatch):
    from pangea_p2p.sandbox import pool

    monkeypatch.setattr(pool.sys, "executable", "/bin/false")
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        with trio.fail_after(60):
            result = await sandbox.run(cid, module, b"x")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.WORKER_CRASHED
    assert "failed to start" in result.failure.message
