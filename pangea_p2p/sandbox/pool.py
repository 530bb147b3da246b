"""The sandbox process pool for trio: ``async with open_sandbox(config) as sandbox: await sandbox.run(...)``.

Theory of operation
-------------------
The pool owns ``config.workers`` slots. Each slot is one trio task that keeps one sandbox process alive
(``python -m pangea_p2p.sandbox.process``, started with a scrubbed environment and no inherited file
descriptors: ``harden``) and takes jobs from one shared, bounded queue (a trio memory channel of
``queue_max`` jobs), so at most ``workers`` tasks run at once and the rest wait in the queue. ``run`` and
``run_chunks`` refuse a job (REJECTED) rather than wait without bound: when the queue is full, when the
input bytes of the jobs the pool holds would pass ``queued_bytes_max`` (unless the pool holds none), when
the module is larger than ``module_bytes_max`` or its limits above the node's maxima, and while its CID is
quarantined. A job is one task: one module over one or more input chunks, one round trip to a sandbox
process.

A slot's states: SPAWNING (start a sandbox process, wait for its READY) -> IDLE (wait for a job) ->
COMPILING (only when the process does not hold the module: send it, await the verdict within
``compile_time_s_max`` + ``worker_grace_s``) -> RUNNING (request sent, awaiting the response within chunks x
``wall_time_s`` + ``worker_grace_s``, with ``trio.lowlevel``-backed pipe streams, never blocking the event
loop) -> IDLE. A sandbox process that dies (EOF or a broken pipe), overruns its deadline, or answers out of
step with the protocol is killed and reaped, its job is finished as WORKER_CRASHED (or TIMEOUT), and the
slot spawns a replacement; if that happened while COMPILING, the CID is quarantined for ``quarantine_s``
(the process's own memory of it died with it). A job taken while the process is already found dead is kept
and run on the replacement. A slot whose process cannot start fails the next queued job (WORKER_CRASHED,
with the reason) instead of leaving it waiting, and tries again. Any unexpected exception while serving a
job is that job's WORKER_CRASHED (the process is replaced): nothing but cancellation leaves a slot, so
nothing reaches the caller's nursery.

Invariants: every job put in the queue is finished exactly once (by a slot, or by ``close`` with
CANCELLED), and its input bytes leave the ``queued_bytes`` count when it is; a caller that is cancelled
while waiting marks its job abandoned, so a queued job is skipped and a running one is let finish (bounded
by its limits) and its result dropped: no process is leaked or killed for it. The pool tracks which CIDs each
process holds compiled (a mirror of the process's LRU) and sends module bytes only when the process lacks
them; the process answers NEED_MODULE if the mirror was wrong. CIDs are canonical inside the pool.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from pangea_p2p.logs import get_logger, short_trace
from pangea_p2p.sandbox._boundary import Input, as_input, canonical_cid, refusal
from pangea_p2p.sandbox.config import MiB, SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.executor import BytesVerifier
from pangea_p2p.sandbox.harden import process_env
from pangea_p2p.sandbox.ipc import (
    MESSAGE_BYTES_MAX,
    READY,
    RESPONSE,
    STATUS_NEED_MODULE,
    STATUS_OK,
    IpcError,
    decode_response_body,
    decode_response_head,
    encode_compile,
    encode_run_head,
)
from pangea_p2p.sandbox.quarantine import Quarantine
from pangea_p2p.sandbox.result import ChunksResult, SandboxResult
from pangea_p2p.sandbox.runs import TaskFailed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

log = get_logger("sandbox")

PIPE_BYTES = 1 * MiB
SMALL_INPUT_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 2000
RESPAWN_BACKOFF_S = 0.5
REFUSED_MODULES_MAX = 1024


class _ProcessGone(Exception):
    """The process's pipe closed: the process died."""


class _ProcessLost(TaskFailed):
    """The process cannot finish the job: it died, hung or broke the protocol. Carries the job's failure."""

    def __init__(self, kind: FailureKind, message: str, wall_time_s: float = 0.0) -> None:
        super().__init__(kind, message)
        self.wall_time_s = wall_time_s


@dataclass(eq=False)
class _Job:
    cid: str
    module: bytes
    chunks: list[bytes | memoryview]
    limits: SandboxLimits
    nbytes: int
    done: trio.Event = field(default_factory=trio.Event)
    result: ChunksResult | None = None
    abandoned: bool = False


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
    queued_bytes: int = 0
    quarantined: int = 0


class _Process:
    """One sandbox process and its pipes."""

    def __init__(self, process: trio.Process, stderr: IO[bytes], config: SandboxConfig) -> None:
        self.process = process
        self._stderr = stderr
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._buf = bytearray()
        self.cids: OrderedDict[str, None] = OrderedDict()
        self._cache_entries = config.module_cache_entries
        self._output_bytes_max = config.task_output_bytes_max
        self._seq = 0

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
                raise _ProcessGone from exc
            if not chunk:
                raise _ProcessGone
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _send(self, data: bytes | memoryview) -> None:
        try:
            await self._stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ProcessGone from exc

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        return self._seq

    async def _response(self, seq: int, count: int) -> tuple[bool, ChunksResult | None]:
        """(cached, result) of the response to ``seq``; result None for NEED_MODULE. IpcError if out of step."""
        head = decode_response_head(await self.read_exactly(RESPONSE.size), seq,
                                    4 * count + max(self._output_bytes_max, MESSAGE_BYTES_MAX))
        if head.status == STATUS_NEED_MODULE:
            return False, None
        rest = await self.read_exactly(head.rest_len)
        if head.status == STATUS_OK and head.output_count != count:
            raise IpcError(f"response carries {head.output_count} outputs for {count} chunks")
        result = decode_response_body(head, rest)
        return head.cached, result

    def _remember(self, cid: str, cached: bool) -> None:
        if cached:
            self.cids[cid] = None
            self.cids.move_to_end(cid)
            while len(self.cids) > self._cache_entries:
                self.cids.popitem(last=False)
        else:
            self.cids.pop(cid, None)

    async def compile(self, job: _Job) -> ChunksResult | None:
        """Have the processess compile ``job``'s module: None when it holds it now, else the refusal."""
        seq = self._next_seq()
        await self._send(encode_compile(seq, job.cid, job.module))
        cached, result = await self._response(seq, 0)
        if result is None:
            raise IpcError("NEED_MODULE in answer to a compile request")
        self._remember(job.cid, cached)
        return None if result.ok else result

    async def run(self, job: _Job) -> ChunksResult | None:
        """Run ``job``; None when the process needs the module bytes."""
        seq = self._next_seq()
        head = encode_run_head(seq, job.cid, [len(c) for c in job.chunks], job.limits)
        if job.nbytes <= SMALL_INPUT_BYTES:
            await self._send(b"".join([head, *job.chunks]))
        else:
            await self._send(head)
            for chunk in job.chunks:
                if chunk:
                    await self._send(chunk)
        cached, result = await self._response(seq, len(job.chunks))
        self._remember(job.cid, cached)
        return result

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

    async def kill(self) -> None:
        """Kill the process now and reap it (one that hung or broke the protocol)."""
        with contextlib.suppress(OSError):
            self.process.kill()
        await self.aclose()


def _grow_pipe(stream: Any) -> None:
    """Ask for 1 MiB pipe buffers (fewer syscalls for large inputs); best effort."""
    fd = getattr(stream, "fileno", lambda: None)()
    if fd is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _package_root() -> str:
    return str(Path(pangea_p2p.__file__).resolve().parents[1])


class Sandbox:
    """A pool of sandbox processes. Create it with ``open_sandbox``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._config_json = config.to_json()
        self._default_limits = config.default_limits()
        self._send, self._receive = trio.open_memory_channel[_Job](config.queue_max)
        self._pending: set[_Job] = set()
        self._pending_bytes = 0
        self._procs: dict[int, _Process] = {}
        self._busy = 0
        self._completed = 0
        self._crashed = 0
        self._spawned = 0
        self._modules_sent = 0
        self._closed = False
        self._verifier = BytesVerifier()
        self._quarantine = Quarantine(config.quarantine_s)
        self._refused: OrderedDict[str, ChunksResult] = OrderedDict()
        self._changed = trio.Event()

    # -- public --------------------------------------------------------------------------------------------

    async def run(self, module_cid: str, module_bytes: bytes, input_bytes: Input,
                  limits: SandboxLimits | None = None) -> SandboxResult:
        """Run one task on one input in a sandbox process. Failures are returned as values, never raised;
        ``input_bytes`` may be any C-contiguous buffer (LocalProtocolError for a strided view)."""
        return (await self.run_chunks(module_cid, module_bytes, [input_bytes], limits)).single()

    async def run_chunks(self, module_cid: str, module_bytes: bytes, chunks: Sequence[Input],
                         limits: SandboxLimits | None = None) -> ChunksResult:
        """Run one task over ``chunks`` in one sandbox process, one round trip: an output per chunk, or the first
        failure and the index of its chunk, and one report summed over the chunks. ``limits`` apply to each
        chunk's run except ``fuel_max``, the budget of the whole task (protocols/guest-abi.md)."""
        limits = limits or self._default_limits
        views = [as_input(chunk) for chunk in chunks]
        refused = self._refusal(module_cid, module_bytes, views, limits)
        if refused is not None:
            return refused
        job = _Job(canonical_cid(module_cid), module_bytes, views, limits, sum(len(v) for v in views))
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            return ChunksResult.failed(FailureKind.REJECTED, f"sandbox queue is full ({self.config.queue_max} "
                                       "tasks waiting); try later")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return ChunksResult.failed(FailureKind.CANCELLED, "sandbox is closed")
        self._pending.add(job)
        self._pending_bytes += job.nbytes
        self._notify()
        try:
            await job.done.wait()
        except BaseException:
            job.abandoned = True
            raise
        assert job.result is not None
        return job.result

    async def wait_ready(self) -> None:
        """Wait until every sandbox process has started (the pool also works while they start)."""
        await self.wait_until(lambda: len(self.process_pids()) >= self.config.workers)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, re-checking whenever the pool's state (``stats()``) changes."""
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def process_pids(self) -> list[int]:
        """Process ids of the live sandbox processes (for monitoring and tests)."""
        return sorted(w.pid for w in self._procs.values() if w.alive())

    def stats(self) -> SandboxStats:
        return SandboxStats(len(self._procs), self._busy, self._receive.statistics().current_buffer_used,
                            self._completed, self._crashed, self._spawned, self._modules_sent,
                            self._pending_bytes, len(self._quarantine))

    # -- internals -----------------------------------------------------------------------------------------

    def _refusal(self, cid: str, module: bytes, views: list[bytes | memoryview],
                 limits: SandboxLimits) -> ChunksResult | None:
        if self._closed:
            return ChunksResult.failed(FailureKind.CANCELLED, "sandbox is closed")
        refused = refusal(self.config, cid, module, views, limits)
        if refused is not None:
            return refused
        cid = canonical_cid(cid)
        quarantined = self._quarantine.reason(cid, trio.current_time())
        if quarantined is not None:
            return ChunksResult.failed(FailureKind.REJECTED, quarantined)
        if not self._verifier.matches(cid, module):
            return ChunksResult.failed(FailureKind.INVALID_MODULE, f"module bytes do not match their content id "
                                       f"{cid}")
        known = self._refused.get(cid)
        if known is not None:
            return known
        nbytes = sum(len(v) for v in views)
        if self._pending_bytes and self._pending_bytes + nbytes > self.config.queued_bytes_max:
            return ChunksResult.failed(FailureKind.REJECTED, f"sandbox holds {self._pending_bytes} bytes of "
                                       f"task input; {nbytes} more would pass its {self.config.queued_bytes_max}; "
                                       "try later")
        return None

    def _finish(self, job: _Job, result: ChunksResult) -> None:
        if job.result is None:
            job.result = result
            job.done.set()
            self._pending.discard(job)
            self._pending_bytes -= job.nbytes

    async def _spawn(self, slot: int) -> _Process:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the _Process, closed in aclose()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "pangea_p2p.sandbox.process", self._config_json],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, close_fds=True,
                env=process_env(_package_root()))
        except BaseException:
            stderr.close()
            raise
        proc = _Process(process, stderr, self.config)
        _grow_pipe(process.stdin)
        _grow_pipe(process.stdout)
        try:
            with trio.fail_after(self.config.worker_start_timeout_s):
                ready = await proc.read_exactly(len(READY))
            if ready != READY:
                raise _ProcessGone
        except (_ProcessGone, trio.TooSlowError):
            description = await proc.reap()
            await proc.aclose()
            raise _ProcessGone(f"sandbox process failed to start ({description})") from None
        except BaseException:
            await proc.aclose()
            raise
        self._procs[slot] = proc
        self._spawned += 1
        self._notify()
        return proc

    async def _start_process(self, slot: int) -> _Process | str:
        """A new sandbox process for ``slot``, or why none could be started (never raises but for cancellation)."""
        try:
            return await self._spawn(slot)
        except _ProcessGone as exc:
            problem = str(exc)
        except Exception as exc:  # OSError (executable gone, out of fds or memory) or a bug of ours
            problem = f"sandbox process failed to start ({type(exc).__name__}: {exc})"
        log.error("sandbox.process_start_failed", error=problem)
        return problem

    async def _slot_loop(self, slot: int) -> None:
        proc: _Process | None = None
        job: _Job | None = None
        try:
            while True:
                if proc is None or not proc.alive():
                    if proc is not None:
                        await proc.aclose()
                        proc = None
                    started = await self._start_process(slot)
                    if isinstance(started, str):
                        if job is None:  # fail the next queued job rather than leave it waiting
                            with trio.move_on_after(RESPAWN_BACKOFF_S):
                                try:
                                    job = await self._receive.receive()
                                except (trio.EndOfChannel, trio.ClosedResourceError):
                                    return
                        if job is not None:
                            self._finish(job, ChunksResult.failed(FailureKind.WORKER_CRASHED, started))
                            job = None
                        continue
                    proc = started
                if job is None:
                    try:
                        job = await self._receive.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                if job.abandoned:
                    self._finish(job, ChunksResult.failed(FailureKind.CANCELLED, "the caller gave up"))
                    job = None
                    continue
                if not proc.alive():
                    continue  # died while idle: run the job on a replacement
                result, proc = await self._serve(proc, job)
                self._completed += 1
                self._finish(job, result)
                job = None
                self._notify()
        finally:
            if job is not None:
                self._finish(job, ChunksResult.failed(FailureKind.CANCELLED, "sandbox closed before the task ran"))
            self._procs.pop(slot, None)
            if proc is not None:
                await proc.aclose()

    async def _serve(self, proc: _Process, job: _Job) -> tuple[ChunksResult, _Process | None]:
        """Run ``job`` on ``proc``: the result, and the process if it is still usable."""
        self._busy += 1
        self._notify()
        try:
            return await self._execute(proc, job), proc
        except _ProcessLost as lost:
            self._crashed += 1
            return ChunksResult.failed(lost.kind, lost.message, wall_time_s=lost.wall_time_s), None
        except Exception as exc:  # a bug of ours: it fails this job, never the pool
            log.error("sandbox.internal_error", module=job.cid, pid=proc.pid, error=repr(exc),
                      trace=short_trace(exc))
            self._crashed += 1
            await proc.kill()
            return ChunksResult.failed(FailureKind.WORKER_CRASHED, f"internal error of the sandbox pool "
                                       f"({type(exc).__name__}: {exc}); the process was replaced"), None
        finally:
            self._busy -= 1

    async def _execute(self, proc: _Process, job: _Job) -> ChunksResult:
        for _ in range(2):  # a second round only when the process evicted the module the pool thought it had
            if job.cid not in proc.cids:
                refused = await self._step(proc, job, compiling=True)
                if refused is not None:
                    if refused.failure is not None and refused.failure.kind in (
                            FailureKind.INVALID_MODULE, FailureKind.FORBIDDEN_IMPORT):
                        self._remember_refused(job.cid, refused)
                    return refused
            result = await self._step(proc, job, compiling=False)
            if result is not None:
                return result
        await proc.kill()
        raise _ProcessLost(FailureKind.WORKER_CRASHED, "sandbox process asked twice for a module it was just sent; "
                          "it was replaced")

    async def _step(self, proc: _Process, job: _Job, *, compiling: bool) -> ChunksResult | None:
        """One request (compile or run) within its deadline; _ProcessLost when the process fails it."""
        if compiling:  # the sandbox process's compile process is killed at compile_time_s_max: it answers first
            deadline_s = self.config.compile_time_s_max + self.config.worker_grace_s
        else:
            deadline_s = len(job.chunks) * job.limits.wall_time_s + self.config.worker_grace_s
        what = "compiling the module" if compiling else "running the task"
        answered, result = False, None
        with trio.move_on_after(deadline_s):
            try:
                if compiling:
                    self._modules_sent += 1
                    result = await proc.compile(job)
                else:
                    result = await proc.run(job)
                answered = True
            except _ProcessGone:
                description = await proc.reap()
                await proc.aclose()
                log.warning("sandbox.process_died", pid=proc.pid, doing=what, module=job.cid, how=description)
                self._lost_while(compiling, job.cid, f"its compilation killed a sandbox process ({description})")
                raise _ProcessLost(FailureKind.WORKER_CRASHED, f"sandbox process died {what} ({description}); "
                                  "it was replaced") from None
            except IpcError as exc:
                await proc.kill()
                log.error("sandbox.protocol_broken", pid=proc.pid, doing=what, module=job.cid, error=str(exc))
                raise _ProcessLost(FailureKind.WORKER_CRASHED, f"sandbox process broke the protocol {what} "
                                  f"({exc}); it was replaced") from None
        if answered:
            return result
        await proc.kill()
        self._lost_while(compiling, job.cid, f"its compilation took more than {deadline_s:.1f} s")
        raise _ProcessLost(FailureKind.TIMEOUT, f"sandbox process did not answer within {deadline_s:.1f} s {what}; "
                          "it was killed and replaced", deadline_s)

    def _lost_while(self, compiling: bool, cid: str, reason: str) -> None:
        if compiling:
            self._quarantine.add(cid, trio.current_time(), reason)
            log.warning("sandbox.module_quarantined", module=cid, for_s=self.config.quarantine_s, reason=reason)

    def _remember_refused(self, cid: str, result: ChunksResult) -> None:
        self._refused[cid] = result
        while len(self._refused) > REFUSED_MODULES_MAX:
            self._refused.popitem(last=False)

    async def _close(self) -> None:
        self._closed = True
        self._send.close()
        for job in list(self._pending):
            self._finish(job, ChunksResult.failed(FailureKind.CANCELLED, "sandbox closed before the task finished"))


@contextlib.asynccontextmanager
async def open_sandbox(config: SandboxConfig | None = None) -> AsyncIterator[Sandbox]:
    """A sandbox process pool for the duration of the block; its processes start in the background and stop
    at exit."""
    sandbox = Sandbox(config or SandboxConfig())
    async with trio.open_nursery() as nursery:
        for slot in range(sandbox.config.workers):
            nursery.start_soon(sandbox._slot_loop, slot)
        try:
            yield sandbox
        finally:
            await sandbox._close()
            nursery.cancel_scope.cancel()
