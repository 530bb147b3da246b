"""The compute service of a peer: the trio driver of the job coordinators and of the worker side.

Issuer side. ``submit(spec)`` creates a ``Coordinator`` for the job; its effects become messages on
``/pangea/compute/1.0.0``: one long-lived stream per worker (a ``Session``), carrying offers, cancels and
reveal requests out and accepted / rejected / commitment / result messages back, correlated by task id. Local
runs and spot checks go to this peer's sandbox. One ticker task wakes every coordinator at its next deadline.

Worker side. A stream opened by an issuer carries offers; each is admitted or refused by the
``WorkerService``; an admitted task's module and input are fetched by content id (inline, then the issuer,
then DHT providers), run chunk by chunk in the sandbox, and answered with a signed receipt (a commitment first
under commit-then-reveal). A task the service decides to split gets a Coordinator of its own for its parts;
when they are done this peer merges the outputs and signs a delegation receipt over the children's receipts.

Everything that decides is in pangea_p2p.core.jobs; this module moves bytes and reads clocks.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from pangea_p2p.core.chunks import chunk_count, frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import wire
from pangea_p2p.core.jobs.coordinator import Coordinator, CoordinatorConfig, Reachability, WorkerSource
from pangea_p2p.core.jobs.effects import (
    CancelAttempt,
    Dispatch,
    Effect,
    JobFinished,
    RequestReveal,
    RunLocal,
    SpotCheck,
    TaskUpdate,
)
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskRef, TaskState, VerificationPolicy
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.worker import Verdict, WorkerService, commit_claim, delegation, split_coordinator, split_task
from pangea_p2p.core.trust import Outcome, TrustBook
from pangea_p2p.core.verify.chain import ReceiptTree
from pangea_p2p.core.verify.commit_reveal import commit
from pangea_p2p.core.verify.receipts import ReplayGuard, issue_receipt
from pangea_p2p.core.verify.voting import NONDETERMINISTIC_FAILURES
from pangea_p2p.errors import PangeaError, RemoteProtocolError, TransportError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, FrameWriter
from pangea_p2p.node import blockx
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.journal import FLUSH_AFTER_S, Journal, TaskRecord
from pangea_p2p.node.logs import get_logger
from pangea_p2p.node.task_logs import TaskLogs
from pangea_p2p.sandbox import SandboxLimits

if TYPE_CHECKING:
    from pangea_p2p.node.peer import Peer

COMPUTE_PROTOCOL = TProtocol("/pangea/compute/1.0.0")
REVEAL_WAIT_S_MAX = 600.0
SEND_TIMEOUT_S = 30.0  # a peer that does not take a frame for this long has stopped reading
ACCEPT_DELAY_S = 0.5  # a task answered sooner than this needs no TaskAccepted (its answer implies it)
log = get_logger("compute")


@dataclass
class JobRun:
    """A job submitted at this peer."""

    spec: JobSpec
    coordinator: Coordinator
    created_s: float
    done: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    workers: dict[str, int] = field(default_factory=dict)  # tasks done per worker
    version: int = 0  # bumped on every change (the API's long poll waits for it to move)

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = trio.Event()


@dataclass
class SplitRun:
    """A task this peer received and split: its parts run under ``coordinator``."""

    ref: TaskRef
    coordinator: Coordinator  # its tasks are the parts, in order


@dataclass
class Session:
    """Our stream to one worker: offers out, answers in."""

    peer: ID
    stream: INetStream
    tasks: set[str] = field(default_factory=set)
    writer: FrameWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = FrameWriter(self.stream, SEND_TIMEOUT_S)

    async def send(self, msg: wire.Message) -> None:
        """TransportError if the worker does not take the frame within SEND_TIMEOUT_S (it stopped reading).
        Messages sent back to back (a burst of offers) go out in one write."""
        await self.writer.send(wire.encode(msg))


@dataclass
class Incoming:
    """A task a peer gave us: what is needed to answer it and to cancel it."""

    ref: TaskRef
    sender: ID
    reply: Callable[[wire.Message], Awaitable[None]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reveal: trio.Event = field(default_factory=trio.Event)


class ComputeService:
    def __init__(self, peer: Peer, sandbox: Any, blocks: BlockStore, journal: Journal | None,
                 worker: WorkerService, nursery: trio.Nursery) -> None:
        self.peer = peer
        self.sandbox = sandbox
        self.blocks = blocks
        self.journal = journal
        self.worker = worker
        self.nursery = nursery
        self.trust = TrustBook()
        self.verify = CoordinatorConfig().verify  # the receipt rules this peer checks by (the coordinators' too)
        self.guard = ReplayGuard(self.verify)
        self.rng = random.SystemRandom()
        self.inflight: dict[str, int] = {}
        self.reachability = Reachability()
        self.jobs: dict[str, JobRun] = {}
        self.splits: dict[str, SplitRun] = {}
        # The coordinators still running (jobs and splits), and each job's run by its coordinator: looked up on
        # every effect, so dicts rather than scans over every job this peer ever ran.
        self._running: dict[Coordinator, None] = {}
        self._run_by_coord: dict[Coordinator, JobRun] = {}
        self._split_by_coord: dict[Coordinator, SplitRun] = {}
        self._provided: set[str] = set()  # module CIDs announced in the DHT (or being announced)
        self._writing = False  # a task writes the blocks stored with persist="soon"
        self.owner: dict[str, Coordinator] = {}  # task id -> the coordinator waiting for its answers
        self.sessions: dict[str, Session] = {}
        self.incoming: dict[str, Incoming] = {}
        # Tasks served here not answered yet, by trio time their TaskAccepted is due (insertion order is due order)
        self._unaccepted: dict[str, tuple[float, Incoming]] = {}
        self._accepting = False
        self.source = WorkerSource(self._views, self._local_view)
        self._wake = trio.Event()
        self.byzantine = peer.config.faults.byzantine
        self.task_logs = TaskLogs()  # what the tasks this peer issued printed (pangea job logs)

    @property
    def self_id(self) -> str:
        return self.peer.peer_id

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` in the service's nursery. Every such task handles one peer's message or one
        effect; a bug it hits (anything but cancellation) is logged with its traceback and the peer keeps
        running: a task left without an answer times out at its issuer like any lost one."""

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                frames = traceback.format_exception(exc)[-3:]
                log.error("compute.task_crashed", task=getattr(fn, "__name__", repr(fn)), error=repr(exc),
                          trace=" | ".join(line.strip().replace("\n", " ") for line in frames))

        self.nursery.start_soon(guarded)

    # --- worker views for the scheduler ------------------------------------------------------------------

    def _views(self, now: float) -> list[WorkerView]:
        out = []
        for advert in self.peer.directory.adverts(now):
            if advert.peer_id == self.self_id:
                continue
            out.append(WorkerView.from_advert(
                advert, self.trust.score(advert.peer_id, now), self.peer.rtt_s.get(advert.peer_id),
                self.inflight.get(advert.peer_id, 0),
            ))
        return out

    def _local_view(self, now: float) -> WorkerView | None:
        view = self.worker.local_view()
        busy = view.outstanding + self.inflight.get(self.self_id, 0)
        return WorkerView(view.peer_id, view.speed_fuel_per_s, view.slots_total, view.slots_total, view.fuel_max,
                          view.memory_bytes_max, view.wall_time_s_max, 0.0, 0.0, busy)

    # --- jobs submitted here -------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, *, restored: dict[str, TaskRecord] | None = None, now: float | None = None,
               created_s: float | None = None) -> JobRun:
        if spec.job_id in self.jobs:
            raise PangeaError(f"job {spec.job_id} exists already")
        now = time.time() if now is None else now
        module = self.blocks.get(spec.module_cid)
        if module is None:
            raise PangeaError(f"module {spec.module_cid} is not in this peer's block store (upload it first)")
        tasks = [self._task_ref(spec, i) for i in range(spec.task_count)]
        coord = self._coordinator(tasks, spec.verification, spec, now)
        run = JobRun(spec, coord, created_s or now)
        self.jobs[spec.job_id] = run
        self._run_by_coord[coord] = run
        self._running[coord] = None
        for ref in tasks:
            self.owner[ref.task_id] = coord
        if self.journal is not None and restored is None:
            self.journal.job_submitted(spec, now)
        for rec in (restored or {}).values():
            if rec.state is TaskState.DONE and self.blocks.has(rec.output_cid):
                coord.restore(rec.task_id, rec.output_cid, rec.tree, rec.fuel_used, rec.worker)
        if spec.module_cid not in self._provided:
            self._provided.add(spec.module_cid)
            self._spawn(self._provide, spec.module_cid)
        self._apply(coord, coord.start(now))
        return run

    def _coordinator(self, tasks: list[TaskRef], policy: VerificationPolicy, spec: JobSpec, now: float) -> Coordinator:
        return Coordinator(
            self.self_id, tasks, policy, retries_max=spec.retries_max, escalations_max=spec.escalations_max,
            escalation_factor=spec.escalation_factor, queue_timeout_s=spec.queue_timeout_s, trust=self.trust,
            guard=self.guard, source=self.source, rng=random.Random(self.rng.getrandbits(64)), now=now,
            inflight=self.inflight, reachability=self.reachability,
        )

    def _task_ref(self, spec: JobSpec, index: int) -> TaskRef:
        chunks = []
        for c in spec.task_chunks(index):
            data = self.blocks.get(spec.chunk_cids[c])
            if data is None:
                raise PangeaError(f"chunk {c} ({spec.chunk_cids[c]}) of job {spec.job_id} is not in the block store")
            chunks.append(data)
        # on disk too (soon; the store keeps it in memory until then): the memory LRU alone could evict the input
        # of a task not placed yet in a big job
        framed = frame_chunks(chunks)
        input_cid = self._keep(framed, persist=True)
        return TaskRef(
            job_id=spec.job_id, task_id=f"{spec.job_id}/t{index}", parent_task_id="", module_cid=spec.module_cid,
            input_cid=input_cid, input_bytes=len(framed), chunk_count=len(chunks), limits=spec.limits,
            issuer=self.self_id, depth=0, depth_max=spec.depth_max, path=(self.self_id,), partition_index=index,
            partition_count=spec.task_count, deadline_s=spec.deadline_s,
            fuel_per_chunk_estimate=spec.fuel_per_chunk_estimate,
        )

    def resume_journal(self) -> None:
        """Take up the jobs a previous run of this peer journaled and had not finished (and the done ones)."""
        if self.journal is None:
            return
        for rec in self.journal.jobs():
            if rec.state not in (JobState.RUNNING, JobState.DONE):
                continue
            try:
                self.submit(rec.spec, restored=rec.tasks, created_s=rec.created_s)
            except PangeaError as exc:
                log.warning("job.resume_failed", job=rec.spec.job_id, error=str(exc))
                continue
            done = sum(1 for t in rec.tasks.values() if t.state is TaskState.DONE)
            log.info("job.resumed", job=rec.spec.job_id, tasks_done=done, tasks=rec.spec.task_count)

    def cancel(self, job_id: str) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            raise PangeaError(f"no job {job_id}")
        self._apply(run.coordinator, run.coordinator.cancel(time.time()))

    async def _provide(self, cid: str) -> None:
        """Announce ``cid`` in the DHT once (py-libp2p republishes its provider records itself); a failed
        announcement is tried again at the next job with this module."""
        ok = False
        try:
            with trio.move_on_after(30):
                ok = bool(await self.peer.dht.provide(cid))
        except Exception as exc:  # the DHT is a fallback for module fetches; never fatal
            log.debug("dht.provide_failed", cid=cid, error=repr(exc))
        if not ok:
            self._provided.discard(cid)

    # --- effects -------------------------------------------------------------------------------------------

    def _apply(self, coord: Coordinator, effects: list[Effect], *, wake: bool = True) -> None:
        """Carry out ``effects``; ``wake``: also wake the ticker (an event may have moved a deadline). The ticker
        applies its own ticks without waking itself (it re-reads every deadline before it sleeps anyway)."""
        for eff in effects:
            if isinstance(eff, Dispatch):
                self.owner[eff.task.task_id] = coord
                self._spawn(self._dispatch, coord, eff)
            elif isinstance(eff, RunLocal):
                self._spawn(self._run_local, coord, eff.task)
            elif isinstance(eff, RequestReveal):
                self._spawn(self._send_to, eff.worker, wire.RevealRequest(eff.task_id))
            elif isinstance(eff, CancelAttempt):
                session = self.sessions.get(eff.worker)
                if session is not None:
                    session.tasks.discard(eff.task_id)
                self._spawn(self._send_to, eff.worker, wire.Cancel(eff.task_id))
            elif isinstance(eff, SpotCheck):
                self._spawn(self._spot_check, coord, eff)
            elif isinstance(eff, TaskUpdate):
                self._task_update(coord, eff)
            elif isinstance(eff, JobFinished):
                self._job_finished(coord, eff)
        if wake:
            self._wake.set()

    def _task_update(self, coord: Coordinator, eff: TaskUpdate) -> None:
        run = self._run_of(coord)
        if run is not None:
            if eff.state is TaskState.DONE:
                run.workers[eff.worker] = run.workers.get(eff.worker, 0) + 1
            if eff.state.final and self.journal is not None:
                self.journal.task_finished(run.spec.job_id, TaskRecord(
                    eff.task_id, eff.state, eff.reason, eff.output_cid, eff.tree, eff.fuel_used, eff.worker))
                if self.journal.pending == 1:  # the first row of a batch: it is written within FLUSH_AFTER_S
                    self._spawn(self._flush_journal)
            run.bump()

    async def _flush_journal(self) -> None:
        await trio.sleep(FLUSH_AFTER_S)
        if self.journal is not None:
            self.journal.flush()

    def _job_finished(self, coord: Coordinator, eff: JobFinished) -> None:
        self._running.pop(coord, None)
        for task_id in coord.tasks:  # late answers about its tasks are ignored from now on
            if self.owner.get(task_id) is coord:
                del self.owner[task_id]
        run = self._run_of(coord)
        if run is not None:
            log.info("job.finished", job=run.spec.job_id, state=str(eff.state), reason=eff.reason)
            if self.journal is not None:
                self.journal.job_finished(run.spec.job_id, eff.state, eff.reason, time.time())
            run.done.set()
            run.bump()
            return
        split = self._split_by_coord.pop(coord, None)
        if split is not None:
            self._spawn(self._finish_split, split, eff)

    def _run_of(self, coord: Coordinator) -> JobRun | None:
        return self._run_by_coord.get(coord)

    async def ticker(self) -> None:
        """Wake every coordinator at its next deadline (or when an effect changed something)."""
        while True:
            now = time.time()
            deadlines = [d for c in self._coordinators() if (d := c.next_deadline(now)) is not None]
            wait = min(deadlines, default=math.inf) - now
            with trio.move_on_after(max(0.0, min(wait, 1.0))):
                await self._wake.wait()
            self._wake = trio.Event()
            now = time.time()
            for coord in self._coordinators():
                self._apply(coord, coord.tick(now), wake=False)

    def _coordinators(self) -> list[Coordinator]:
        """The coordinators of the jobs and splits still running."""
        return list(self._running)

    def on_peer_gone(self, peer_id: str) -> None:
        now = time.time()
        for coord in self._coordinators():
            self._apply(coord, coord.on_peer_gone(peer_id, now))

    # --- issuer side: sessions with workers ----------------------------------------------------------------

    async def _session(self, worker: str) -> Session:
        session = self.sessions.get(worker)
        if session is not None:
            return session
        peer = ID.from_base58(worker)
        stream = await hostlib.open_stream(self.peer.host, peer, [COMPUTE_PROTOCOL])
        session = self.sessions.get(worker)
        if session is not None:  # another task opened one meanwhile
            await stream.close()
            return session
        session = Session(peer, stream)
        self.sessions[worker] = session
        self._spawn(self._read_session, session)
        return session

    async def _dispatch(self, coord: Coordinator, eff: Dispatch) -> None:
        ref = eff.task
        try:
            session = await self._session(eff.worker)
            inline = b""
            if ref.input_bytes <= wire.INPUT_INLINE_MAX:
                inline = self.blocks.get(ref.input_cid) or b""
            session.tasks.add(ref.task_id)
            await session.send(wire.Offer(ref, inline))
        except PangeaError as exc:
            self._apply(coord, coord.on_transport_error(ref.task_id, eff.worker, str(exc), time.time()))

    async def _send_to(self, worker: str, msg: wire.Message) -> None:
        session = self.sessions.get(worker)
        if session is None:
            return
        try:
            await session.send(msg)
        except PangeaError as exc:
            log.debug("compute.send_failed", worker=worker, error=str(exc))

    async def _read_session(self, session: Session) -> None:
        worker = str(session.peer)
        reason = "stream closed"
        try:
            reader = FrameReader(session.stream, wire.MESSAGE_BYTES_MAX)
            while (frame := await reader.read_frame()) is not None:
                try:
                    msg = wire.decode(frame)
                except RemoteProtocolError as exc:
                    log.warning("compute.bad_message", worker=worker, error=str(exc))
                    self.trust.record(worker, Outcome.INVALID, time.time())
                    continue
                await self._on_worker_message(worker, session, msg)
        except PangeaError as exc:
            reason = str(exc)
            if isinstance(exc, RemoteProtocolError):  # e.g. an oversized frame: a fault, not a lost connection
                self.trust.record(worker, Outcome.INVALID, time.time())
        finally:
            if self.sessions.get(worker) is session:
                del self.sessions[worker]
            now = time.time()
            for task_id in list(session.tasks):
                coord = self.owner.get(task_id)
                if coord is not None:
                    self._apply(coord, coord.on_transport_error(task_id, worker, reason, now))
            with trio.CancelScope(shield=True):
                await session.stream.close()

    async def _on_worker_message(self, worker: str, session: Session, msg: wire.Message) -> None:
        if isinstance(msg, wire.Offer):
            log.warning("compute.bad_message", worker=worker, error="an offer on a stream this peer opened")
            return
        coord = self.owner.get(msg.task_id)
        if coord is None:
            return
        now = time.time()
        if isinstance(msg, wire.Accepted):
            self._apply(coord, coord.on_accepted(msg.task_id, worker, now))
        elif isinstance(msg, wire.Rejected):
            session.tasks.discard(msg.task_id)
            self._apply(coord, coord.on_rejected(msg.task_id, worker, msg.reason, now))
        elif isinstance(msg, wire.Commitment):
            self._apply(coord, coord.on_commitment(msg.task_id, worker, msg.digest, now))
        elif isinstance(msg, wire.Result):
            session.tasks.discard(msg.task_id)
            self._spawn(self._on_result, coord, worker, session, msg)

    async def _on_result(self, coord: Coordinator, worker: str, session: Session, msg: wire.Result) -> None:
        entry = coord.tasks.get(msg.task_id)
        attempt = entry.attempts.get(worker) if entry is not None else None
        if entry is None or attempt is None:  # not a result this peer waits for: nothing fetched, nothing stored
            log.debug("compute.unexpected_result", worker=worker, task=msg.task_id)
            return
        output = msg.output_inline
        if msg.output_cid and not output:
            n = entry.ref.chunk_count  # the framed output: a count, then a length and the bytes per chunk
            size_max = 4 * (n + 1) + n * attempt.limits.output_bytes_max
            try:
                output = await blockx.fetch_from_any(self.peer.host, self.blocks, msg.output_cid, [session.peer],
                                                     min(size_max, msg.output_bytes or size_max))
            except PangeaError as exc:
                self._apply(coord, coord.on_transport_error(msg.task_id, worker, str(exc), time.time()))
                return
        if output:
            self._keep(output, persist=self._run_of(coord) is not None)
        self.task_logs.record(msg.task_id, worker, msg.log)
        self._apply(coord, coord.on_result(msg.task_id, worker, msg.receipt_tree, output, time.time(), msg.nonce))

    def _keep(self, data: bytes, *, persist: bool) -> str:
        """Store a block (a task's input or output) now and, if ``persist``, on disk soon: in a worker thread,
        batched (see blocks.py: a file or a row per block would cost the event loop 0.1-0.8 ms each). The journal
        may name an output before it is on disk; a restarted peer re-runs a DONE task whose output is missing.
        Returns its cid."""
        cid = self.blocks.put(data, persist="soon" if persist else False)
        if self.blocks.unwritten and not self._writing:
            self._writing = True
            self._spawn(self._write_blocks)
        return cid

    def close_blocks(self) -> None:
        """Write the blocks still waiting for the disk and close the store (at shutdown, after the nursery)."""
        self.blocks.close()

    async def _write_blocks(self) -> None:
        try:
            while self.blocks.unwritten:
                batch = self.blocks.take_unwritten()
                try:  # shielded: a batch taken is written whole even when shutdown cancels this task (close()
                    # writes only what no writer took)
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(self.blocks.write_files, batch)
                except OSError as exc:  # a full disk loses the files, not the node (the blocks stay in memory)
                    log.warning("blocks.write_failed", blocks=len(batch), error=str(exc))
                finally:
                    self.blocks.written(batch)
        finally:
            self._writing = False

    # --- running tasks here ----------------------------------------------------------------------------------

    async def _run_local(self, coord: Coordinator, ref: TaskRef) -> None:
        try:
            framed = await self._fetch(ref.input_cid, [], self.worker.config.input_bytes_max)
            tree, output, task_log = await self._execute_tree(ref, framed)
        except PangeaError as exc:
            self._apply(coord, coord.on_local_error(ref.task_id, str(exc), time.time()))
            return
        self.task_logs.record(ref.task_id, self.self_id, task_log)
        if output:
            self._keep(output, persist=True)
        # the tree signed here a moment ago goes along: the coordinator need not verify its own signature
        self._apply(coord, coord.on_result(ref.task_id, self.self_id, tree.encode(), output, time.time(), own=tree))

    async def _spot_check(self, coord: Coordinator, eff: SpotCheck) -> None:
        ref = eff.task
        try:
            chunks = unframe_chunks(await self._fetch(ref.input_cid, [], self.worker.config.input_bytes_max))
            module = await self._fetch(ref.module_cid, [], 64 << 20)
            result = await self.sandbox.run_chunks(ref.module_cid, module, [chunks[eff.chunk_index]],
                                                   _sandbox_limits(ref))
        except PangeaError as exc:
            log.warning("spot_check.failed_here", task=ref.task_id, error=str(exc))
            self._apply(coord, coord.on_spot_result(ref.task_id, eff.chunk_index, None, time.time(), str(exc)))
            return
        failure = result.failure
        if failure is not None and failure.kind in NONDETERMINISTIC_FAILURES:  # says nothing about the worker
            why = f"{failure.kind.name}: {failure.message}"
            self._apply(coord, coord.on_spot_result(ref.task_id, eff.chunk_index, None, time.time(), why))
            return
        chunk = None if failure is not None else result.outputs[0]
        self._apply(coord, coord.on_spot_result(ref.task_id, eff.chunk_index, chunk, time.time()))

    async def _execute(
        self, ref: TaskRef, framed_input: bytes, fetch_from: list[ID] | None = None
    ) -> tuple[bytes, bytes, bytes]:
        """Run ``ref`` here; (encoded receipt tree, framed output or b'' for a failure, the task's log)."""
        tree, output, task_log = await self._execute_tree(ref, framed_input, fetch_from)
        return tree.encode(), output, task_log

    async def _execute_tree(
        self, ref: TaskRef, framed_input: bytes, fetch_from: list[ID] | None = None
    ) -> tuple[ReceiptTree, bytes, bytes]:
        module = await self._fetch(ref.module_cid, fetch_from or [], 64 << 20)
        chunks = unframe_chunks(framed_input)
        result = await self.sandbox.run_chunks(ref.module_cid, module, chunks, _sandbox_limits(ref))
        binding = ref.binding()
        now = time.time()
        if result.failure is not None:
            receipt = issue_receipt(self.peer.identity, binding, output=None, failure=result.failure.kind,
                                    fuel_used=result.report.fuel_used, now=now, rng=self.rng)
            return ReceiptTree(receipt, ()), b"", result.log
        outputs = list(result.outputs)
        if self.byzantine == "wrong_output" and outputs:
            outputs[0] = bytes(b ^ 0x5A for b in outputs[0]) or b"\x00"
        output = frame_chunks(outputs)
        receipt = issue_receipt(self.peer.identity, binding, output=output, fuel_used=result.report.fuel_used,
                                now=now, rng=self.rng)
        return ReceiptTree(receipt, ()), output, result.log

    async def _fetch(self, cid: str, peers: list[ID], size_max: int) -> bytes:
        """``cid`` from the block store, else from ``peers``, else from providers found in the DHT."""
        try:
            return await blockx.fetch_from_any(self.peer.host, self.blocks, cid, peers, size_max)
        except TransportError as first:
            providers: list[ID] = []
            try:
                with trio.move_on_after(10):
                    providers = [i.peer_id for i in await self.peer.dht.find_providers(cid, 5)
                                 if i.peer_id not in peers and str(i.peer_id) != self.self_id]
            except Exception as exc:  # the DHT is the fallback; its failure is reported with the first error
                log.debug("dht.find_providers_failed", cid=cid, error=repr(exc))
            if not providers:
                raise first
            return await blockx.fetch_from_any(self.peer.host, self.blocks, cid, providers, size_max)

    # --- worker side: tasks offered to us ---------------------------------------------------------------------

    async def handle_stream(self, stream: INetStream) -> None:
        """A peer opened a compute stream to us: serve its offers until it closes."""
        sender = stream.muxed_conn.peer_id
        writer = FrameWriter(stream, SEND_TIMEOUT_S)  # answers sent back to back go out in one write

        async def reply(msg: wire.Message) -> None:
            # any answer says the task was taken: no TaskAccepted due any more
            if not isinstance(msg, (wire.Accepted, wire.Offer)):
                due = self._unaccepted.get(msg.task_id)
                if due is not None and due[1].reply is reply:
                    del self._unaccepted[msg.task_id]
            await writer.send(wire.encode(msg))

        mine: set[str] = set()
        try:
            reader = FrameReader(stream, wire.MESSAGE_BYTES_MAX)
            while (frame := await reader.read_frame()) is not None:
                try:
                    msg = wire.decode(frame)
                except RemoteProtocolError as exc:
                    log.warning("compute.bad_offer", sender=str(sender), error=str(exc))
                    continue
                self._on_issuer_message(sender, msg, reply, mine)
        except PangeaError as exc:
            log.debug("compute.issuer_stream_ended", sender=str(sender), error=str(exc))
        finally:
            now = time.time()
            for task_id in mine:  # the issuer went away: its tasks are not wanted any more
                inc = self.incoming.get(task_id)
                if inc is not None and inc.sender == sender:
                    inc.scope.cancel()
                    split = self.splits.get(task_id)
                    if split is not None:
                        self._apply(split.coordinator, split.coordinator.cancel(now, "the issuer went away"))
            with trio.CancelScope(shield=True):
                await stream.close()

    def _on_issuer_message(self, sender: ID, msg: wire.Message, reply: Callable[[wire.Message], Awaitable[None]],
                           mine: set[str]) -> None:
        if isinstance(msg, wire.Offer):
            ref = msg.ref
            admission = self.worker.admit(ref, str(sender), self._views(time.time()), time.time())
            if admission.verdict is Verdict.REJECT:
                self._spawn(reply, wire.Rejected(ref.task_id, admission.reason))
                return
            inc = Incoming(ref, sender, reply)
            self.incoming[ref.task_id] = inc
            mine.add(ref.task_id)
            self._spawn(self._serve_task, inc, msg.input_inline, admission.verdict, admission.parts)
            return
        known = self.incoming.get(msg.task_id)
        if known is None or known.sender != sender:
            return
        if isinstance(msg, wire.Cancel):
            known.scope.cancel()
            split = self.splits.get(msg.task_id)
            if split is not None:
                self._apply(split.coordinator, split.coordinator.cancel(time.time(), "cancelled by the issuer"))
        elif isinstance(msg, wire.RevealRequest):
            known.reveal.set()

    async def _serve_task(self, inc: Incoming, inline: bytes, verdict: Verdict, parts: int) -> None:
        ref = inc.ref
        try:
            with inc.scope:
                self._accept_later(inc)
                framed = inline if inline else await self._fetch(ref.input_cid, [inc.sender],
                                                                 self.worker.config.input_bytes_max)
                # a fetched block was checked against its cid on the way in; the framing is checked when unframed
                if inline and cid_of(inline) != ref.input_cid:
                    raise RemoteProtocolError(f"input of {ref.task_id} does not match {ref.input_cid}")
                if chunk_count(framed) != ref.chunk_count:
                    raise RemoteProtocolError(f"input of {ref.task_id} does not hold the {ref.chunk_count} chunks "
                                              "the offer names")
                if verdict is Verdict.SPLIT:
                    self._start_split(inc, framed, parts)
                    return  # answered by _finish_split
                tree, output, task_log = await self._execute(ref, framed, [inc.sender])
                if self.incoming.get(ref.task_id) is inc:
                    self.worker.release(ref.task_id)  # the slot is free; a reveal may still be awaited below
                await self._answer(inc, tree, output, task_log)
        except Exception as exc:  # a bad input, a vanished issuer, or a bug here: the issuer hears it at once
            if isinstance(exc, PangeaError):
                log.info("task.gave_up", task=ref.task_id, error=str(exc))
                why = f"gave up: {exc}"
            else:
                log.error("task.internal_error", task=ref.task_id, error=repr(exc),
                          trace=" | ".join(x.strip().replace("\n", " ") for x in traceback.format_exception(exc)[-3:]))
                why = f"internal error on this worker: {type(exc).__name__}"
            # contextlib.suppress: the issuer is gone; its deadline handles the task
            with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(PangeaError):
                await inc.reply(wire.Rejected(ref.task_id, why[:256]))
        finally:
            if ref.task_id not in self.splits and self.incoming.get(ref.task_id) is inc:
                del self.incoming[ref.task_id]
                self.worker.release(ref.task_id)
                due = self._unaccepted.get(ref.task_id)
                if due is not None and due[1] is inc:
                    del self._unaccepted[ref.task_id]

    def _accept_later(self, inc: Incoming) -> None:
        """TaskAccepted for ``inc`` if it is still unanswered ACCEPT_DELAY_S from now. A tiny task's result
        follows its offer within milliseconds: the issuer takes the result as the acceptance, and the frame
        (and its handling at both ends) is saved. One task sends the due ones, sleeping until the oldest is."""
        self._unaccepted[inc.ref.task_id] = (trio.current_time() + ACCEPT_DELAY_S, inc)
        if not self._accepting:
            self._accepting = True
            self._spawn(self._send_acceptances)

    async def _send_acceptances(self) -> None:
        try:
            while self._unaccepted:
                task_id, (due, inc) = next(iter(self._unaccepted.items()))
                wait = due - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                    continue
                del self._unaccepted[task_id]
                if self.incoming.get(task_id) is inc:
                    self._spawn(self._send_accepted, inc)
        finally:
            self._accepting = False

    async def _send_accepted(self, inc: Incoming) -> None:
        with contextlib.suppress(PangeaError):  # a broken stream: the task's answer will fail and say so
            await inc.reply(wire.Accepted(inc.ref.task_id))

    async def _answer(self, inc: Incoming, tree: bytes, output: bytes, task_log: bytes = b"") -> None:
        """Send the result (with the task's log); under commit-then-reveal, the commitment first and the result
        when asked."""
        ref = inc.ref
        nonce = b""
        if ref.commit_reveal:
            claim = commit_claim(ReceiptTree.decode(tree, self.verify).receipt, output)
            if claim is not None:
                digest, nonce = commit(ref.job_id, ref.task_id, claim, self.self_id, self.rng)
                await inc.reply(wire.Commitment(ref.task_id, digest))
                with trio.move_on_at(_trio_deadline(ref.deadline_s, REVEAL_WAIT_S_MAX)):
                    await inc.reveal.wait()
                if not inc.reveal.is_set():
                    raise TransportError(f"no reveal request within {REVEAL_WAIT_S_MAX:g} s")
        if len(output) <= wire.OUTPUT_INLINE_MAX:
            await inc.reply(wire.Result(ref.task_id, tree, output_inline=output, nonce=nonce, log=task_log))
        else:
            cid = self.blocks.put(output)
            await inc.reply(wire.Result(ref.task_id, tree, output_cid=cid, output_bytes=len(output), nonce=nonce,
                                        log=task_log))

    # --- splitting: a worker that delegates parts of a task ------------------------------------------------------

    def _start_split(self, inc: Incoming, framed: bytes, parts: int) -> None:
        ref = inc.ref
        pieces = split_task(ref, framed, parts, self.self_id)
        for part, data in pieces:
            self.blocks.put(data, cid=part.input_cid)
        coord = split_coordinator(
            self.self_id, [p for p, _ in pieces], trust=self.trust, guard=self.guard, source=self.source,
            rng=random.Random(self.rng.getrandbits(64)), now=time.time(), inflight=self.inflight,
            reachability=self.reachability,
        )
        split = SplitRun(ref, coord)
        self.splits[ref.task_id] = split
        self._split_by_coord[coord] = split
        self._running[coord] = None
        for part, _ in pieces:
            self.owner[part.task_id] = coord
        log.info("task.split", task=ref.task_id, parts=len(pieces))
        self._apply(coord, coord.start(time.time()))

    async def _finish_split(self, split: SplitRun, eff: JobFinished) -> None:
        ref = split.ref
        inc = self.incoming.get(ref.task_id)
        self.splits.pop(ref.task_id, None)
        self.worker.release(ref.task_id)
        try:
            if inc is None:
                return
            if eff.state is not JobState.DONE:
                await inc.reply(wire.Rejected(ref.task_id, f"could not finish its parts: {eff.reason}"[:256]))
                return
            outputs = [self.blocks.get(e.output_cid) for e in split.coordinator.tasks.values()]
            tree, merged = delegation(self.peer.identity, ref, split.coordinator, outputs, self.verify,
                                      now=time.time(), rng=self.rng)
            parts = self.task_logs.of_tasks(split.coordinator.tasks)  # the parts' logs go up with the merge
            task_log = b"".join(f"[part {t}]\n".encode() + p.log for t, p in parts.items())
            inc.scope = trio.CancelScope()  # the first one ended with _serve_task; a Cancel now cancels this
            with inc.scope:
                await self._answer(inc, tree, merged, task_log)
        except PangeaError as exc:
            log.warning("task.split_answer_failed", task=ref.task_id, error=str(exc))
            if inc is not None:  # say so: the issuer retries elsewhere at once
                with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(PangeaError):
                    await inc.reply(wire.Rejected(ref.task_id, f"gave up: {exc}"[:256]))
        finally:
            self.incoming.pop(ref.task_id, None)


def _sandbox_limits(ref: TaskRef) -> SandboxLimits:
    lim = ref.limits
    return SandboxLimits(fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max, wall_time_s=lim.wall_time_s,
                         output_bytes_max=lim.output_bytes_max)


def _trio_deadline(deadline_s: float, wait_max_s: float) -> float:
    left = wait_max_s if math.isinf(deadline_s) else min(wait_max_s, deadline_s - time.time())
    return trio.current_time() + max(0.0, left)


