"""The worker pool for trio: ``async with open_sandbox(config) as sandbox: await sandbox.run(...)``.

Theory of operation
-------------------
The pool owns ``config.workers`` slots. Each slot is one trio task that keeps one worker process alive
(``python -m pangea_p2p.sandbox.worker``) and takes jobs from one shared, bounded queue (a trio memory
channel of ``queue_max`` jobs), so at most ``workers`` tasks run at once and the rest wait in the queue;
``run`` refuses a job (REJECTED) when the queue is full rather than wait without bound.

A slot's states: SPAWNING (start a worker, wait for its READY) -> IDLE (wait for a job) -> BUSY (request
sent, awaiting the response with ``trio.lowlevel``-backed pipe streams, never blocking the event loop)
-> IDLE. A worker that dies (EOF or a broken pipe) or overruns its task's wall time plus a grace period is
killed and reaped, its task is finished as WORKER_CRASHED (or TIMEOUT), and the slot spawns a replacement.
A job taken while the worker is already found dead is kept and run on the replacement. A slot whose
worker cannot start fails the next queued job (WORKER_CRASHED, with the reason) instead of leaving it
waiting, and tries again.

Invariants: every job put in the queue is finished exactly once (by a slot, or by ``close`` with
CANCELLED); a caller that is cancelled while waiting marks its job abandoned, so a queued job is skipped
and a running one is let finish (bounded by its limits) and its result dropped: no worker is leaked or
killed for it. The pool tracks which CIDs each worker holds compiled (a mirror of the worker's LRU) and
sends module bytes only when the worker lacks them; the worker answers NEED_MODULE if the mirror was wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import trio

import pangea_p2p
from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox.config import MiB, SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.executor import BytesVerifier
from pangea_p2p.sandbox.result import SandboxResult
from pangea_p2p.sandbox.wire import (
    READY,
    RESPONSE,
    STATUS_NEED_MODULE,
    decode_response,
    encode_request_head,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

PIPE_BYTES = 1 * MiB
SMALL_INPUT_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 2000
COMPILE_ALLOWANCE_S_PER_MIB = 2.0
RESPAWN_BACKOFF_S = 0.5


class _WorkerGone(Exception):
    """The worker's pipe closed: the process died."""


@dataclass(eq=False)
class _Job:
    cid: str
    module: bytes
    data: bytes | bytearray | memoryview
    limits: SandboxLimits
    done: trio.Event = field(default_factory=trio.Event)
    result: SandboxResult | None = None
    abandoned: bool = False

    def finish(self, result: SandboxResult) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


@dataclass(frozen=True, slots=True)
class SandboxStats:
    """Counters of a pool, for monitoring and tests."""

    workers: int
    busy: int
    queued: int
    completed: int
    crashed: int
    spawned: int
    modules_sent: int


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, process: trio.Process, stderr: IO[bytes], cache_entries: int) -> None:
        self.process = process
        self._stderr = stderr
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._buf = bytearray()
        self.cids: OrderedDict[str, None] = OrderedDict()
        self._cache_entries = cache_entries

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.returncode is None

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = await self._stdout.receive_some(max(n - len(self._buf), PIPE_BYTES))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _WorkerGone from exc
            if not chunk:
                raise _WorkerGone
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _send(self, data: bytes | memoryview) -> None:
        try:
            await self._stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _WorkerGone from exc

    async def request(self, job: _Job, send_module: bool) -> SandboxResult | None:
        """Run ``job``; None when the worker needs the module bytes."""
        head = encode_request_head(job.cid, job.module if send_module else None, len(job.data), job.limits)
        if len(job.data) <= SMALL_INPUT_BYTES:
            await self._send(head + bytes(job.data))
        else:
            await self._send(head)
            await self._send(job.data if isinstance(job.data, bytes | memoryview) else memoryview(job.data))
        rhead = await self.read_exactly(RESPONSE.size)
        status, flags, tk_len, payload_len = rhead[0], rhead[1], int.from_bytes(rhead[2:4], "little"), \
            int.from_bytes(rhead[4:8], "little")
        if status == STATUS_NEED_MODULE:
            self.cids.pop(job.cid, None)
            return None
        rest = await self.read_exactly(tk_len + payload_len)
        if flags & 1:
            self.cids[job.cid] = None
            self.cids.move_to_end(job.cid)
            while len(self.cids) > self._cache_entries:
                self.cids.popitem(last=False)
        return decode_response(rhead, rest[:tk_len], rest[tk_len:])

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - STDERR_TAIL_BYTES))
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1].strip()[:300] if lines else ""

    def exit_description(self) -> str:
        code = self.process.returncode
        how = "still running" if code is None else (f"killed by signal {-code}" if code < 0 else f"exit {code}")
        tail = self.stderr_tail()
        return f"{how}; last stderr line: {tail}" if tail else how

    async def reap(self) -> str:
        """Wait briefly for the process to exit (kill it if it does not) and describe how it ended."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1.0):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        return self.exit_description()

    async def aclose(self) -> None:
        """Stop the process (close stdin, then kill if it lingers) and reap it."""
        with trio.CancelScope(shield=True):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._stdin.aclose()
            with trio.move_on_after(0.5):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            with contextlib.suppress(OSError, trio.ClosedResourceError):
                await self._stdout.aclose()
            self._stderr.close()


def _grow_pipe(stream: Any) -> None:
    """Ask for 1 MiB pipe buffers (fewer syscalls for large inputs); best effort."""
    fd = getattr(stream, "fileno", lambda: None)()
    if fd is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(pangea_p2p.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Sandbox:
    """A pool of sandbox worker processes. Create it with ``open_sandbox``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._config_json = config.to_json()
        self._default_limits = config.default_limits()
        self._send, self._receive = trio.open_memory_channel[_Job](config.queue_max)
        self._pending: set[_Job] = set()
        self._workers: dict[int, _Worker] = {}
        self._busy = 0
        self._completed = 0
        self._crashed = 0
        self._spawned = 0
        self._modules_sent = 0
        self._closed = False
        self._verifier = BytesVerifier()
        self._changed = trio.Event()

    # -- public --------------------------------------------------------------------------------------------

    async def run(self, module_cid: str, module_bytes: bytes, input_bytes: bytes | bytearray | memoryview,
                  limits: SandboxLimits | None = None) -> SandboxResult:
        """Run one task in a worker process. Failures are returned as values, never raised."""
        limits = limits or self._default_limits
        refused = self._refusal(module_cid, module_bytes, input_bytes, limits)
        if refused is not None:
            return refused
        job = _Job(module_cid, module_bytes, input_bytes, limits)
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            return SandboxResult.failed(FailureKind.REJECTED, f"sandbox queue is full ({self.config.queue_max} "
                                        "tasks waiting); try later")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return SandboxResult.failed(FailureKind.CANCELLED, "sandbox is closed")
        self._pending.add(job)
        self._notify()
        try:
            await job.done.wait()
        except BaseException:
            job.abandoned = True
            raise
        finally:
            self._pending.discard(job)
        assert job.result is not None
        return job.result

    async def wait_ready(self) -> None:
        """Wait until every worker process has started (the pool also works while they start)."""
        await self.wait_until(lambda: len(self.worker_pids()) >= self.config.workers)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, re-checking whenever the pool's state (``stats()``) changes."""
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return sorted(w.pid for w in self._workers.values() if w.alive())

    def stats(self) -> SandboxStats:
        return SandboxStats(len(self._workers), self._busy, self._receive.statistics().current_buffer_used,
                            self._completed, self._crashed, self._spawned, self._modules_sent)

    # -- internals -----------------------------------------------------------------------------------------

    def _refusal(self, cid: str, module: bytes, data: bytes | bytearray | memoryview,
                 limits: SandboxLimits) -> SandboxResult | None:
        if self._closed:
            return SandboxResult.failed(FailureKind.CANCELLED, "sandbox is closed")
        excess = limits.excess_over(self.config.limits_max)
        if excess is not None:
            return SandboxResult.failed(FailureKind.REJECTED, excess)
        if len(module) > self.config.module_bytes_max:
            return SandboxResult.failed(FailureKind.INVALID_MODULE, f"module is {len(module)} bytes, more than "
                                        f"the {self.config.module_bytes_max} allowed")
        if not self._verifier.matches(cid, module):
            return SandboxResult.failed(FailureKind.INVALID_MODULE,
                                        f"module bytes do not match their content id {cid[:80]}")
        if len(data) > limits.memory_bytes_max:
            return SandboxResult.failed(FailureKind.INVALID_INPUT, f"input is {len(data)} bytes, more than the "
                                        f"task's memory limit of {limits.memory_bytes_max}")
        return None

    async def _spawn(self, slot: int) -> _Worker:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the _Worker, closed in aclose()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "pangea_p2p.sandbox.worker", self._config_json],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=_worker_env())
        except BaseException:
            stderr.close()
            raise
        worker = _Worker(process, stderr, self.config.module_cache_entries)
        _grow_pipe(process.stdin)
        _grow_pipe(process.stdout)
        try:
            with trio.fail_after(self.config.worker_start_timeout_s):
                ready = await worker.read_exactly(len(READY))
            if ready != READY:
                raise _WorkerGone
        except (_WorkerGone, trio.TooSlowError):
            description = await worker.reap()
            await worker.aclose()
            raise _WorkerGone(f"sandbox worker failed to start ({description})") from None
        except BaseException:
            await worker.aclose()
            raise
        self._workers[slot] = worker
        self._spawned += 1
        self._notify()
        return worker

    async def _slot_loop(self, slot: int) -> None:
        worker: _Worker | None = None
        job: _Job | None = None
        try:
            while True:
                if worker is None or not worker.alive():
                    if worker is not None:
                        await worker.aclose()
                        worker = None
                    try:
                        worker = await self._spawn(slot)
                    except _WorkerGone as exc:
                        log.error("%s", exc)
                        if job is None:  # fail the next queued job rather than leave it waiting
                            with trio.move_on_after(RESPAWN_BACKOFF_S):
                                try:
                                    job = await self._receive.receive()
                                except (trio.EndOfChannel, trio.ClosedResourceError):
                                    return
                        if job is not None:
                            job.finish(SandboxResult.failed(FailureKind.WORKER_CRASHED, str(exc)))
                            job = None
                        continue
                if job is None:
                    try:
                        job = await self._receive.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                if job.abandoned:
                    job = None
                    continue
                if not worker.alive():
                    continue  # died while idle: run the job on a replacement
                self._busy += 1
                self._notify()
                try:
                    result = await self._execute(worker, job)
                finally:
                    self._busy -= 1
                self._completed += 1
                job.finish(result)
                job = None
                self._notify()
        finally:
            if job is not None:
                job.finish(SandboxResult.failed(FailureKind.CANCELLED, "sandbox closed before the task ran"))
            self._workers.pop(slot, None)
            if worker is not None:
                await worker.aclose()

    async def _execute(self, worker: _Worker, job: _Job) -> SandboxResult:
        send_module = job.cid not in worker.cids
        grace = self.config.worker_grace_s + COMPILE_ALLOWANCE_S_PER_MIB * len(job.module) / MiB
        result: SandboxResult | None = None
        with trio.move_on_after(job.limits.wall_time_s + grace) as scope:
            try:
                self._modules_sent += send_module
                result = await worker.request(job, send_module)
                if result is None:
                    self._modules_sent += 1
                    result = await worker.request(job, True)
            except _WorkerGone:
                result = None
        if result is not None:
            return result
        self._crashed += 1
        if scope.cancelled_caught:
            worker.process.kill()
            await worker.aclose()
            return SandboxResult.failed(FailureKind.TIMEOUT, f"worker did not answer within "
                                        f"{job.limits.wall_time_s + grace:.1f} s; it was killed and replaced",
                                        wall_time_s=job.limits.wall_time_s + grace)
        description = await worker.reap()
        await worker.aclose()
        log.warning("sandbox worker %d died running %s: %s", worker.pid, job.cid, description)
        return SandboxResult.failed(FailureKind.WORKER_CRASHED, f"worker process died during the task "
                                    f"({description}); it was replaced")

    async def _close(self) -> None:
        self._closed = True
        self._send.close()
        for job in list(self._pending):
            job.finish(SandboxResult.failed(FailureKind.CANCELLED, "sandbox closed before the task finished"))


@contextlib.asynccontextmanager
async def open_sandbox(config: SandboxConfig | None = None) -> AsyncIterator[Sandbox]:
    """A worker pool for the duration of the block; workers start in the background and stop at exit."""
    sandbox = Sandbox(config or SandboxConfig())
    async with trio.open_nursery() as nursery:
        for slot in range(sandbox.config.workers):
            nursery.start_soon(sandbox._slot_loop, slot)
        try:
            yield sandbox
        finally:
            await sandbox._close()
            nursery.cancel_scope.cancel()
