"""A simulated peer: the node's compute service (pangea_p2p/node/compute.py) on a virtual clock.

It holds the same core objects as the trio node — an ``AdvertPublisher``, a ``CapacityDirectory`` (only peers
that place work keep one: submitters and, when enabled, splitters), a ``TrustBook``, a ``ReplayGuard``, a
``WorkerService`` and one ``Coordinator`` per job or split task — and drives them the way ``ComputeService``
does: each effect becomes a real encoded compute message (``wire.encode``) sent over the simulated network,
each received message is decoded (``wire.decode``) and fed back as the coordinator's or the worker's event.
Receipts are real ed25519 receipts (``issue_receipt``, ``delegate``), commitments real commitments.

What is modelled instead of run: the sandbox. A task's output chunk is ``sha256(module cid || input chunk)``
and its fuel a deterministic function of the same; it takes ``fuel / speed`` seconds of virtual time on
``slots`` parallel executors. What differs from the node on purpose: each coordinator is woken exactly at its
``next_deadline`` (the node polls at least every second), and at 10,000 peers the scheduler is offered a sample
of ``candidates_max`` listed workers per decision (plus every worker that has our tasks), not all of them.

Byzantine roles (``role``): ``wrong`` (a random wrong output, validly signed), ``collude`` and ``sybil`` (the
same wrong output as every other member; sybils also lie in adverts), ``copy`` (no work: answers what a
Byzantine peer computed for the same input, or guesses), ``liar`` (inflated capacity adverts, one in four
absurd), ``withhold`` (accepts, never answers), ``forge`` (forged signature, a receipt replayed from another
task, or a receipt signed with a key that is not its own).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pangea_p2p.core.capacity import AdvertPublisher, AdvertRejected, CapacityDirectory, LocalCapacity
from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
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
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskRef
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.worker import (
    Verdict,
    WorkerConfig,
    WorkerService,
    commit_claim,
    delegation,
    split_coordinator,
    split_task,
)
from pangea_p2p.core.trust import Outcome, PeerRecord, TrustBook
from pangea_p2p.core.verify.chain import ReceiptTree
from pangea_p2p.core.verify.commit_reveal import commit
from pangea_p2p.core.verify.receipts import ReceiptLimits, ReplayGuard, issue_receipt
from pangea_p2p.errors import FailureKind, PangeaError, RemoteProtocolError

if TYPE_CHECKING:
    from pangea_p2p.sim.world import Simulation

VERIFY_CONFIG = CoordinatorConfig().verify
_MISSING = WorkerView("", 1.0, 0, 0, 0, 0, 0.0)
DIAL_TIMEOUT_S = 5.0
COLLUDE_TAG = b"pangea-sim-collude"
ROLES = ("honest", "wrong", "collude", "copy", "liar", "withhold", "forge", "sybil")
WRONG_OUTPUT_ROLES = frozenset({"wrong", "collude", "sybil"})


def honest_chunk(module_cid: str, chunk: bytes) -> tuple[bytes, int]:
    """The modelled guest: (output chunk, fuel) of running ``module_cid`` over ``chunk`` — deterministic."""
    out = hashlib.sha256(module_cid.encode() + chunk).digest()
    return out, 1 + out[0] * 256 + out[1]  # 1..65536 units, scaled by the job's fuel per unit


@dataclass
class JobRun:
    spec: JobSpec
    coordinator: Coordinator
    created_s: float


@dataclass
class SplitRun:
    ref: TaskRef
    coordinator: Coordinator  # its tasks are the parts, in order


@dataclass
class Incoming:
    """A task another peer gave us (``sender`` is its index)."""

    ref: TaskRef
    sender: int
    framed: bytes = b""
    running: bool = False
    done: bool = False
    reveal: tuple[bytes, bytes, bytes] | None = None  # (tree, output, nonce) waiting for the reveal request


@dataclass
class PeerStats:
    executed_fuel: int = 0  # fuel burnt running tasks (useful or not)
    results_sent: int = 0
    wrong_sent: int = 0
    copies_sent: int = 0
    withheld: int = 0
    forged_sent: int = 0
    rejected_offers: int = 0
    advert_rejections: int = 0


class CountingTrustBook(TrustBook):
    """The core TrustBook, plus a counter of updates (the simulator caches worker views between updates)."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def record(self, peer: str, outcome: Outcome, now: float) -> PeerRecord:
        self.version += 1
        return super().record(peer, outcome, now)


class SimPeer:
    """One simulated peer (see the module docstring)."""

    def __init__(
        self, sim: Simulation, idx: int, identity: Identity, role: str, speed: float, slots: int, *,
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
        self.trust = CountingTrustBook()
        self.guard = ReplayGuard(VERIFY_CONFIG)
        self.last_receipt: tuple[bytes, bytes] | None = None  # (tree, output) of the last task: what forge replays
        self.issuers: set[int] = set()  # peers with a stream open to us (they hear when we crash)
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        """Everything a crash loses (the key, trust book and replay guard are kept on disk)."""
        cfg = WorkerConfig(slots=self.slots, queue_max=2 * self.slots, speed_fuel_per_s=self.speed,
                           limits_max=ReceiptLimits(10**13, 256 << 20, 600.0, 16 << 20))
        self.worker = WorkerService(self.peer_id, cfg)
        self.inflight: dict[str, int] = {}
        self.reachability = Reachability()
        self.jobs: dict[str, JobRun] = {}
        self.splits: dict[str, SplitRun] = {}
        self.owner: dict[str, Coordinator] = {}
        self.sessions: dict[int, set[str]] = {}  # worker index -> task ids out with it (our open streams)
        self.incoming: dict[str, Incoming] = {}
        self.queue: deque[str] = deque()
        self.executing = 0
        self.timers: dict[int, float] = {}  # id(coordinator) -> when its timer fires
        self.source = WorkerSource(self._views, self._local_view)
        self._sample_at = -1.0
        self._sample: list[str] = []
        self._sample_set: set[str] = set()
        self._view_key: tuple[float, int, int] = (-1.0, -1, -1)
        self._view_cache: dict[str, WorkerView | None] = {}

    # --- adverts -------------------------------------------------------------------------------------------

    def capacity(self) -> LocalCapacity:
        lim = self.worker.config.limits_max
        speed, slots = self.speed, self.slots
        if self.role in ("liar", "sybil"):
            speed, slots = min(speed * 100.0, 1e12), 64
            if self.role == "liar" and self.rng.random() < 0.25:
                speed = 1e15  # absurd: every directory must reject it
        return LocalCapacity(
            cores=slots, memory_free_bytes=8 << 30, task_slots_total=slots,
            task_slots_free=min(slots, self.worker.free_slots()) if self.role == "honest" else slots,
            speed_fuel_per_s=speed, fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max,
            wall_time_s_max=lim.wall_time_s, software_version="pangea-sim",
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

    # --- worker views for the scheduler (ComputeService._views / _local_view) -------------------------------

    def _views(self, now: float) -> list[WorkerView]:
        """The candidates for the scheduler: a sample of ``candidates_max`` listed workers (drawn anew at each
        instant) plus every worker that has our tasks, as ``ComputeService._views`` builds them. Views are cached
        within one instant until the trust book or the directory changes; the outstanding count is always fresh."""
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
        cache, inflight = self._view_cache, self.inflight
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
                view = None if advert is None else WorkerView.from_advert(
                    advert, self.trust.score(pid, now), self.sim.rtt_s(self.idx, pid), n_out)
                cache[pid] = view
            if view is not None:
                out.append(view)
        return out

    def _local_view(self, now: float) -> WorkerView | None:
        view = self.worker.local_view()
        busy = view.outstanding + self.inflight.get(self.peer_id, 0)
        return WorkerView(view.peer_id, view.speed_fuel_per_s, view.slots_total, view.slots_total, view.fuel_max,
                          view.memory_bytes_max, view.wall_time_s_max, 0.0, 0.0, busy)

    # --- jobs submitted here (ComputeService.submit) -----------------------------------------------------------

    def submit(self, spec: JobSpec, inputs: list[bytes]) -> JobRun:
        now = self.sim.loop.now
        tasks = []
        for i in range(spec.task_count):
            framed = frame_chunks([inputs[c] for c in spec.task_chunks(i)])
            input_cid = self.sim.put(framed)
            tasks.append(TaskRef(
                job_id=spec.job_id, task_id=f"{spec.job_id}/t{i}", parent_task_id="", module_cid=spec.module_cid,
                input_cid=input_cid, input_bytes=len(framed), chunk_count=len(spec.task_chunks(i)),
                limits=spec.limits, issuer=self.peer_id, depth=0, depth_max=spec.depth_max, path=(self.peer_id,),
                partition_index=i, partition_count=spec.task_count, deadline_s=spec.deadline_s,
                fuel_per_chunk_estimate=spec.fuel_per_chunk_estimate,
            ))
        coord = Coordinator(
            self.peer_id, tasks, spec.verification, retries_max=spec.retries_max,
            escalations_max=spec.escalations_max, escalation_factor=spec.escalation_factor,
            queue_timeout_s=spec.queue_timeout_s, trust=self.trust, guard=self.guard, source=self.source,
            rng=random.Random(self.rng.getrandbits(64)), now=now, inflight=self.inflight,
            reachability=self.reachability,
        )
        run = JobRun(spec, coord, now)
        self.jobs[spec.job_id] = run
        for ref in tasks:
            self.owner[ref.task_id] = coord
        self.sim.loop.trace(f"submit {self.idx} {spec.job_id} tasks={len(tasks)}")
        self._apply(coord, coord.start(now))
        return run

    # --- effects (ComputeService._apply) ---------------------------------------------------------------------

    def _apply(self, coord: Coordinator, effects: list[Effect]) -> None:
        sim = self.sim
        for eff in effects:
            if isinstance(eff, Dispatch):
                self.owner[eff.task.task_id] = coord
                self._dispatch(coord, eff)
            elif isinstance(eff, RunLocal):
                sim.loop.after(0.0, self._run_local, (coord, eff.task))
            elif isinstance(eff, RequestReveal):
                self._send_to(eff.worker, wire.RevealRequest(eff.task_id))
            elif isinstance(eff, CancelAttempt):
                self._send_to(eff.worker, wire.Cancel(eff.task_id))
                w = sim.index.get(eff.worker)
                if w is not None and w in self.sessions:
                    self.sessions[w].discard(eff.task_id)
            elif isinstance(eff, SpotCheck):
                sim.loop.after(0.0, self._spot_check, (coord, eff))
            elif isinstance(eff, TaskUpdate):
                sim.on_task_update(self, coord, eff)
            elif isinstance(eff, JobFinished):
                self._job_finished(coord, eff)
        self._arm(coord)

    def _arm(self, coord: Coordinator) -> None:
        """Wake ``coord`` at its next deadline (one timer per coordinator, the earliest wins)."""
        if coord.state is not JobState.RUNNING:
            return
        now = self.sim.loop.now
        d = coord.next_deadline(now)
        if d is None:
            return
        key = id(coord)
        if d < self.timers.get(key, math.inf):
            self.timers[key] = d
            self.sim.loop.at(d, self._on_timer, coord)

    def _on_timer(self, coord: Coordinator) -> None:
        key = id(coord)
        if not self.up or self.timers.get(key) != self.sim.loop.now:
            return  # superseded by an earlier timer, or the peer crashed
        del self.timers[key]
        self._apply(coord, coord.tick(self.sim.loop.now))

    def _job_finished(self, coord: Coordinator, eff: JobFinished) -> None:
        run = next((r for r in self.jobs.values() if r.coordinator is coord), None)
        if run is not None:
            self.sim.on_job_finished(self, run, eff)
            return
        split = next((s for s in self.splits.values() if s.coordinator is coord), None)
        if split is not None:
            self._finish_split(split, eff)

    # --- issuer side -------------------------------------------------------------------------------------------

    def _dispatch(self, coord: Coordinator, eff: Dispatch) -> None:
        sim, ref = self.sim, eff.task
        w = sim.index[eff.worker]
        if w not in self.sessions:
            if not sim.reachable(self.idx, w):  # the dial fails after its timeout
                sim.loop.after(DIAL_TIMEOUT_S, self._transport_error, (ref.task_id, eff.worker, "dial timed out"))
                return
            self.sessions[w] = set()
            sim.peers[w].issuers.add(self.idx)
        inline = sim.content.get(ref.input_cid, b"") if ref.input_bytes <= wire.INPUT_INLINE_MAX else b""
        self.sessions[w].add(ref.task_id)
        sim.send(self.idx, w, wire.Offer(ref, inline))

    def _transport_error(self, arg: tuple[str, str, str]) -> None:
        task_id, worker, reason = arg
        coord = self.owner.get(task_id)
        if coord is not None and self.up:
            self._apply(coord, coord.on_transport_error(task_id, worker, reason, self.sim.loop.now))

    def _send_to(self, worker: str, msg: wire.Message) -> None:
        w = self.sim.index.get(worker)
        if w is not None and w in self.sessions:
            self.sim.send(self.idx, w, msg)

    def session_broken(self, w: int, reason: str) -> None:
        """Our stream to worker ``w`` broke (it crashed or left): every task out with it fails over."""
        tasks = self.sessions.pop(w, None)
        if not tasks or not self.up:
            return
        worker, now = self.sim.peers[w].peer_id, self.sim.loop.now
        for task_id in sorted(tasks):
            coord = self.owner.get(task_id)
            if coord is not None:
                self._apply(coord, coord.on_transport_error(task_id, worker, reason, now))

    def on_worker_message(self, w: int, msg: wire.Message) -> None:
        if isinstance(msg, wire.Offer):
            return
        coord = self.owner.get(msg.task_id)
        if coord is None:
            return
        worker, now = self.sim.peers[w].peer_id, self.sim.loop.now
        tasks = self.sessions.get(w)
        if isinstance(msg, wire.Accepted):
            self._apply(coord, coord.on_accepted(msg.task_id, worker, now))
        elif isinstance(msg, wire.Rejected):
            if tasks is not None:
                tasks.discard(msg.task_id)
            self._apply(coord, coord.on_rejected(msg.task_id, worker, msg.reason, now))
        elif isinstance(msg, wire.Commitment):
            self._apply(coord, coord.on_commitment(msg.task_id, worker, msg.digest, now))
        elif isinstance(msg, wire.Result):
            if tasks is not None:
                tasks.discard(msg.task_id)
            if msg.output_inline:
                self.sim.put(msg.output_inline)
            self._apply(coord, coord.on_result(msg.task_id, worker, msg.receipt_tree, msg.output_inline, now,
                                               msg.nonce))

    # --- running here (local runs and spot checks) ----------------------------------------------------------------

    def _run_local(self, arg: tuple[Coordinator, TaskRef]) -> None:
        coord, ref = arg
        framed = self.sim.content[ref.input_cid]
        outputs, fuel = self._compute(ref, unframe_chunks(framed))
        self.sim.loop.after(self._duration(fuel), self._local_done, (coord, ref, outputs, fuel))

    def _local_done(self, arg: tuple[Coordinator, TaskRef, list[bytes], int]) -> None:
        coord, ref, outputs, fuel = arg
        if not self.up:
            return
        self.stats.executed_fuel += fuel
        tree, output = self._receipt(ref, outputs, fuel)
        self.sim.put(output)
        self._apply(coord, coord.on_result(ref.task_id, self.peer_id, tree, output, self.sim.loop.now))

    def _spot_check(self, arg: tuple[Coordinator, SpotCheck]) -> None:
        coord, eff = arg
        chunks = unframe_chunks(self.sim.content[eff.task.input_cid])
        outputs, fuel = self._compute(eff.task, [chunks[eff.chunk_index]])
        self.sim.loop.after(self._duration(fuel), self._spot_done, (coord, eff, outputs[0] if outputs else None, fuel))

    def _spot_done(self, arg: tuple[Coordinator, SpotCheck, bytes | None, int]) -> None:
        coord, eff, chunk, fuel = arg
        if not self.up:
            return
        self.stats.executed_fuel += fuel
        self._apply(coord, coord.on_spot_result(eff.task.task_id, eff.chunk_index, chunk, self.sim.loop.now))

    def _compute(self, ref: TaskRef, chunks: list[bytes]) -> tuple[list[bytes], int]:
        """The modelled sandbox: honest outputs and fuel; [] if the fuel budget runs out (OUT_OF_FUEL)."""
        scale = self.sim.config.fuel_unit
        outputs, fuel = [], 0
        for chunk in chunks:
            out, units = honest_chunk(ref.module_cid, chunk)
            outputs.append(out)
            fuel += units * scale
        if fuel > ref.limits.fuel_max:
            return [], ref.limits.fuel_max
        return outputs, fuel

    def _duration(self, fuel: int) -> float:
        return fuel / self.speed * self.slow_factor + 0.001

    def _receipt(self, ref: TaskRef, outputs: list[bytes], fuel: int) -> tuple[bytes, bytes]:
        """Sign the result (or the OUT_OF_FUEL failure) as this peer: (encoded tree, framed output)."""
        binding = ref.binding()
        now = self.sim.loop.now
        if not outputs:
            receipt = issue_receipt(self.identity, binding, failure=FailureKind.OUT_OF_FUEL, fuel_used=fuel, now=now,
                                    rng=self.rng)
            return ReceiptTree(receipt, ()).encode(), b""
        output = frame_chunks(outputs)
        receipt = issue_receipt(self.identity, binding, output=output, fuel_used=fuel, now=now, rng=self.rng)
        return ReceiptTree(receipt, ()).encode(), output

    # --- worker side (ComputeService._on_issuer_message / _serve_task / _answer) -------------------------------

    def on_issuer_message(self, s: int, msg: wire.Message) -> None:
        sim = self.sim
        if isinstance(msg, wire.Offer):
            ref = msg.ref
            sender = sim.peers[s].peer_id
            admission = self.worker.admit(ref, sender, self._views(sim.loop.now), sim.loop.now)
            if admission.verdict is Verdict.REJECT:
                self.stats.rejected_offers += 1
                sim.send(self.idx, s, wire.Rejected(ref.task_id, admission.reason))
                return
            inc = Incoming(ref, s)
            self.incoming[ref.task_id] = inc
            sim.send(self.idx, s, wire.Accepted(ref.task_id))
            framed = msg.input_inline or sim.content.get(ref.input_cid, b"")
            if cid_of(framed) != ref.input_cid:
                self._give_up(inc, f"input of {ref.task_id} does not match {ref.input_cid}")
                return
            inc.framed = framed
            if admission.verdict is Verdict.SPLIT:
                self._start_split(inc, framed, admission.parts)
                return
            if self.role == "withhold":
                self.stats.withheld += 1
                return  # holds the slot and never answers
            if self.role == "copy":
                sim.loop.after(0.05, self._copy_answer, ref.task_id)
                return
            self.queue.append(ref.task_id)
            self._start_next()
            return
        known = self.incoming.get(msg.task_id)
        if known is None or known.sender != s:
            return
        if isinstance(msg, wire.Cancel):
            self._drop(known)
            split = self.splits.get(msg.task_id)
            if split is not None:
                self._apply(split.coordinator, split.coordinator.cancel(sim.loop.now, "cancelled by the issuer"))
        elif isinstance(msg, wire.RevealRequest) and known.reveal is not None:
            tree, output, nonce = known.reveal
            self._send_result(known, tree, output, nonce)

    def _drop(self, inc: Incoming) -> None:
        inc.done = True
        self.incoming.pop(inc.ref.task_id, None)
        self.worker.release(inc.ref.task_id)

    def _give_up(self, inc: Incoming, why: str) -> None:
        self.sim.send(self.idx, inc.sender, wire.Rejected(inc.ref.task_id, f"gave up: {why}"[:256]))
        self._drop(inc)

    def _start_next(self) -> None:
        while self.queue and self.executing < self.slots:
            inc = self.incoming.get(self.queue.popleft())
            if inc is None or inc.done:
                continue
            outputs, fuel = self._compute(inc.ref, unframe_chunks(inc.framed))
            inc.running = True
            self.executing += 1
            self.sim.loop.after(self._duration(fuel), self._exec_done, (inc, outputs, fuel))

    def _exec_done(self, arg: tuple[Incoming, list[bytes], int]) -> None:
        inc, outputs, fuel = arg
        if not self.up or inc.running is False:
            return  # lost in a crash
        inc.running = False
        self.executing -= 1
        self.stats.executed_fuel += fuel
        if not inc.done:
            self._finish_task(inc, outputs, fuel)
        self._start_next()

    def _finish_task(self, inc: Incoming, outputs: list[bytes], fuel: int) -> None:
        ref = inc.ref
        if outputs and self.role in WRONG_OUTPUT_ROLES:
            outputs = list(outputs)
            if self.role == "wrong":
                outputs[0] = self.rng.randbytes(32)
            else:
                outputs[0] = hashlib.sha256(COLLUDE_TAG + outputs[0]).digest()
            self.stats.wrong_sent += 1
        if outputs and self.role in WRONG_OUTPUT_ROLES | {"copy"}:
            self.sim.board[(ref.module_cid, ref.input_cid)] = (outputs, fuel)
        tree, output = self._receipt(ref, outputs, fuel)
        if self.role == "forge":
            tree, output = self._forge(ref, tree, output)
        else:
            self.last_receipt = (tree, output)
        self.worker.release(ref.task_id)
        self._answer(inc, tree, output)

    def _copy_answer(self, task_id: str) -> None:
        inc = self.incoming.get(task_id)
        if inc is None or inc.done or not self.up:
            return
        ref = inc.ref
        board = self.sim.board.get((ref.module_cid, ref.input_cid))
        if board is not None:
            outputs, fuel = board
        else:  # nothing to copy: guess
            outputs = [self.rng.randbytes(32) for _ in range(ref.chunk_count)]
            fuel = min(ref.limits.fuel_max, ref.chunk_count * 32768 * self.sim.config.fuel_unit)
        self.stats.copies_sent += 1
        tree, output = self._receipt(ref, list(outputs), fuel)
        self.worker.release(ref.task_id)
        self._answer(inc, tree, output)

    def _forge(self, ref: TaskRef, tree: bytes, output: bytes) -> tuple[bytes, bytes]:
        """A receipt that must not verify: a flipped signature, a replayed one, or another peer's key."""
        self.stats.forged_sent += 1
        kind = self.rng.randrange(3)
        if kind == 1 and self.last_receipt is not None:
            return self.last_receipt
        if kind == 2 and output:
            other = Identity(hashlib.sha256(b"forger" + self.identity.seed).digest())
            receipt = issue_receipt(other, ref.binding(), output=output,
                                    fuel_used=ReceiptTree.decode(tree, VERIFY_CONFIG).receipt.fuel_used,
                                    now=self.sim.loop.now, rng=self.rng)
            forged = replace(receipt, worker=self.peer_id, public_key=other.public_key)
            object.__setattr__(forged, "signature", receipt.signature)
            return ReceiptTree(forged, ()).encode(), output
        raw = bytearray(tree)
        raw[-1] ^= 0x01  # the signature is the receipt's last 64 bytes
        return bytes(raw), output

    def _answer(self, inc: Incoming, tree: bytes, output: bytes) -> None:
        ref = inc.ref
        nonce = b""
        if ref.commit_reveal:
            try:
                claim = commit_claim(ReceiptTree.decode(tree, VERIFY_CONFIG).receipt, output)
            except PangeaError:
                claim = None  # a forger's garbled tree: nothing to commit to
            if claim is not None:
                digest, nonce = commit(ref.job_id, ref.task_id, claim, self.peer_id, self.rng)
                inc.reveal = (tree, output, nonce)
                self.sim.send(self.idx, inc.sender, wire.Commitment(ref.task_id, digest))
                return
        self._send_result(inc, tree, output, nonce)

    def _send_result(self, inc: Incoming, tree: bytes, output: bytes, nonce: bytes) -> None:
        ref = inc.ref
        self.stats.results_sent += 1
        self.sim.send(self.idx, inc.sender, wire.Result(ref.task_id, tree, output_inline=output, nonce=nonce))
        self.incoming.pop(ref.task_id, None)
        inc.done = True

    # --- splitting (ComputeService._start_split / _finish_split) ---------------------------------------------------

    def _start_split(self, inc: Incoming, framed: bytes, parts: int) -> None:
        ref, now = inc.ref, self.sim.loop.now
        pieces = split_task(ref, framed, parts, self.peer_id)
        for _, data in pieces:
            self.sim.put(data)
        coord = split_coordinator(
            self.peer_id, [p for p, _ in pieces], trust=self.trust, guard=self.guard, source=self.source,
            rng=random.Random(self.rng.getrandbits(64)), now=now, inflight=self.inflight,
            reachability=self.reachability,
        )
        self.splits[ref.task_id] = SplitRun(ref, coord)
        for part, _ in pieces:
            self.owner[part.task_id] = coord
        self.sim.loop.trace(f"split {self.idx} {ref.task_id} parts={len(pieces)}")
        self.sim.splits += 1
        self._apply(coord, coord.start(now))

    def _finish_split(self, split: SplitRun, eff: JobFinished) -> None:
        ref = split.ref
        inc = self.incoming.get(ref.task_id)
        self.splits.pop(ref.task_id, None)
        self.worker.release(ref.task_id)
        if inc is None or inc.done:
            return
        if eff.state is not JobState.DONE:
            self._give_up(inc, f"could not finish its parts: {eff.reason}")
            return
        outputs = [self.sim.content.get(e.output_cid) for e in split.coordinator.tasks.values()]
        tree, merged = delegation(self.identity, ref, split.coordinator, outputs, VERIFY_CONFIG, now=self.sim.loop.now,
                                  rng=self.rng)
        self._answer(inc, tree, merged)

    # --- churn ---------------------------------------------------------------------------------------------------

    def crash(self) -> list[int]:
        """Lose every volatile thing; returns the issuers whose streams to us broke."""
        self.up = False
        issuers = sorted({inc.sender for inc in self.incoming.values()} | self.issuers)
        self._reset_volatile()
        self.issuers = set()
        return issuers

    def decode_message(self, data: bytes) -> wire.Message | None:
        try:
            return wire.decode(data)
        except RemoteProtocolError:
            return None

    def bad_message(self, sender: str) -> None:
        self.trust.record(sender, Outcome.INVALID, self.sim.loop.now)
