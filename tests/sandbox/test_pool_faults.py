"""The pool under faults of its own and of its workers: unexpected exceptions, workers that cannot start,
pipes out of step, byte-bounded queueing, modules that hang or crash the compiler, worker hardening."""

from __future__ import annotations

import io
import json
import logging
import os
import signal

import pytest
import trio

from pangea_p2p import logs
from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import SandboxConfig, open_sandbox
from pangea_p2p.sandbox import pool as pool_module
from pangea_p2p.sandbox.quarantine import Quarantine
from tests.sandbox.conftest import guest

MiB = 1 << 20


@pytest.fixture
def json_log():
    """The node's logging set to JSON lines, as `pangea node --log-format json` does, into a buffer."""
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    yield buf
    logging.getLogger(logs.ROOT).handlers[:] = []


async def wait_for(sandbox, condition, timeout_s: float = 60.0) -> None:
    with trio.fail_after(timeout_s):
        await sandbox.wait_until(condition)


async def test_an_unexpected_exception_fails_only_its_task_and_replaces_the_worker(monkeypatch):
    cid, module = guest("echo")
    real_run = pool_module._Process.run
    calls = []

    async def failing_once(self, job):
        calls.append(job)
        if len(calls) == 2:
            raise RuntimeError("injected fault")
        return await real_run(self, job)

    monkeypatch.setattr(pool_module._Process, "run", failing_once)
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        assert (await sandbox.run(cid, module, b"one")).unwrap() == b"one"
        (old_pid,) = sandbox.process_pids()
        failed = await sandbox.run(cid, module, b"two")
        assert failed.failure is not None
        assert failed.failure.kind is FailureKind.WORKER_CRASHED
        assert "RuntimeError: injected fault" in failed.failure.message
        assert (await sandbox.run(cid, module, b"three")).unwrap() == b"three"
        assert sandbox.process_pids() != [old_pid]
        assert sandbox.stats().crashed == 1
        assert sandbox.stats().queued_bytes == 0


async def test_a_worker_whose_executable_is_missing_fails_tasks_instead_of_the_nursery(monkeypatch):
    monkeypatch.setattr(pool_module.sys, "executable", "/nonexistent/python3")
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        with trio.fail_after(60):
            result = await sandbox.run(cid, module, b"x")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.WORKER_CRASHED
    assert "failed to start (FileNotFoundError" in result.failure.message


async def test_a_response_out_of_step_kills_the_worker_instead_of_answering_the_wrong_caller(monkeypatch):
    cid, module = guest("echo")
    real = pool_module.encode_run_head
    skew = {"by": 0}
    monkeypatch.setattr(pool_module, "encode_run_head", lambda seq, *rest: real(seq + skew["by"], *rest))
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        assert (await sandbox.run(cid, module, b"in step")).unwrap() == b"in step"
        skew["by"] = 1  # the worker now answers request n+1 where the pool waits for n
        result = await sandbox.run(cid, module, b"out of step")
        assert result.failure is not None
        assert result.failure.kind is FailureKind.WORKER_CRASHED
        assert "broke the protocol" in result.failure.message
        skew["by"] = 0
        assert (await sandbox.run(cid, module, b"again")).unwrap() == b"again"


async def test_queued_input_bytes_are_bounded():
    cid, module = guest("echo")
    config = SandboxConfig(workers=1, queued_bytes_max=1 * MiB)
    async with open_sandbox(config) as sandbox:
        # an idle pool takes one task above the bound: a task up to the memory limit always fits
        assert (await sandbox.run(cid, module, bytes(2 * MiB))).unwrap() == bytes(2 * MiB)
        (pid,) = sandbox.process_pids()
        os.kill(pid, signal.SIGSTOP)  # the next task is sent and stays unanswered until SIGCONT
        results = []

        async def submit(size: int) -> None:
            results.append((await sandbox.run(cid, module, bytes(size))).unwrap() == bytes(size))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 700 * 1024)
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1)
            refused = await sandbox.run(cid, module, bytes(400 * 1024))
            assert refused.failure is not None
            assert refused.failure.kind is FailureKind.REJECTED
            assert "bytes of task input" in refused.failure.message
            nursery.start_soon(submit, 300 * 1024)
            await wait_for(sandbox, lambda: sandbox.stats().queued == 1)
            assert sandbox.stats().queued_bytes == 1000 * 1024
            os.kill(pid, signal.SIGCONT)
        assert results == [True, True]
        assert sandbox.stats().queued_bytes == 0
        assert (await sandbox.run(cid, module, bytes(900 * 1024))).ok


async def test_a_module_that_hangs_the_compiler_is_quarantined():
    cid, module = guest("sha256")
    other_cid, other = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1, worker_grace_s=1.0, compile_time_s_max=1.0)) as sandbox:
        await sandbox.wait_ready()
        (pid,) = sandbox.process_pids()
        os.kill(pid, signal.SIGSTOP)  # the next compile request is never answered
        hung = await sandbox.run(cid, module, b"x")
        assert hung.failure is not None
        assert hung.failure.kind is FailureKind.TIMEOUT
        assert "compiling the module" in hung.failure.message
        completed = sandbox.stats().completed
        again = await sandbox.run(cid, module, b"x")
        assert again.failure is not None
        assert again.failure.kind is FailureKind.REJECTED
        assert "quarantined" in again.failure.message
        assert sandbox.stats().completed == completed, "a quarantined module never reaches a worker"
        assert sandbox.stats().quarantined == 1
        assert (await sandbox.run(other_cid, other, b"others run")).unwrap() == b"others run"


async def test_a_module_whose_compilation_kills_the_worker_is_quarantined(json_log):
    cid, module = guest("sha256")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        await sandbox.wait_ready()
        (pid,) = sandbox.process_pids()
        os.kill(pid, signal.SIGSTOP)
        outcome = []

        async def submit() -> None:
            outcome.append(await sandbox.run(cid, module, b"x"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await wait_for(sandbox, lambda: sandbox.stats().busy == 1)  # the compile request is out
            os.kill(pid, signal.SIGKILL)
        (crashed,) = outcome
        assert crashed.failure is not None
        assert crashed.failure.kind is FailureKind.WORKER_CRASHED
        assert "compiling the module" in crashed.failure.message
        refused = await sandbox.run(cid, module, b"x")
        assert refused.failure is not None
        assert refused.failure.kind is FailureKind.REJECTED
        assert "its compilation killed a sandbox process" in refused.failure.message
    events = {doc["event"]: doc for doc in map(json.loads, json_log.getvalue().splitlines())}
    assert events["sandbox.process_died"]["level"] == "warning", "the node's JSON log format, not a plain line"
    assert events["sandbox.process_died"]["how"] == "killed by signal 9"
    assert events["sandbox.module_quarantined"]["module"] == cid


def test_quarantine_expires_and_is_bounded():
    q = Quarantine(duration_s=10.0, entries_max=2)
    q.add("a", now=100.0, reason="hung")
    assert "hung" in (q.reason("a", now=109.9) or "")
    assert q.reason("a", now=110.0) is None
    assert len(q) == 0, "an expired entry is forgotten"
    q.add("a", now=200.0, reason="1")
    q.add("b", now=201.0, reason="2")
    q.add("a", now=202.0, reason="3")  # re-added: now the newest
    q.add("c", now=203.0, reason="4")  # over the bound: the oldest (b) goes
    assert len(q) == 2
    assert q.reason("b", now=203.0) is None
    assert q.reason("a", now=203.0) is not None
    assert q.reason("c", now=203.0) is not None


def _environ_and_fd_targets(pid: int) -> tuple[bytes, set[str]]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    fd_dir = f"/proc/{pid}/fd"
    return environ, {os.readlink(os.path.join(fd_dir, name)) for name in os.listdir(fd_dir)}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
async def test_worker_processes_get_a_scrubbed_environment_and_no_inherited_fds(monkeypatch):
    monkeypatch.setenv("PANGEA_TEST_SECRET", "do-not-leak")
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    try:
        async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
            await sandbox.wait_ready()
            (pid,) = sandbox.process_pids()
            environ, targets = _environ_and_fd_targets(pid)
            env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if item)
        leaked = f"pipe:[{os.fstat(write_fd).st_ino}]"
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert leaked not in targets
    assert len(targets) < 16
    assert b"PANGEA_TEST_SECRET" not in env
    assert b"HOME" not in env
    assert b"PYTHONPATH" in env
    assert set(env) <= {b"PATH", b"PYTHONHOME", b"LD_LIBRARY_PATH", b"TMPDIR", b"SYSTEMROOT", b"PYTHONPATH",
                        b"PANGEA_PARENT_PID"}
