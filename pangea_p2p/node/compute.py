"""The compute service of a peer: the trio executor of its ``ComputeBehaviour`` (pangea_p2p.core.jobs.behaviour).

Everything that decides is in the behaviour; this module carries out its actions with the means it is given
(node/ports.py: a stream opener, the sandbox, the block store and the block network, the candidate workers, a
clock, the journal), so it runs alike over libp2p (node/peer.py builds the ports) and over trio memory streams
(tests/node):

- streams of ``/pangea/compute/1.0.0`` (node/protocols/compute.py): one long-lived stream to each worker this
  peer gives tasks to (a *session*: offers, cancels and reveal requests out, answers in), and the streams
  issuers open to this peer (each a *channel*: offers in, answers out on the same stream);
- requests: block fetches (the block store, then the peers named, then providers) and sandbox runs, each
  correlated by its request number and cancelled by ``Abort``;
- the block store (blocks kept with ``persist`` go to disk in a worker thread, batched), the job journal, the
  announcement of the modules its jobs run, logs;
- time: a ticker wakes the behaviour at its next deadline (``now`` is the clock's; sleeping is trio's).
"""

from __future__ import annotations

import math
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.admission import AdmissionControl
from pangea_p2p.core.jobs.behaviour import ComputeBehaviour, JobRun
from pangea_p2p.core.jobs.context import BehaviourConfig, ComputeContext
from pangea_p2p.core.jobs.events import (
    Abort,
    Action,
    CancelJob,
    Event,
    Execute,
    Executed,
    ExecutionFailed,
    Fetch,
    Fetched,
    FetchFailed,
    FromIssuer,
    FromWorker,
    IssuerLost,
    JobEnded,
    JobSubmitted,
    Log,
    Malformed,
    PeerGone,
    ProofReceived,
    Provide,
    PublishProof,
    Purpose,
    Reply,
    SendFailed,
    SendToWorker,
    SubmitJob,
    TaskUpdated,
    Tick,
    WorkerLost,
)
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskState
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.task_logs import TaskLogs
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.errors import PangeaError
from pangea_p2p.logs import get_logger
from pangea_p2p.node.blocks import WriteBehind
from pangea_p2p.node.config import FaultsConfig
from pangea_p2p.node.journal import FLUSH_AFTER_S, TaskRecord
from pangea_p2p.node.ports import ComputePorts, DuplexStream
from pangea_p2p.node.protocols.compute import CLOSED, MessageStream
from pangea_p2p.sandbox import ChunksResult, SandboxLimits

MODULE_BYTES_MAX = 64 << 20
ISSUER_MESSAGES = (codec.Offer, codec.Cancel, codec.RevealRequest)  # what goes from an issuer to a worker
log = get_logger("compute")


@dataclass
class JobWatch:
    """What the API waits on for a job submitted here: an event per change, and one when it ends."""

    done: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)
    version: int = 0  # bumped on every change (the API's long poll waits for it to move)
    started_s: dict[str, float] = field(default_factory=dict)  # task id -> when it first went out (the timeline)
    ended_s: dict[str, float] = field(default_factory=dict)  # task id -> when it first ended

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = trio.Event()


@dataclass
class SandboxUsage:
    """What this peer's sandbox runs used since it started (/metrics)."""

    runs: dict[str, int] = field(default_factory=dict)  # by result: "ok" or the failure kind
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    fuel: int = 0

    def add(self, result: ChunksResult) -> None:
        report = result.report
        outcome = "ok" if result.failure is None else result.failure.kind.name.lower()
        self.runs[outcome] = self.runs.get(outcome, 0) + 1
        self.wall_time_s += report.wall_time_s
        self.cpu_time_s += report.cpu_time_s
        self.fuel += report.fuel_used


class ComputeService:
    def __init__(self, ports: ComputePorts, config: BehaviourConfig, nursery: trio.Nursery, *,
                 trust: TrustBook | None = None, faults: FaultsConfig | None = None) -> None:
        self.ports = ports
        self.sandbox = ports.sandbox
        self.blocks = ports.blocks
        self.journal = ports.journal
        self.clock = ports.clock
        self.nursery = nursery
        self.behaviour = ComputeBehaviour(ComputeContext(
            ports.identity, WriteBehind(ports.blocks), self._views, random.SystemRandom(), config,
            trust=trust if trust is not None else TrustBook(),
        ))
        self.trust: TrustBook = self.behaviour.trust
        self.verify = config.coordinator.verify  # the receipt rules this peer checks by
        self.byzantine = (faults or FaultsConfig()).byzantine
        self.usage = SandboxUsage()
        self._watches: dict[str, JobWatch] = {}
        self.sessions: dict[str, MessageStream] = {}  # worker -> our stream to it
        self._channels: dict[int, MessageStream] = {}  # the streams issuers opened to us, by channel number
        self._next_channel = 0
        self._scopes: dict[int, trio.CancelScope] = {}  # request -> its fetch or run
        self._provided: set[str] = set()  # module CIDs announced (or being announced)
        self._fetching: dict[str, trio.Event] = {}  # cid -> set when the one fetch of it under way ends
        self._writing = False  # a task writes the blocks stored with persist
        self._flushing = False  # a task flushes the journal soon
        self._wake = trio.Event()

    @property
    def self_id(self) -> str:
        return self.behaviour.self_id

    @property
    def jobs(self) -> Mapping[str, JobRun]:
        """The jobs submitted here (read-only views)."""
        return self.behaviour.jobs

    def watch(self, job_id: str) -> JobWatch:
        """Events to wait on for the job ``job_id`` (KeyError if it was not submitted here)."""
        return self._watches[job_id]

    @property
    def task_logs(self) -> TaskLogs:
        """What the tasks of this peer's jobs printed, as their workers said (``pangea job logs``)."""
        return self.behaviour.task_logs

    @property
    def admission(self) -> AdmissionControl:
        """The admission service (its free slots go into this peer's capacity advert)."""
        return self.behaviour.admission

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` in the service's nursery. A bug it hits (anything but cancellation) is logged with its
        traceback and the peer keeps running: a task left without an answer times out at its issuer."""

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                log.error("compute.task_crashed", task=getattr(fn, "__name__", repr(fn)), error=repr(exc),
                          trace=_trace(exc))

        self.nursery.start_soon(guarded)

    # --- driving the behaviour ---------------------------------------------------------------------------------

    def _handle(self, event: Event, now: float | None = None) -> None:
        self._do(self.behaviour.handle(self.clock() if now is None else now, event))

    def _do(self, actions: list[Action], *, wake: bool = True) -> None:
        for act in actions:
            kind = type(act)
            if kind is SendToWorker:
                self._spawn(self._send_to_worker, act)
            elif kind is Reply:
                self._spawn(self._reply, act)
            elif kind is Execute:
                self._start(act.request, self._execute, act)  # type: ignore[union-attr]
            elif kind is Fetch:
                self._start(act.request, self._fetch_request, act)  # type: ignore[union-attr]
            elif kind is Abort:
                scope = self._scopes.pop(act.request, None)  # type: ignore[union-attr]
                if scope is not None:
                    scope.cancel()
            elif kind is TaskUpdated:
                self._task_updated(act)  # type: ignore[arg-type]
            elif kind is JobEnded:
                self._job_ended(act)  # type: ignore[arg-type]
            elif kind is JobSubmitted:
                if self.journal is not None:
                    self.journal.job_submitted(act.spec, act.created_s)  # type: ignore[union-attr]
            elif kind is Provide:
                if act.cid not in self._provided:  # type: ignore[union-attr]
                    self._provided.add(act.cid)  # type: ignore[union-attr]
                    self._spawn(self._provide, act.cid)  # type: ignore[union-attr]
            elif kind is PublishProof:
                if self.ports.publish_proof is not None:
                    self._spawn(self._publish_proof, act.data)  # type: ignore[union-attr]
            elif kind is Log:
                getattr(log, act.level)(act.event, **dict(act.fields))  # type: ignore[union-attr]
            # SplitStarted: logged (a Log comes with it)
        if self.blocks.unwritten and not self._writing:
            self._writing = True
            self._spawn(self._write_blocks)
        if wake:
            self._wake.set()

    async def ticker(self) -> None:
        """Tick the behaviour at its next deadline (an event that moves the deadline wakes this task)."""
        while True:
            deadline = self.behaviour.next_deadline()
            wait = math.inf if deadline is None else deadline - self.clock()
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            self._do(self.behaviour.handle(self.clock(), Tick()), wake=False)

    # --- jobs submitted here -----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, *, restored: Mapping[str, TaskRecord] | None = None, now: float | None = None,
               created_s: float | None = None) -> JobRun:
        now = self.clock() if now is None else now
        actions = self.behaviour.handle(now, SubmitJob(spec, restored or {}, created_s))
        self._watches[spec.job_id] = JobWatch()
        self._do(actions)
        return self.behaviour.jobs[spec.job_id]

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
        self._handle(CancelJob(job_id))

    def on_peer_gone(self, peer_id: str) -> None:
        self._handle(PeerGone(peer_id))

    def on_proof(self, sender: str, data: bytes) -> None:
        """``sender`` published a fraud proof (its gossipsub author; the topic validator calls this)."""
        self._handle(ProofReceived(sender, data))

    async def _publish_proof(self, data: bytes) -> None:
        assert self.ports.publish_proof is not None
        try:
            await self.ports.publish_proof(data)
        except Exception as exc:  # gossipsub refused or is shutting down: the proof is not passed on
            log.warning("fraud_proof.publish_failed", error=repr(exc)[:200])

    def _task_updated(self, act: TaskUpdated) -> None:
        watch = self._watches.get(act.job_id)
        if watch is None:
            return  # a part of a task this peer split
        eff = act.update
        if eff.state is TaskState.RUNNING:
            watch.started_s.setdefault(eff.task_id, self.clock())
        elif eff.state.final:
            watch.ended_s.setdefault(eff.task_id, self.clock())
        if eff.state.final and self.journal is not None:
            self.journal.task_finished(act.job_id, eff)
            if not self._flushing:  # the first row of a batch: it is written within FLUSH_AFTER_S
                self._flushing = True
                self._spawn(self._flush_journal)
        watch.bump()

    async def _flush_journal(self) -> None:
        try:
            await trio.sleep(FLUSH_AFTER_S)
        finally:
            self._flushing = False
        if self.journal is not None:
            self.journal.flush()

    def _job_ended(self, act: JobEnded) -> None:
        watch = self._watches.get(act.job_id)
        log.info("job.finished", job=act.job_id, state=str(act.state), reason=act.reason)
        if self.journal is not None:
            self.journal.job_finished(act.job_id, act.state, act.reason, self.clock())
        if watch is not None:
            watch.done.set()
            watch.bump()

    async def _provide(self, cid: str) -> None:
        """Announce ``cid`` once; a failed announcement is tried again at the next job with this module."""
        if not await self.ports.network.provide(cid):
            self._provided.discard(cid)

    def _views(self, now: float) -> list[WorkerView]:
        """The candidate workers: every advert in the directory but ours, with our trust and what we have out."""
        out = []
        trust, workers, inflight = self.behaviour.trust, self.ports.workers, self.behaviour.inflight
        for advert in workers.adverts(now):
            if advert.peer_id == self.self_id:
                continue
            peer = advert.peer_id
            out.append(WorkerView.from_advert(advert, trust.score(peer, now), workers.rtt_s(peer),
                                              inflight.get(peer, 0), workers.link(peer),
                                              workers.circuit_age_s(peer, now)))
        return out

    # --- blocks and the journal -----------------------------------------------------------------------------

    def close(self) -> None:
        """Write the blocks still waiting for the disk, close the store and the journal (at shutdown, after the
        nursery). A full disk loses the blocks, not the journal."""
        try:
            self.blocks.close()
        except OSError as exc:
            log.error("blocks.close_failed", error=str(exc))
        finally:
            if self.journal is not None:
                self.journal.close()

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

    async def _fetch(self, cid: str, peers: tuple[str, ...], size_max: int) -> bytes:
        """``cid`` from the block store, else from the network (``peers``, then providers); stored here. One
        fetch of a block at a time: the tasks that need a block another task is fetching (the module every task
        of a job shares) wait for that fetch, and try themselves only if it failed."""
        under_way = self._fetching.get(cid)
        if under_way is not None:
            await under_way.wait()
        data = self.blocks.get(cid)
        if data is not None:
            if len(data) > size_max:
                raise PangeaError(f"block {cid} is {len(data)} bytes, above the {size_max} allowed here")
            return data
        done = self._fetching[cid] = trio.Event()
        try:
            data = await self.ports.network.fetch(cid, peers, size_max)
            self.blocks.put(data, cid=cid)
        finally:
            done.set()
            if self._fetching.get(cid) is done:
                del self._fetching[cid]
        return data

    # --- requests: fetches and sandbox runs -------------------------------------------------------------------

    def _start(self, request: int, fn: Callable[[Any], Awaitable[Event]], act: Any) -> None:
        scope = self._scopes[request] = trio.CancelScope()

        async def run() -> None:
            event: Event | None = None
            try:
                with scope:
                    try:
                        event = await fn(act)
                    except PangeaError as exc:
                        event = (FetchFailed if isinstance(act, Fetch) else ExecutionFailed)(request, str(exc))
                    except Exception as exc:  # a bug here: the task is answered, the peer keeps running
                        log.error("task.internal_error", request=request, error=repr(exc), trace=_trace(exc))
                        why = f"internal error on this worker: {type(exc).__name__}"
                        event = (FetchFailed if isinstance(act, Fetch) else ExecutionFailed)(request, why)
            finally:
                if self._scopes.get(request) is scope:
                    del self._scopes[request]
            if event is not None and not scope.cancelled_caught:
                self._handle(event)

        self.nursery.start_soon(run)

    async def _fetch_request(self, act: Fetch) -> Event:
        return Fetched(act.request, await self._fetch(act.cid, act.peers, act.size_max))

    async def _execute(self, act: Execute) -> Event:
        ref = act.task
        module = await self._fetch(ref.module_cid, act.module_from, MODULE_BYTES_MAX)
        lim = ref.limits
        limits = SandboxLimits(fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max,
                               wall_time_s=lim.wall_time_s, output_bytes_max=lim.output_bytes_max)
        result = await self.sandbox.run_chunks(ref.module_cid, module, act.chunks, limits)
        self.usage.add(result)
        if result.failure is not None:
            return Executed(act.request, None, result.failure.kind, result.report.fuel_used, result.log)
        outputs = list(result.outputs or ())
        if self.byzantine == "wrong_output" and outputs and act.purpose in (Purpose.SERVE, Purpose.LOCAL):
            outputs[0] = bytes(b ^ 0x5A for b in outputs[0]) or b"\x00"
        return Executed(act.request, outputs, None, result.report.fuel_used, result.log)

    # --- issuer side: sessions with workers ----------------------------------------------------------------------

    async def _session(self, worker: str) -> MessageStream:
        session = self.sessions.get(worker)
        if session is not None:
            return session
        stream = await self.ports.streams.open(worker)
        session = self.sessions.get(worker)
        if session is not None:  # another task opened one meanwhile
            await stream.close()
            return session
        session = self.sessions[worker] = MessageStream(worker, stream)
        self._spawn(self._read_session, session)
        return session

    async def _send_to_worker(self, act: SendToWorker) -> None:
        msg = act.message
        if not act.dial:
            session = self.sessions.get(act.worker)
            if session is None:
                return
            try:
                await session.send(msg)
            except PangeaError as exc:
                log.debug("compute.send_failed", worker=act.worker, error=str(exc))
            return
        try:
            session = await self._session(act.worker)
            await session.send(msg)
        except PangeaError as exc:
            self._handle(SendFailed(act.worker, msg.task_id if not isinstance(msg, codec.Offer) else msg.ref.task_id,
                                    str(exc)))

    async def _read_session(self, session: MessageStream) -> None:
        worker = session.peer

        def on_message(msg: codec.Message) -> None:
            if isinstance(msg, ISSUER_MESSAGES):
                self._handle(Malformed(worker, f"a {type(msg).__name__} on a stream this peer opened"))
            else:
                self._handle(FromWorker(worker, msg))

        reason = CLOSED
        try:
            reason = await session.receive(on_message, lambda problem: self._handle(Malformed(worker, problem)))
        finally:
            if self.sessions.get(worker) is session:
                del self.sessions[worker]
            self._handle(WorkerLost(worker, reason))
            await session.close()

    # --- worker side: streams issuers opened to us ------------------------------------------------------------

    async def serve(self, stream: DuplexStream, issuer: str) -> None:
        """``issuer`` opened a compute stream to us: serve its offers until it closes."""
        self._next_channel += 1
        channel = self._next_channel
        self._channels[channel] = incoming = MessageStream(issuer, stream)  # answers back to back: one write

        def on_message(msg: codec.Message) -> None:
            if isinstance(msg, ISSUER_MESSAGES):
                self._handle(FromIssuer(issuer, channel, msg))
            else:
                log.debug("compute.unexpected_message", sender=issuer, kind=type(msg).__name__)

        try:
            reason = await incoming.receive(on_message, lambda problem: self._handle(Malformed(issuer, problem)))
            if reason != CLOSED:
                log.debug("compute.issuer_stream_ended", sender=issuer, error=reason)
        finally:
            del self._channels[channel]
            self._handle(IssuerLost(issuer, channel))  # its tasks are not wanted any more
            await incoming.close()

    async def _reply(self, act: Reply) -> None:
        channel = self._channels.get(act.channel)
        if channel is None:
            return  # the stream is gone (IssuerLost dropped its tasks)
        try:
            await channel.send(act.message)
        except PangeaError as exc:  # the stream broke: its reader ends and the behaviour hears of it
            log.debug("compute.reply_failed", issuer=act.issuer, error=str(exc))


def _trace(exc: BaseException) -> str:
    return " | ".join(x.strip().replace("\n", " ") for x in traceback.format_exception(exc)[-3:])
