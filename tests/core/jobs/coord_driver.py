"""A fake network that plays the workers of a submitting peer, for synchronous tests of its job coordination.

The ``Driver`` drives the very object the node and the simulator drive: the submitter's ``ComputeBehaviour``
(a job is submitted to it with ``SubmitJob``; answers reach it as ``FromWorker`` events through the real
wire codec's messages; its own runs and spot checks are ``Execute`` actions the driver answers). Workers have
real ed25519 identities and answer with real signed receipts (``issue_receipt`` / ``delegate``) over real
framed outputs, so verification runs for real. An honest worker's output chunk is ``sha256(input chunk)`` and
it uses ``FUEL_PER_CHUNK`` fuel per chunk.

The behaviour's actions are recorded as the coordinator effects they carry out (``Dispatch`` for an offer,
``RequestReveal``, ``CancelAttempt``, ``RunLocal``, ``RunSpotCheck``, ``TaskUpdate``, ``JobFinished``), which
is what the tests assert on. An offer makes the worker's answers (by its behaviour) and puts them in an inbox;
a reveal request releases a held reveal; a spot check re-runs a chunk honestly; a local run runs the task as
the submitter. ``run()`` delivers the inbox in order (or a test picks messages with ``deliver``), ``tick``
advances the clock. ``check_invariants`` asserts what must hold after any step (the behaviour's own
``check()`` among it).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.behaviour import ComputeBehaviour, JobRun
from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.jobs.context import BehaviourConfig, ComputeContext
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
from pangea_p2p.core.jobs.events import (
    Action,
    CancelJob,
    Event,
    Execute,
    Executed,
    ExecutionFailed,
    FromWorker,
    JobEnded,
    LieProven,
    PeerGone,
    Purpose,
    SendFailed,
    SendToWorker,
    SubmitJob,
    TaskUpdated,
    Tick,
)
from pangea_p2p.core.jobs.model import JobSpec, TaskRef, TaskState, VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.outputs import merge_outputs
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.splitting import split_task
from pangea_p2p.core.jobs.tasks import TaskView
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.commit_reveal import commit
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree
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
    fuel_claim: float = 1.0  # an honest output signed with this many times the fuel it used (a fuel liar)
    online: bool = True  # advertised to the coordinator
    reject_reason: str = "busy: 2 tasks admitted, 2 slots"  # for "reject"

    def __post_init__(self) -> None:
        assert self.behaviour in BEHAVIOURS, self.behaviour

    @property
    def peer_id(self) -> str:
        return pid(self.name)


@dataclass
class Msg:
    """An answer in flight to the submitter: a worker's message, a failed offer, or this peer's own run."""

    kind: str  # accepted | rejected | transport_error | commitment | result | failure | spot | local
    task_id: str
    worker: str
    tree: bytes = b""
    output: bytes = b""
    nonce: bytes = b""
    digest: bytes = b""
    reason: str = ""
    chunk_index: int = 0
    chunk: bytes | None = None
    request: int = 0  # spot | local: the Execute it answers
    outputs: list[bytes] | None = None  # local: the run's output chunks


class _Blocks:
    """The submitter's block store: its job's chunks and module (and whatever the behaviour keeps)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, cid: str) -> bytes | None:
        return self.data.get(cid)

    def has(self, cid: str) -> bool:
        return cid == MODULE_CID or cid in self.data

    def put(self, data: bytes, *, persist: bool = False, cid: str | None = None) -> str:
        cid = cid or cid_of(data)
        self.data[cid] = data
        return cid


NOWHERE = ReceiptLimits(fuel_max=1, memory_bytes_max=1, wall_time_s=0.001, output_bytes_max=1)  # fits no task


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
    local: WorkerView | None = None  # what this peer can run itself (None: nothing)
    local_behaviour: str = "honest"  # or "silent": its own runs never end; "crash_once": the first one crashes;
    # "broken": they cannot start
    auto: bool = True  # deliver answers as soon as they are made
    drop_cancelled: bool = False  # a cancelled worker's answers still in flight are dropped
    spot_answer: Callable[[TaskRef, int, bytes], bytes | None] | None = None  # default: honest re-run
    trust: TrustBook = field(default_factory=TrustBook)
    config: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    deadline_s: float = math.inf
    restored: dict[str, TaskUpdate] = field(default_factory=dict)  # journaled tasks the job resumes with
    reachability: Reachability | None = None  # shared with another driver: the same peer's other job

    def __post_init__(self) -> None:
        self.by_id: dict[str, FakeWorker] = {w.peer_id: w for w in self.workers}
        self.submitter = pid(SUBMITTER)
        self.refs = make_tasks(self.inputs, limits=self.limits, deadline_s=self.deadline_s)
        self.input_of = {ref.task_id: chunks for ref, chunks in zip(self.refs, self.inputs, strict=True)}
        self.wrng = random.Random(self.seed + 1_000_003)  # the workers' nonces
        self.blocks = _Blocks()
        local = self.local
        policy = self.policy if isinstance(self.policy, VerificationPolicy) else VerificationPolicy.parse(self.policy)
        # a peer that runs nothing itself; but spot checks (spot, adaptive) need it to be able to re-run chunks
        checks_here = policy.mode is not VerificationMode.HASH  # spot checks, audits: re-run here
        admission = AdmissionConfig(slots=1, queue_max=0, limits_max=self.limits if checks_here else NOWHERE)
        if local is not None:
            admission = AdmissionConfig(
                slots=local.slots_free, queue_max=local.slots_total - local.slots_free,
                speed_fuel_per_s=local.speed_fuel_per_s,
                limits_max=ReceiptLimits(local.fuel_max, local.memory_bytes_max, local.wall_time_s_max, 1 << 30),
            )
        self.behaviour = ComputeBehaviour(ComputeContext(
            ident(SUBMITTER), self.blocks, self._views, random.Random(self.seed),
            BehaviourConfig(worker=admission, coordinator=self.config), trust=self.trust,
            reachability=self.reachability or Reachability(),
        ))
        self.log: list[Effect] = []
        self.offers: list[tuple[float, Dispatch]] = []
        self.inbox: list[Msg] = []
        self.held: dict[tuple[str, str], Msg] = {}  # results waiting for RequestReveal
        self.cancelled: list[tuple[float, CancelAttempt]] = []
        self.delivered: list[Msg] = []
        self.proofs: list[LieProven] = []  # the fraud proofs the submitter put out
        self._spot_requests: dict[tuple[str, int], int] = {}  # (task, chunk) -> the Execute re-running it
        self.local_runs = 0

    @property
    def job(self) -> JobRun:
        """The job, as the peer reads it (state, progress, explain, task views)."""
        return self.behaviour.jobs["job"]

    def task(self, task_id: str) -> TaskView:
        return self.job.task(task_id)

    def next_deadline(self) -> float | None:
        return self.behaviour.next_deadline()

    # --- the worker source ----------------------------------------------------------------------------

    def _views(self, now: float) -> list[WorkerView]:
        return [
            WorkerView(w.peer_id, w.speed, w.slots, w.slots, w.fuel_max, w.memory_max, w.wall_max,
                       self.trust.score(w.peer_id, now), w.rtt_s, self.behaviour.inflight.get(w.peer_id, 0))
            for w in self.workers if w.online
        ]

    def add_worker(self, worker: FakeWorker) -> None:
        self.workers.append(worker)
        self.by_id[worker.peer_id] = worker

    # --- driving ----------------------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        return self.submit("job", self.inputs, self.policy, self.restored)

    def submit(self, job_id: str, inputs: list[list[bytes]], policy: str | VerificationPolicy,
               restored: dict[str, TaskUpdate] | None = None) -> list[Effect]:
        """Submit a job to the submitter (``start`` submits "job"; a test may add others to the same peer)."""
        for i, task_chunks in enumerate(inputs):
            self.input_of[f"{job_id}/t{i}"] = task_chunks
        chunks = [c for task in inputs for c in task]
        cids = tuple(self.blocks.put(c) for c in chunks)
        per_task = len(inputs[0])
        assert all(len(t) == per_task for t in inputs[:-1]), "tasks of equal chunk counts (the last may be less)"
        policy = policy if isinstance(policy, VerificationPolicy) else VerificationPolicy.parse(policy)
        spec = JobSpec(
            job_id=job_id, module_cid=MODULE_CID, chunk_cids=cids, chunk_sizes=tuple(len(c) for c in chunks),
            limits=self.limits, chunks_per_task=per_task, verification=policy, deadline_s=self.deadline_s,
            retries_max=self.retries_max, escalations_max=self.escalations_max,
            escalation_factor=self.escalation_factor, queue_timeout_s=self.queue_timeout_s,
        )
        return self._event(SubmitJob(spec, restored or {}))

    def tick(self, now: float) -> list[Effect]:
        assert now >= self.now, "time never goes back"
        self.now = now
        return self._event(Tick())

    def at(self, now: float) -> Driver:
        assert now >= self.now
        self.now = now
        return self

    def cancel(self) -> list[Effect]:
        """The submitter cancels the job."""
        return self._event(CancelJob("job"))

    def peer_gone(self, worker: str) -> list[Effect]:
        """``worker``'s advert expired."""
        return self._event(PeerGone(worker))

    def spot_inconclusive(self, task_id: str, chunk_index: int, why: str) -> list[Effect]:
        """This peer's re-run of that chunk could not say anything (it timed out here, was full, ...)."""
        return self._event(ExecutionFailed(self._spot_requests[(task_id, chunk_index)], why))

    def _event(self, event: Event) -> list[Effect]:
        effects = self.apply(self.behaviour.handle(self.now, event))
        out = list(effects)
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
        """Deliver ``msg`` to the submitter now and carry out what it does; the effects."""
        self.delivered.append(msg)
        event: Event
        if msg.kind == "accepted":
            event = FromWorker(msg.worker, codec.Accepted(msg.task_id))
        elif msg.kind == "rejected":
            event = FromWorker(msg.worker, codec.Rejected(msg.task_id, msg.reason))
        elif msg.kind == "transport_error":
            event = SendFailed(msg.worker, msg.task_id, msg.reason)
        elif msg.kind == "commitment":
            event = FromWorker(msg.worker, codec.Commitment(msg.task_id, msg.digest))
        elif msg.kind in ("result", "failure"):
            event = FromWorker(msg.worker, codec.Result(msg.task_id, msg.tree, output_inline=msg.output,
                                                        nonce=msg.nonce))
        elif msg.kind == "spot":
            if msg.chunk is None:  # the guest failed here
                event = Executed(msg.request, None, FailureKind.TRAP, FUEL_PER_CHUNK)
            else:
                event = Executed(msg.request, [msg.chunk], None, FUEL_PER_CHUNK)
        else:
            assert msg.kind == "local", msg.kind
            if msg.reason:  # its run could not even start here
                return self.apply(self.behaviour.handle(self.now, ExecutionFailed(msg.request, msg.reason)))
            if msg.outputs is None:  # its sandbox crashed
                event = Executed(msg.request, None, FailureKind.WORKER_CRASHED, 0)
            else:
                event = Executed(msg.request, msg.outputs, None, FUEL_PER_CHUNK * len(msg.outputs))
        return self.apply(self.behaviour.handle(self.now, event))

    def run_to_end(self, ticks_max: int = 1_000) -> None:
        """Deliver, then jump to the next deadline, until the job ends (or nothing can move)."""
        for _ in range(ticks_max):
            self.run()
            if self.job.state.final:
                return
            deadline = self.next_deadline()
            if deadline is None:
                return
            self.tick(max(self.now, deadline))
        raise AssertionError(f"the job did not end within {ticks_max} ticks")

    # --- effects ------------------------------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> list[Effect]:
        """Carry out the behaviour's ``actions``; the coordinator effects they stand for, in order."""
        effects: list[Effect] = []
        for act in actions:
            eff: Effect | None = None
            if isinstance(act, SendToWorker):
                msg = act.message
                if isinstance(msg, codec.Offer):
                    eff = Dispatch(msg.ref, act.worker)
                    self.offers.append((self.now, eff))
                    self._offer(msg.ref, self.by_id[act.worker])
                elif isinstance(msg, codec.RevealRequest):
                    eff = RequestReveal(msg.task_id, act.worker)
                    held = self.held.pop((msg.task_id, act.worker), None)
                    if held is not None:
                        self.inbox.append(held)
                else:
                    eff = CancelAttempt(msg.task_id, act.worker)
                    self.cancelled.append((self.now, eff))
                    self.held.pop((msg.task_id, act.worker), None)
                    if self.drop_cancelled:
                        self.inbox = [m for m in self.inbox if (m.task_id, m.worker) != (msg.task_id, act.worker)]
            elif isinstance(act, Execute):
                ref = act.task
                if act.purpose is Purpose.SPOT:
                    eff = RunSpotCheck(ref, act.chunk_index)
                    self._spot_requests[(ref.task_id, act.chunk_index)] = act.request
                    chunk = self.input_of[ref.task_id][act.chunk_index]
                    answer = self.spot_answer(ref, act.chunk_index, chunk) if self.spot_answer else honest(chunk)
                    self.inbox.append(Msg("spot", ref.task_id, self.submitter, chunk_index=act.chunk_index,
                                          chunk=answer, request=act.request))
                else:
                    eff = RunLocal(ref)
                    self.local_runs += 1
                    if self.local_behaviour == "broken":
                        self.inbox.append(Msg("local", ref.task_id, self.submitter, request=act.request,
                                              reason="this peer has no sandbox"))
                    elif self.local_behaviour != "silent":
                        crash = self.local_behaviour == "crash_once" and self.local_runs == 1
                        outputs = None if crash else [honest(c) for c in self.input_of[ref.task_id]]
                        self.inbox.append(Msg("local", ref.task_id, self.submitter, request=act.request,
                                              outputs=outputs))
            elif isinstance(act, TaskUpdated):
                eff = act.update
            elif isinstance(act, JobEnded):
                eff = JobFinished(act.state, act.reason)
            elif isinstance(act, LieProven):
                self.proofs.append(act)
            if eff is not None:
                self.log.append(eff)
                effects.append(eff)
        return effects

    def _offer(self, ref: TaskRef, w: FakeWorker) -> None:
        tid, me, now, rng = ref.task_id, w.peer_id, self.now, self.wrng
        chunks = self.input_of[tid]
        b = w.behaviour
        if b == "mute":
            return
        if b == "reject":
            self.inbox.append(Msg("rejected", tid, me, reason=w.reject_reason))
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
            fuel = round(FUEL_PER_CHUNK * len(chunks) * w.fuel_claim)
            tree, output = signed_result(ident(w.name), ref, chunks, now, rng, fuel=fuel)
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
        return " | ".join(self.job.explain().get(task_id, []))

    def check_invariants(self) -> None:
        """What must hold after any step, whatever the workers do."""
        self.behaviour.check()  # each task's attempts, replicas and vote; inflight; the placement indexes
        for worker, n in self.behaviour.inflight.items():
            if worker in self.by_id:
                slots = self.by_id[worker].slots
                assert n <= slots, f"{n} tasks out on {worker}, it has {slots} slots"
        done: dict[str, int] = {}
        for u in self.effects(TaskUpdate):
            assert isinstance(u, TaskUpdate)
            if u.state is TaskState.DONE and not u.corrected:  # an audit's correction may follow
                done[u.task_id] = done.get(u.task_id, 0) + 1
        assert all(n == 1 for n in done.values()), done
        assert len(self.finished()) <= 1
        if self.finished():
            assert self.job.state is self.finished()[0].state
