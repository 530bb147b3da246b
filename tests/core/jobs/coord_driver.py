"""A fake network that plays the workers of a sans-IO ``Coordinator``, for synchronous tests.

Workers have real ed25519 identities and answer with real signed receipts (``issue_receipt`` / ``delegate``)
over real framed outputs, so the coordinator's verification runs for real. An honest worker's output chunk is
``sha256(input chunk)`` and it uses ``FUEL_PER_CHUNK`` fuel per chunk.

The ``Driver`` applies the coordinator's effects: a ``Dispatch`` makes the worker's answers (by its
behaviour) and puts them in an inbox; ``RequestReveal`` releases a held reveal; ``RunSpotCheck`` re-runs a chunk
honestly; ``RunLocal`` runs the task as the submitter. ``run()`` delivers the inbox in order (or a test picks
messages with ``deliver``), ``tick`` advances the clock. Every effect is kept in ``log`` and every dispatch in
``offers``; ``check_invariants`` asserts what must hold after any step.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.coordinator import Coordinator, CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.effects import (
    CancelAttempt,
    Dispatch,
    Effect,
    JobFinished,
    RequestReveal,
    RunLocal,
    RunSpotCheck,
    TaskUpdate,
)
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationPolicy
from pangea_p2p.core.jobs.outputs import merge_outputs
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.splitting import split_task
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.commit_reveal import commit
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.voting import Claim
from pangea_p2p.errors import FailureKind

FUEL_PER_CHUNK = 1000
LIMITS = ReceiptLimits(fuel_max=1_000_000, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
MODULE_CID = cid_of(b"the module")
T0 = 1_000.0


@functools.cache
def ident(name: str) -> Identity:
    """A deterministic ed25519 identity per name."""
    return Identity(hashlib.sha256(b"pangea-test/" + name.encode()).digest())


def pid(name: str) -> str:
    return ident(name).peer_id


SUBMITTER = "submitter"


def honest(chunk: bytes) -> bytes:
    return hashlib.sha256(chunk).digest()


def evil(chunk: bytes) -> bytes:
    return hashlib.sha256(b"evil" + chunk).digest()


def chunks_for(n_tasks: int, per_task: int = 1) -> list[list[bytes]]:
    return [[f"task {t} chunk {c}".encode() for c in range(per_task)] for t in range(n_tasks)]


def make_tasks(
    inputs: list[list[bytes]], *, job_id: str = "job", limits: ReceiptLimits = LIMITS, issuer: str | None = None,
    depth_max: int = 2, deadline_s: float = math.inf,
) -> list[TaskRef]:
    issuer = issuer or pid(SUBMITTER)
    out = []
    for i, chunks in enumerate(inputs):
        framed = frame_chunks(chunks)
        out.append(TaskRef(
            job_id=job_id, task_id=f"{job_id}/t{i}", parent_task_id="", module_cid=MODULE_CID,
            input_cid=cid_of(framed), input_bytes=len(framed), chunk_count=len(chunks), limits=limits,
            issuer=issuer, depth=0, depth_max=depth_max, path=(issuer,), partition_index=i,
            partition_count=len(inputs), deadline_s=deadline_s,
        ))
    return out


# --- receipts ---------------------------------------------------------------------------------------------


def binding_of(ref: TaskRef) -> TaskBinding:
    return TaskBinding.of(
        job_id=ref.job_id, task_id=ref.task_id, parent_task_id=ref.parent_task_id, module_cid=ref.module_cid,
        input_cid=ref.input_cid, limits=ref.limits, issuer=ref.issuer, chunk_count=ref.chunk_count,
    )


def signed_result(
    signer: Identity, ref: TaskRef, inputs: list[bytes], now: float, rng: random.Random,
    fn: Callable[[bytes], bytes] = honest, fuel: int | None = None,
) -> tuple[bytes, bytes]:
    """(encoded receipt tree, framed output) of a run of ``ref`` signed by ``signer``."""
    output = frame_chunks([fn(c) for c in inputs])
    fuel = FUEL_PER_CHUNK * len(inputs) if fuel is None else fuel
    receipt = issue_receipt(signer, binding_of(ref), fuel_used=fuel, now=now, rng=rng, output=output)
    return ReceiptTree(receipt).encode(), output


def signed_failure(
    signer: Identity, ref: TaskRef, failure: FailureKind, now: float, rng: random.Random, fuel: int = 0
) -> bytes:
    receipt = issue_receipt(signer, binding_of(ref), fuel_used=fuel, now=now, rng=rng, failure=failure)
    return ReceiptTree(receipt).encode()


def delegated_result(
    delegator: Identity, ref: TaskRef, inputs: list[bytes], parts: list[Identity], now: float, rng: random.Random,
    fn: Callable[[bytes], bytes] = honest,
) -> tuple[ReceiptTree, bytes]:
    """``delegator`` splits ``ref`` into one part per identity in ``parts``, each runs its part (``fn``), and
    ``delegator`` signs the delegation receipt over them: (tree, merged framed output)."""
    pieces = split_task(ref, frame_chunks(inputs), len(parts), delegator.peer_id)
    children, outputs = [], []
    for (part, part_input), who in zip(pieces, parts, strict=True):
        tree, out = signed_result(who, part, unframe_chunks(part_input), now, rng, fn)
        children.append(ReceiptTree.decode(tree, VerifyConfig()))
        outputs.append(out)
    return delegate(delegator, binding_of(ref), children, now=now, rng=rng), merge_outputs(outputs)


def claim_of(tree: bytes, output: bytes) -> Claim:
    root = ReceiptTree.decode(tree, VerifyConfig()).receipt
    return Claim(hashlib.sha256(output).digest(), root.fuel_used)


# --- the fake network -------------------------------------------------------------------------------------

BEHAVIOURS = (
    "honest",  # accept, then the right output with a valid receipt
    "byzantine",  # accept, then a wrong output with a valid receipt over it
    "silent",  # accept, then never answer
    "mute",  # never answer at all, not even the offer
    "reject",  # decline the offer
    "unreachable",  # the stream cannot be opened
    "crash",  # accept, then a signed WORKER_CRASHED failure
    "impostor",  # the right output, but the receipt is signed by another peer
    "tamper",  # a valid receipt, but one output chunk altered on the way
    "delegate",  # split into parts run by ``helpers`` and return the delegation tree
    "fuel_hungry",  # needs ``fuel_needed`` fuel per chunk: OUT_OF_FUEL (signed) below that
    "no_commit",  # under commit-reveal, sends its result straight away without committing
    "early_reveal",  # under commit-reveal, commits and sends its result without waiting for RequestReveal
)


@dataclass
class FakeWorker:
    name: str
    behaviour: str = "honest"
    slots: int = 2
    speed: float = 1e9
    fuel_max: int = 10**12
    memory_max: int = 1 << 30
    wall_max: float = 300.0
    rtt_s: float = 0.001
    fuel_needed: int = FUEL_PER_CHUNK  # per chunk, for "fuel_hungry"
    helpers: tuple[str, ...] = ()  # for "delegate": who runs the parts
    online: bool = True  # advertised to the coordinator

    def __post_init__(self) -> None:
        assert self.behaviour in BEHAVIOURS, self.behaviour

    @property
    def peer_id(self) -> str:
        return pid(self.name)


@dataclass
class Msg:
    """An answer in flight to the coordinator."""

    kind: str  # accepted | rejected | transport_error | commitment | result | failure | spot
    task_id: str
    worker: str
    tree: bytes = b""
    output: bytes = b""
    nonce: bytes = b""
    digest: bytes = b""
    reason: str = ""
    chunk_index: int = 0
    chunk: bytes | None = None


@dataclass
class Driver:
    workers: list[FakeWorker]
    inputs: list[list[bytes]] = field(default_factory=lambda: chunks_for(1))
    policy: str | VerificationPolicy = "hash"
    now: float = T0
    seed: int = 1
    retries_max: int = 3
    escalations_max: int = 2
    escalation_factor: float = 4.0
    queue_timeout_s: float = 60.0
    limits: ReceiptLimits = LIMITS
    local: WorkerView | None = None
    local_allowed: bool = True
    local_behaviour: str = "honest"  # or "silent": RunLocal is never answered
    auto: bool = True  # deliver answers as soon as they are made
    drop_cancelled: bool = False  # a cancelled worker's answers still in flight are dropped
    spot_answer: Callable[[TaskRef, int, bytes], bytes | None] | None = None  # default: honest re-run
    trust: TrustBook = field(default_factory=TrustBook)
    config: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    deadline_s: float = math.inf

    def __post_init__(self) -> None:
        self.by_id: dict[str, FakeWorker] = {w.peer_id: w for w in self.workers}
        self.submitter = pid(SUBMITTER)
        self.refs = make_tasks(self.inputs, limits=self.limits, deadline_s=self.deadline_s)
        self.input_of = {ref.task_id: chunks for ref, chunks in zip(self.refs, self.inputs, strict=True)}
        self.guard = ReplayGuard(self.config.verify)
        self.wrng = random.Random(self.seed + 1_000_003)  # the workers' nonces
        policy = self.policy if isinstance(self.policy, VerificationPolicy) else VerificationPolicy.parse(self.policy)
        self.coord = Coordinator(
            self.submitter, self.refs, policy, retries_max=self.retries_max,
            escalations_max=self.escalations_max, escalation_factor=self.escalation_factor,
            queue_timeout_s=self.queue_timeout_s, trust=self.trust, guard=self.guard,
            source=WorkerSource(self._views, self._local), rng=random.Random(self.seed), now=self.now,
            config=self.config, local_allowed=self.local_allowed,
        )
        self.log: list[Effect] = []
        self.offers: list[tuple[float, Dispatch]] = []
        self.inbox: list[Msg] = []
        self.held: dict[tuple[str, str], Msg] = {}  # results waiting for RequestReveal
        self.cancelled: list[tuple[float, CancelAttempt]] = []
        self.delivered: list[Msg] = []

    # --- the worker source ----------------------------------------------------------------------------

    def _views(self, now: float) -> list[WorkerView]:
        return [
            WorkerView(w.peer_id, w.speed, w.slots, w.slots, w.fuel_max, w.memory_max, w.wall_max,
                       self.trust.score(w.peer_id, now), w.rtt_s, self.coord.inflight.get(w.peer_id, 0))
            for w in self.workers if w.online
        ]

    def _local(self, now: float) -> WorkerView | None:
        if self.local is None:
            return None
        return replace(self.local, outstanding=self.coord.inflight.get(self.submitter, 0))

    def add_worker(self, worker: FakeWorker) -> None:
        self.workers.append(worker)
        self.by_id[worker.peer_id] = worker

    # --- driving ----------------------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        return self._step(self.coord.start(self.now))

    def tick(self, now: float) -> list[Effect]:
        assert now >= self.now, "time never goes back"
        self.now = now
        return self._step(self.coord.tick(now))

    def at(self, now: float) -> Driver:
        assert now >= self.now
        self.now = now
        return self

    def _step(self, effects: list[Effect]) -> list[Effect]:
        out = list(effects)
        self.apply(effects)
        if self.auto:
            out.extend(self.run())
        return out

    def run(self, limit: int = 10_000) -> list[Effect]:
        """Deliver every message in the inbox, in order, and what their effects bring; the effects."""
        out: list[Effect] = []
        for _ in range(limit):
            if not self.inbox:
                return out
            out.extend(self.deliver(0))
        raise AssertionError("the inbox never drained")

    def deliver(self, index: int) -> list[Effect]:
        return self.send(self.inbox.pop(index))

    def take(self, kind: str, worker: str | None = None, task_id: str | None = None) -> Msg:
        """Remove (without delivering) the first message in the inbox of ``kind`` from ``worker`` (a name)."""
        for i, m in enumerate(self.inbox):
            if m.kind == kind and (worker is None or m.worker == pid(worker)) and task_id in (None, m.task_id):
                return self.inbox.pop(i)
        raise AssertionError(f"no {kind} from {worker} in the inbox: {[(m.kind, m.worker) for m in self.inbox]}")

    def commit_all(self, names: str | Iterable[str]) -> None:
        """Deliver each named worker's acceptance and commitment, in order (a ``str`` is one worker's name)."""
        for name in (names,) if isinstance(names, str) else names:
            self.send(self.take("accepted", name))
            self.send(self.take("commitment", name))

    def send(self, msg: Msg) -> list[Effect]:
        """Deliver ``msg`` to the coordinator now and apply the effects it returns."""
        self.delivered.append(msg)
        c, now = self.coord, self.now
        if msg.kind == "accepted":
            effects = c.on_accepted(msg.task_id, msg.worker, now)
        elif msg.kind == "rejected":
            effects = c.on_rejected(msg.task_id, msg.worker, msg.reason, now)
        elif msg.kind == "transport_error":
            effects = c.on_transport_error(msg.task_id, msg.worker, msg.reason, now)
        elif msg.kind == "commitment":
            effects = c.on_commitment(msg.task_id, msg.worker, msg.digest, now)
        elif msg.kind == "result":
            effects = c.on_result(msg.task_id, msg.worker, msg.tree, msg.output, now, msg.nonce)
        elif msg.kind == "failure":
            effects = c.on_failure(msg.task_id, msg.worker, msg.tree, now, msg.nonce)
        elif msg.kind == "spot":
            effects = c.on_spot_result(msg.task_id, msg.chunk_index, msg.chunk, now)
        else:  # pragma: no cover
            raise AssertionError(msg.kind)
        self.apply(effects)
        return effects

    def run_to_end(self, ticks_max: int = 1_000) -> None:
        """Deliver, then jump to the coordinator's next deadline, until the job ends (or nothing can move)."""
        for _ in range(ticks_max):
            self.run()
            if self.coord.state.final:
                return
            deadline = self.coord.next_deadline()
            if deadline is None:
                return
            self.tick(max(self.now, deadline))
        raise AssertionError(f"the job did not end within {ticks_max} ticks")

    # --- effects ------------------------------------------------------------------------------------------

    def apply(self, effects: list[Effect]) -> None:
        for eff in effects:
            self.log.append(eff)
            if isinstance(eff, Dispatch):
                self.offers.append((self.now, eff))
                self._offer(eff.task, self.by_id[eff.worker])
            elif isinstance(eff, RunLocal):
                self._run_local(eff.task)
            elif isinstance(eff, RequestReveal):
                held = self.held.pop((eff.task_id, eff.worker), None)
                if held is not None:
                    self.inbox.append(held)
            elif isinstance(eff, CancelAttempt):
                self.cancelled.append((self.now, eff))
                self.held.pop((eff.task_id, eff.worker), None)
                if self.drop_cancelled:
                    self.inbox = [m for m in self.inbox if (m.task_id, m.worker) != (eff.task_id, eff.worker)]
            elif isinstance(eff, RunSpotCheck):
                chunk = self.input_of[eff.task.task_id][eff.chunk_index]
                answer = self.spot_answer(eff.task, eff.chunk_index, chunk) if self.spot_answer else honest(chunk)
                self.inbox.append(Msg("spot", eff.task.task_id, self.submitter, chunk_index=eff.chunk_index,
                                      chunk=answer))
            else:
                assert isinstance(eff, TaskUpdate | JobFinished)

    def _run_local(self, ref: TaskRef) -> None:
        if self.local_behaviour == "silent":
            return
        tree, output = signed_result(ident(SUBMITTER), ref, self.input_of[ref.task_id], self.now, self.wrng)
        self.inbox.append(Msg("result", ref.task_id, self.submitter, tree, output))

    def _offer(self, ref: TaskRef, w: FakeWorker) -> None:
        tid, me, now, rng = ref.task_id, w.peer_id, self.now, self.wrng
        chunks = self.input_of[tid]
        b = w.behaviour
        if b == "mute":
            return
        if b == "reject":
            self.inbox.append(Msg("rejected", tid, me, reason="busy: 2 tasks admitted, 2 slots"))
            return
        if b == "unreachable":
            self.inbox.append(Msg("transport_error", tid, me, reason="connection refused"))
            return
        self.inbox.append(Msg("accepted", tid, me))
        if b == "silent":
            return
        if b == "crash":
            tree = signed_failure(ident(w.name), ref, FailureKind.WORKER_CRASHED, now, rng)
            self.inbox.append(Msg("failure", tid, me, tree))
            return
        if b == "fuel_hungry":
            needed = w.fuel_needed * len(chunks)
            if ref.limits.fuel_max < needed:
                tree = signed_failure(ident(w.name), ref, FailureKind.OUT_OF_FUEL, now, rng, ref.limits.fuel_max)
                self._answer(ref, w, Msg("failure", tid, me, tree), Claim(None, ref.limits.fuel_max,
                                                                         FailureKind.OUT_OF_FUEL))
                return
            tree, output = signed_result(ident(w.name), ref, chunks, now, rng, fuel=needed)
        elif b == "byzantine":
            tree, output = signed_result(ident(w.name), ref, chunks, now, rng, evil)
        elif b == "impostor":
            tree, output = signed_result(ident(w.name + "-impostor"), ref, chunks, now, rng)
        elif b == "tamper":
            tree, output = signed_result(ident(w.name), ref, chunks, now, rng)
            parts = unframe_chunks(output)
            parts[-1] = bytes([parts[-1][0] ^ 1]) + parts[-1][1:]
            output = frame_chunks(parts)
        elif b == "delegate":
            d_tree, output = delegated_result(ident(w.name), ref, chunks, [ident(h) for h in w.helpers], now, rng)
            tree = d_tree.encode()
        else:
            tree, output = signed_result(ident(w.name), ref, chunks, now, rng)
        self._answer(ref, w, Msg("result", tid, me, tree, output), claim_of(tree, output))

    def _answer(self, ref: TaskRef, w: FakeWorker, msg: Msg, claim: Claim) -> None:
        """Send ``msg`` now, or under commit-then-reveal its commitment now and ``msg`` when asked."""
        if not ref.commit_reveal or w.behaviour == "no_commit":
            self.inbox.append(msg)
            return
        digest, nonce = commit(ref.job_id, ref.task_id, claim, w.peer_id, self.wrng)
        msg.nonce = nonce
        self.inbox.append(Msg("commitment", ref.task_id, w.peer_id, digest=digest))
        if w.behaviour == "early_reveal":
            self.inbox.append(msg)
        else:
            self.held[(ref.task_id, w.peer_id)] = msg

    # --- what happened --------------------------------------------------------------------------------------

    def effects(self, kind: type) -> list[Effect]:
        return [e for e in self.log if isinstance(e, kind)]

    def dispatches(self, task_id: str | None = None) -> list[Dispatch]:
        return [d for _, d in self.offers if task_id is None or d.task.task_id == task_id]

    def dispatched_to(self, task_id: str | None = None) -> list[str]:
        return [d.worker for d in self.dispatches(task_id)]

    def finished(self) -> list[JobFinished]:
        return [e for e in self.log if isinstance(e, JobFinished)]

    def updates(self, task_id: str, state: TaskState | None = None) -> list[TaskUpdate]:
        return [e for e in self.log if isinstance(e, TaskUpdate) and e.task_id == task_id
                and (state is None or e.state is state)]

    def explain(self, task_id: str) -> str:
        return " | ".join(self.coord.explain().get(task_id, []))

    def check_invariants(self) -> None:
        """What must hold after any step, whatever the workers do."""
        c = self.coord
        per_worker: dict[str, int] = {}
        for e in c.tasks.values():
            assert len(e.attempts) <= max(1, e.replicas), (e.ref.task_id, e.attempts, e.replicas)
            if e.tally is not None:  # never more workers given the task than the tally asked for
                assert len(e.assigned) <= e.tally.dispatched, (e.ref.task_id, e.assigned, e.tally.dispatched)
                assert e.tally.dispatched <= self.config.verify.replicas_max
            for w, a in e.attempts.items():
                if a.counted:  # a committed replica only waits for its round: its slot is free
                    per_worker[w] = per_worker.get(w, 0) + 1
            assert e.state is not TaskState.DONE or not e.attempts
        assert per_worker == {w: n for w, n in c.inflight.items() if n}, (per_worker, c.inflight)
        for peer, n in per_worker.items():
            if peer in self.by_id:
                assert n <= self.by_id[peer].slots, f"{n} tasks out on {peer}, it has {self.by_id[peer].slots} slots"
        done: dict[str, int] = {}
        for u in self.effects(TaskUpdate):
            assert isinstance(u, TaskUpdate)
            if u.state is TaskState.DONE:
                done[u.task_id] = done.get(u.task_id, 0) + 1
        assert all(n == 1 for n in done.values()), done
        assert len(self.finished()) <= 1
        if self.finished():
            assert c.state is self.finished()[0].state
        if c.state is JobState.DONE:
            assert all(e.state is TaskState.DONE for e in c.tasks.values())
        if c.state is JobState.RUNNING:
            self.check_indexes()

    def check_indexes(self) -> None:
        """The coordinator's placement indexes agree with its tasks (see Cost in placement.py)."""
        self.coord.check()
