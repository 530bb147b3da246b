"""A simulated peer: the peer's own ``ComputeBehaviour`` on a virtual clock, over a modelled network and sandbox.

It holds the core objects the trio node holds — an ``AdvertPublisher``, a ``CapacityDirectory`` (only peers
that place work keep one: submitters and, when enabled, splitters), a ``TrustBook``, a ``ReplayGuard`` and the
``ComputeBehaviour`` that decides everything about the compute protocol — and executes the behaviour's actions
the way the node does: a message to another peer is encoded (``codec.encode``), crosses the simulated network,
is decoded at the other end and handed to that peer's behaviour. Receipts are real ed25519 receipts,
commitments real commitments.

What is modelled instead of run: the sandbox (sandbox.py, where the Byzantine roles live too) and the network
(network.py; blocks live in the simulation's content store, which every peer reads, so ``Fetch`` is never
needed). At 10,000 peers the scheduler is offered a sample of ``candidates_max`` listed workers per decision
(plus every worker that has our tasks), not all of them. ``liar`` and ``sybil`` peers inflate their capacity
adverts here (one in four of a liar's absurd).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from pangea_p2p.core.capacity import AdvertPublisher, AdvertRejected, CapacityDirectory, LocalCapacity
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.behaviour import ComputeBehaviour, JobRun
from pangea_p2p.core.jobs.context import BehaviourConfig, ComputeContext
from pangea_p2p.core.jobs.effects import TaskUpdate
from pangea_p2p.core.jobs.events import (
    Abort,
    Action,
    Event,
    Execute,
    FromIssuer,
    FromWorker,
    IssuerLost,
    JobEnded,
    JobSubmitted,
    Malformed,
    PeerGone,
    ProofReceived,
    PublishProof,
    Reply,
    SendFailed,
    SendToWorker,
    SplitStarted,
    SubmitJob,
    TaskUpdated,
    Tick,
    WorkerLost,
)
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskState
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.nat import Link
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import RemoteProtocolError
from pangea_p2p.sim.host import World
from pangea_p2p.sim.sandbox import ROLES, VERIFY_CONFIG, ModelledSandbox, PeerStats

_MISSING = WorkerView("", 1.0, 0, 0, 0, 0, 0.0)
DIAL_TIMEOUT_S = 5.0


class SimBlocks:
    """The simulation's content store as a peer's block store (modules are modelled: every peer has them)."""

    __slots__ = ("content", "modules")

    def __init__(self, content: dict[str, bytes], modules: set[str]) -> None:
        self.content = content
        self.modules = modules

    def get(self, cid: str) -> bytes | None:
        return self.content.get(cid)

    def has(self, cid: str) -> bool:
        return cid in self.content or cid in self.modules

    def put(self, data: bytes, *, persist: bool = False, cid: str | None = None) -> str:
        cid = cid or cid_of(data)
        self.content[cid] = data
        return cid


@dataclass
class Journaled:
    """A job as the submitter's journal keeps it (it survives a crash): what ``SubmitJob`` resumes from."""

    spec: JobSpec
    created_s: float
    state: JobState = JobState.RUNNING
    tasks: dict[str, TaskUpdate] = field(default_factory=dict)  # the final update of each finished task


class SimPeer:
    """One simulated peer (see the module docstring)."""

    def __init__(
        self, sim: World, idx: int, identity: Identity, role: str, speed: float, slots: int, *,
        directory: CapacityDirectory | None, rng: random.Random, slow_factor: float = 1.0,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        self.sim = sim
        self.idx = idx
        self.identity = identity
        self.peer_id = identity.peer_id
        self.role = role
        self.speed = speed  # what it advertises (honestly measured, unless it lies)
        self.slow_factor = slow_factor  # >1: runs slower than measured (a slow peer)
        self.slots = slots
        self.rng = rng
        self.directory = directory
        self.up = False
        self.stats = PeerStats()
        self.listed: list[str] = []  # peers ever listed in the directory, for sampling candidates
        self._listed_set: set[str] = set()
        self.publisher = AdvertPublisher(identity, interval_s=30.0, ttl_s=90.0, gap_s_min=0.5)
        self.trust = TrustBook()  # worker views are cached until its version moves
        self.guard = ReplayGuard(VERIFY_CONFIG)
        self.issuers: set[int] = set()  # peers with a stream open to us (they hear when we crash)
        self.journal: dict[str, Journaled] = {}  # the jobs it submitted, on its disk
        self.incarnation = 0
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        """Everything a crash loses (the key, trust book and replay guard are kept on disk)."""
        self.incarnation += 1
        cfg = AdmissionConfig(slots=self.slots, queue_max=2 * self.slots, speed_fuel_per_s=self.speed,
                           limits_max=ReceiptLimits(10**13, 256 << 20, 600.0, 16 << 20))
        self.sandbox = ModelledSandbox(self, self.sim.loop, self.sim.board, self.sim.config.fuel_unit, self._handle,
                                       lies=self.sim.lies, lie_q=self.sim.config.lie_q)
        self.behaviour = ComputeBehaviour(ComputeContext(
            self.identity, SimBlocks(self.sim.content, self.sim.modules), self._views, self.rng,
            BehaviourConfig(worker=cfg), trust=self.trust, guard=self.guard, reachability=Reachability(),
            forge=self.sandbox.forge if self.role == "forge" else None,
        ))
        self.sessions: set[int] = set()  # workers we have a stream open to
        self._wake_at = math.inf  # when the behaviour is woken next
        self._sample_at = -1.0
        self._sample: list[str] = []
        self._sample_set: set[str] = set()
        self._view_key: tuple[float, int, int] = (-1.0, -1, -1)
        self._view_cache: dict[str, WorkerView | None] = {}

    @property
    def jobs(self) -> dict[str, JobRun]:
        return self.behaviour.jobs

    def stats_dict(self) -> dict[str, int]:
        """The peer's worker statistics, with what its behaviour counted."""
        out = asdict(self.stats)
        out["results_sent"] += self.behaviour.counters["results_sent"]
        out["rejected_offers"] += self.behaviour.counters["offers_rejected"]
        return out

    # --- adverts -------------------------------------------------------------------------------------------

    def capacity(self) -> LocalCapacity:
        admission = self.behaviour.admission
        lim = admission.config.limits_max
        speed, slots = self.speed, self.slots
        if self.role in ("liar", "sybil"):
            speed, slots = min(speed * 100.0, 1e12), 64
            if self.role == "liar" and self.rng.random() < 0.25:
                speed = 1e15  # absurd: every directory must reject it
        return LocalCapacity(
            cores=slots, memory_free_bytes=8 << 30, task_slots_total=slots,
            task_slots_free=min(slots, admission.free_slots()) if self.role == "honest" else slots,
            speed_fuel_per_s=speed, fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max,
            wall_time_s_max=lim.wall_time_s, software_version="pangea-sim", **self.sim.nat_fields(self.idx),
        )

    def publish(self, _: object = None) -> None:
        if not self.up:
            return
        now = self.sim.loop.now
        data = self.publisher.make(now, self.capacity(), network_size=self.sim.config.peers)
        self.sim.gossip(self.idx, data)
        nxt = self.publisher.next_deadline()
        if nxt is not None:
            self.sim.loop.at(nxt, self.publish)

    def maintain(self, incarnation: int | None = None) -> None:
        """Drop the adverts that expired and tell the behaviour those peers are gone (the node's maintenance
        task does the same); again at the next expiry."""
        if self.directory is None or not self.up or incarnation not in (None, self.incarnation):
            return
        now = self.sim.loop.now
        for peer in self.directory.expire(now):
            self.stats.adverts_expired += 1
            self._handle(PeerGone(peer))
        nxt = self.directory.next_deadline()
        self.sim.loop.at(max(now + 1.0, nxt if nxt is not None else now + 30.0), self.maintain, self.incarnation)

    def on_advert(self, data: bytes, source: str) -> None:
        if self.directory is None or not self.up:
            return
        try:
            advert = self.directory.offer(data, now=self.sim.loop.now, source=source)
        except AdvertRejected:
            self.stats.advert_rejections += 1
            return
        if advert.peer_id not in self._listed_set and advert.peer_id != self.peer_id:
            self._listed_set.add(advert.peer_id)
            self.listed.append(advert.peer_id)

    def on_proof(self, data: bytes, source: str) -> None:
        if self.up:
            self._handle(ProofReceived(source, data))

    # --- worker views for the scheduler ----------------------------------------------------------------------

    def _views(self, now: float) -> list[WorkerView]:
        """The candidates for the scheduler: a sample of ``candidates_max`` listed workers (drawn anew at each
        instant) plus every worker that has our tasks, as the node builds them from its directory. Views are
        cached within one instant until the trust book or the directory changes; the outstanding count is always
        fresh."""
        directory = self.directory
        if directory is None:
            return []
        k = self.sim.config.candidates_max
        if now != self._sample_at:
            self._sample_at = now
            self._sample = list(self.listed) if len(self.listed) <= k else self.rng.sample(self.listed, k)
            self._sample_set = set(self._sample)
        key = (now, self.trust.version, directory.accepted_total)
        if key != self._view_key:
            self._view_key = key
            self._view_cache = {}
        cache, inflight = self._view_cache, self.behaviour.inflight
        ids = self._sample
        if inflight:
            chosen = self._sample_set
            extra = [p for p in inflight if p not in chosen and p != self.peer_id]
            if extra:
                ids = ids + extra
        out = []
        for pid in ids:
            view = cache.get(pid, _MISSING)
            n_out = inflight.get(pid, 0)
            if view is _MISSING or (view is not None and view.outstanding != n_out):
                advert = directory.get(pid, now)
                age = self.sim.circuit_age_s(self.idx, self.sim.index[pid], now)
                view = None if advert is None else WorkerView.from_advert(
                    advert, self.trust.score(pid, now), self.sim.rtt_s(self.idx, pid), n_out,
                    None if age is None else Link.RELAYED, age)
                cache[pid] = view
            if view is not None:
                out.append(view)
        return out

    # --- events into the behaviour, actions out of it ----------------------------------------------------------

    def submit(self, spec: JobSpec) -> None:
        self.sim.loop.trace(f"submit {self.idx} {spec.job_id} tasks={spec.task_count}")
        self._handle(SubmitJob(spec))

    def on_issuer_message(self, s: int, msg: codec.Offer | codec.Cancel | codec.RevealRequest) -> None:
        self._handle(FromIssuer(self.sim.peer_id(s), 0, msg))

    def on_worker_message(self, w: int, msg: codec.Accepted | codec.Rejected | codec.Commitment | codec.Result
                          ) -> None:
        self._handle(FromWorker(self.sim.peer_id(w), msg))

    def on_malformed(self, sender: str, problem: str) -> None:
        self._handle(Malformed(sender, problem))

    def session_broken(self, w: int, reason: str) -> None:
        """Our stream to worker ``w`` broke (it crashed or left): every task out with it fails over."""
        if w not in self.sessions:
            return
        self.sessions.discard(w)
        if self.up:
            self._handle(WorkerLost(self.sim.peer_id(w), reason))

    def _handle(self, event: Event) -> None:
        self._do(self.behaviour.handle(self.sim.loop.now, event))
        deadline = self.behaviour.next_deadline()
        if deadline is not None and deadline < self._wake_at:
            self._wake_at = deadline
            self.sim.loop.at(deadline, self._on_wake, self.incarnation)

    def _do(self, actions: list[Action]) -> None:
        sim = self.sim
        for act in actions:
            kind = type(act)
            if kind is SendToWorker:
                self._send_to_worker(act)  # type: ignore[arg-type]
            elif kind is Reply:
                sim.send(self.idx, sim.index[act.issuer], act.message)  # type: ignore[union-attr]
            elif kind is Execute:
                self.sandbox.execute(act)  # type: ignore[arg-type]
            elif kind is TaskUpdated:
                if act.job_id and act.update.state.final:  # type: ignore[union-attr]
                    self.journal[act.job_id].tasks[act.update.task_id] = act.update  # type: ignore[union-attr]
                sim.on_task_update(self.idx, act)  # type: ignore[arg-type]
            elif kind is JobEnded:
                self.journal[act.job_id].state = act.state  # type: ignore[union-attr]
                sim.on_job_finished(self.idx, self.jobs[act.job_id], act.state, act.reason)  # type: ignore[union-attr]
            elif kind is JobSubmitted:
                self.journal[act.spec.job_id] = Journaled(act.spec, act.created_s)  # type: ignore[union-attr]
            elif kind is Abort:
                self.sandbox.abort(act.request)  # type: ignore[union-attr]
            elif kind is PublishProof:
                sim.gossip_proof(self.idx, act.data)  # type: ignore[union-attr]
            elif kind is SplitStarted:
                sim.loop.trace(f"split {self.idx} {act.task_id} parts={act.parts}")  # type: ignore[union-attr]
                sim.splits += 1
            # Fetch never happens (every block is in the content store); Provide and Log are the node's business
            # (the DHT, the log)

    def _send_to_worker(self, act: SendToWorker) -> None:
        sim = self.sim
        w = sim.index[act.worker]
        if act.dial:
            if w not in self.sessions:
                if not sim.dialable(self.idx, w):  # the dial fails after its timeout
                    msg = act.message
                    assert isinstance(msg, codec.Offer)
                    sim.loop.after(DIAL_TIMEOUT_S, self._transport_error,
                                   (msg.ref.task_id, act.worker, "dial timed out", self.incarnation))
                    return
                self.sessions.add(w)
                sim.opened_stream(self.idx, w)
            sim.send(self.idx, w, act.message)
        elif w in self.sessions:
            sim.send(self.idx, w, act.message)

    def _transport_error(self, arg: tuple[str, str, str, int]) -> None:
        task_id, worker, reason, incarnation = arg
        if self.up and incarnation == self.incarnation:
            self._handle(SendFailed(worker, task_id, reason))

    def _on_wake(self, incarnation: int) -> None:
        if not self.up or incarnation != self.incarnation or self._wake_at != self.sim.loop.now:
            return  # the peer crashed, or an earlier wake-up superseded this one
        self._wake_at = math.inf
        self._handle(Tick())

    # --- churn ---------------------------------------------------------------------------------------------------

    def crash(self) -> tuple[list[int], list[int]]:
        """Lose every volatile thing; returns the issuers whose streams to us broke and the workers whose streams
        from us did."""
        self.up = False
        served = {self.sim.index[p] for p in self.behaviour.issuers()}
        issuers = sorted(served | self.issuers)
        workers = sorted(self.sessions)
        for key, value in self.behaviour.counters.items():  # what it counted survives in the stats
            if key == "results_sent":
                self.stats.results_sent += value
            elif key == "offers_rejected":
                self.stats.rejected_offers += value
        self._reset_volatile()
        self.issuers = set()
        return issuers, workers

    def resume(self) -> list[JobRun]:
        """After a restart: take up the journaled jobs that had not ended (as the node's resume_journal does)."""
        resumed = []
        for job in list(self.journal.values()):
            if job.state is JobState.RUNNING:
                self.stats.jobs_resumed += 1
                self.stats.tasks_restored += sum(1 for t in job.tasks.values() if t.state is TaskState.DONE)
                self._handle(SubmitJob(job.spec, dict(job.tasks), job.created_s))
                resumed.append(self.jobs[job.spec.job_id])
        return resumed

    def issuer_lost(self, s: int) -> None:
        """Issuer ``s``'s stream to us closed (it crashed): its tasks are not wanted any more."""
        self.issuers.discard(s)
        if self.up:
            self._handle(IssuerLost(self.sim.peer_id(s), 0))

    @staticmethod
    def decode_message(data: bytes) -> codec.Message | str:
        """The message, or what is wrong with it."""
        try:
            return codec.decode(data)
        except RemoteProtocolError as exc:
            return str(exc)
