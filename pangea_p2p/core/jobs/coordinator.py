"""The coordinator: gets every task of a job (or of a split task) done, verified, exactly once.

Theory of operation
-------------------
One ``Coordinator`` owns a list of tasks (``TaskRef``) that all run the same module. The submitter of a job
makes one for the job's tasks; a worker that splits a received task makes one for the parts. It is driven by
events — ``tick(now)`` and the answers to its effects (``on_accepted``, ``on_rejected``, ``on_commitment``,
``on_result``, ``on_failure``, ``on_transport_error``, ``on_spot_result``, ``on_peer_gone``, ``cancel``) —
and returns effects (``effects.py``). It never reads a clock, never touches I/O, and draws every random choice
(spot-check chunks, adaptive replication, retry jitter) from the rng it was given.

Per task:
    PENDING --place--> RUNNING (attempts out with 1..n workers, or a local run)
    RUNNING --a verified result-> VERIFYING (spot checks or more replicas needed) --ok--> DONE
    RUNNING/VERIFYING --wrong, failed, timed out, gone--> PENDING (retry elsewhere, backoff) or FAILED
    any --cancel--> CANCELLED
An *attempt* is one worker working on one task under one set of limits; it is out from its Dispatch until
its result, failure, rejection, transport error or deadline. Replicas of a task are attempts with distinct
workers at the same time (never two on one worker). A worker that failed, timed out or lied on a task is
excluded from it. A deterministic OUT_OF_FUEL / MEMORY_LIMIT_EXCEEDED (agreed on by the quorum) raises that
limit by ``escalation_factor`` and starts over, ``escalations_max`` times.

Verification, per the job's policy: every result's receipt tree is verified offline against the binding the
coordinator issued (signatures, keys, content ids, Merkle roots over the output chunks); then HASH accepts
it, SPOT re-runs k random chunks locally and compares, REPLICAS votes (commit-then-reveal when asked), and
ADAPTIVE asks the trust policy per task. Only checked outcomes feed the trust book.

Invariants: a task is DONE at most once and never changes afterwards; the number of attempts out per task is
at most its replica count; retries per task at most ``retries_max`` (then FAILED with the reason chain);
every effect that expects an answer is correlated by (task_id, worker); the reason chain of a task is
bounded (``REASONS_MAX``).

Cost. A job may hold tens of thousands of tasks and every event ends in a ``tick``, so nothing per event scans
all of them: the coordinator keeps the tasks with attempts out (``_out``), the tasks that may want a placement
(``_unplaced``: a superset, cleaned as it is walked; a task re-enters whenever an attempt, candidate or vote
leaves it, at the front), a heap of the queue and backoff timers, and a count of DONE tasks. Placement walks
``_unplaced`` in order; once no worker (nor this peer, where it may run tasks) has a free slot it only queues
the tasks never considered and stops at the first queued one: everything behind it is queued already and
waits for a free slot or for its timers (the queue fallback and timeout run as before).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs import scheduler
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
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationMode, VerificationPolicy
from pangea_p2p.core.trust import Outcome, ReplicationPolicy, TrustBook
from pangea_p2p.core.verify.chain import ReceiptTree, verify_tree
from pangea_p2p.core.verify.commit_reveal import CommitReveal, Phase
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptLimits, ReplayGuard, TaskBinding, VerifiedTree
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally
from pangea_p2p.errors import FailureKind, PangeaError, RejectReason, RemoteProtocolError, VerificationError

REASONS_MAX = 12
BACKOFF_S_MIN = 0.2
BACKOFF_S_MAX = 30.0
ATTEMPT_GRACE_S = 10.0
OFFER_TIMEOUT_S = 10.0
FUEL_ABSOLUTE_MAX = 10**15
MEMORY_BYTES_ABSOLUTE_MAX = 4 << 30
LOCAL_FALLBACK_AFTER_S = 2.0  # a task that only waits for busy workers runs here after this long
ESCALATING = (FailureKind.OUT_OF_FUEL, FailureKind.MEMORY_LIMIT_EXCEEDED)


@dataclass
class WorkerSource:
    """How a coordinator sees candidate workers: the driver's capacity directory, trust and RTTs."""

    views: Callable[[float], list[scheduler.WorkerView]]
    local: Callable[[float], scheduler.WorkerView | None]


@dataclass
class Attempt:
    worker: str
    limits: ReceiptLimits
    deadline_s: float
    accepted: bool = False
    committed: bool = False
    local: bool = False
    counted: bool = True  # counts as load on the worker (not any more once it committed and only waits)


@dataclass
class Candidate:
    """A verified result waiting for its checks (spot checks or the vote)."""

    worker: str
    tree: ReceiptTree
    output: bytes
    claim: Claim
    signers: frozenset[str]  # every peer that signed a receipt of the tree (a vote's signers must not overlap)
    spot_pending: set[int] = field(default_factory=set)


@dataclass
class TaskEntry:
    ref: TaskRef
    state: TaskState = TaskState.PENDING
    limits: ReceiptLimits | None = None
    attempts: dict[str, Attempt] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    failures: int = 0
    escalations: int = 0
    not_before_s: float = 0.0
    queued_since_s: float | None = None
    fallback_check_s: float = 0.0  # when a queued task next looks whether it may run here (checked modes)
    tally: VoteTally | None = None
    reveal: CommitReveal | None = None  # the commit-then-reveal round new replicas join (while COMMITTING)
    rounds: dict[str, CommitReveal] = field(default_factory=dict)  # worker -> the round it committed in
    candidates: dict[str, Candidate] = field(default_factory=dict)
    replicas: int = 1
    spot_checks: int = 0
    checked: bool = False
    reasons: deque[str] = field(default_factory=lambda: deque(maxlen=REASONS_MAX))
    output_cid: str = ""
    tree: bytes = b""
    fuel_used: int = 0
    worker: str = ""


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    scheduler: scheduler.SchedulerConfig = field(default_factory=scheduler.SchedulerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    timeout_factor: float = 3.0  # an attempt may take this many times its expected duration, plus the grace


class Coordinator:
    """Gets a list of tasks done (see the module docstring)."""

    def __init__(
        self,
        self_id: str,
        tasks: list[TaskRef],
        policy: VerificationPolicy,
        *,
        retries_max: int,
        escalations_max: int,
        escalation_factor: float,
        queue_timeout_s: float,
        trust: TrustBook,
        guard: ReplayGuard,
        source: WorkerSource,
        rng: random.Random,
        now: float,
        config: CoordinatorConfig | None = None,
        local_allowed: bool = True,
        inflight: dict[str, int] | None = None,
    ) -> None:
        self.self_id = self_id
        self.policy = policy
        self.retries_max = retries_max
        self.escalations_max = escalations_max
        self.escalation_factor = escalation_factor
        self.queue_timeout_s = queue_timeout_s
        self.trust = trust
        self.guard = guard
        self.source = source
        self.rng = rng
        self.config = config or CoordinatorConfig()
        self.local_allowed = local_allowed  # False for the parts of a split task: its delegator must not sign a leaf
        self.inflight = inflight if inflight is not None else {}
        self.replication = ReplicationPolicy(trust)
        self.tasks: dict[str, TaskEntry] = {t.task_id: TaskEntry(t, limits=t.limits) for t in tasks}
        self._out: dict[str, TaskEntry] = {}  # tasks with at least one attempt out
        self._unplaced: OrderedDict[str, TaskEntry] = OrderedDict(self.tasks)  # a superset of those wanting placement
        self._timers: list[tuple[float, str]] = []  # (when, task id): queue fallback/timeout, backoff ends
        self._due: list[str] = []  # tasks whose timers fired, for the next placement round
        self._done = 0  # tasks DONE
        # A task as small as any of ours on the shared path: a worker that cannot take it can take none of them
        # (placement only gets harder with larger limits), which makes the "any room?" check job-wide.
        self._probe = replace(tasks[0], limits=_smallest(t.limits for t in tasks)) if tasks else None
        self.state = JobState.RUNNING
        self.started_s = now
        self.finished_s: float | None = None
        self.reason = ""
        self._fuel_per_chunk: list[float] = []
        self._effects: list[Effect] = []

    # --- driving ----------------------------------------------------------------------------------------

    def drain(self) -> list[Effect]:
        """The effects produced since the last call, in order."""
        out, self._effects = self._effects, []
        return out

    def restore(self, task_id: str, output_cid: str, tree: bytes, fuel_used: int, worker: str) -> None:
        """Mark a task DONE from the journal (a restarted submitter resumes its jobs)."""
        entry = self.tasks[task_id]
        if entry.state is not TaskState.DONE:
            self._done += 1
        entry.state, entry.output_cid, entry.tree = TaskState.DONE, output_cid, tree
        entry.fuel_used, entry.worker = fuel_used, worker

    def tick(self, now: float) -> list[Effect]:
        """Fire due timers and place pending tasks; return the effects."""
        if self.state is JobState.RUNNING:
            for entry in list(self._out.values()):
                self._expire_attempts(entry, now)
            self._place_pending(now)
            self._check_finished(now)
        return self.drain()

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` next has something to do (None: only events can move it): after ``now``, or ``now`` itself
        when timers are due (they are handed to the next tick, which takes them all: no busy loop)."""
        if self.state is not JobState.RUNNING:
            return None
        times = [a.deadline_s for e in self._out.values() for a in e.attempts.values() if a.deadline_s > now]
        while self._timers and self._timers[0][0] <= now:  # due: the next tick sees them (tick takes them all)
            self._due.append(heapq.heappop(self._timers)[1])
        if self._timers:
            times.append(self._timers[0][0])
        if self._due:
            times.append(now)
        return min(times, default=None)

    def _timer(self, when: float, entry: TaskEntry) -> None:
        heapq.heappush(self._timers, (when, entry.ref.task_id))

    # --- placement --------------------------------------------------------------------------------------

    def _place_pending(self, now: float) -> None:
        """Place what wants placing (see Cost in the module docstring): first the tasks whose timers are due
        (queue fallback and timeout, end of a backoff), then the others in order while any slot is free."""
        while self._timers and self._timers[0][0] <= now:
            self._due.append(heapq.heappop(self._timers)[1])
        if not self._unplaced and not self._due:
            return
        workers = self.source.views(now)
        due, self._due = self._due, []
        for task_id in dict.fromkeys(due):
            entry = self.tasks[task_id]
            if self._wants_placement(entry, now):
                workers = self._place_and_look(entry, workers, now)
        drop: list[str] = []
        for entry in self._walk():
            if entry.state.final or self._replicas_wanted(entry) <= 0:
                drop.append(entry.ref.task_id)
                continue
            if entry.not_before_s > now:
                continue  # backing off: its timer brings it back
            if not self._room(workers, now):
                if entry.queued_since_s is not None:
                    break  # queued already, and so is everything behind it (re-considered tasks go to the front)
                workers = self._place_and_look(entry, workers, now)  # first time: queued with its reason
                continue
            workers = self._place_and_look(entry, workers, now)
            if self._replicas_wanted(entry) <= 0:
                drop.append(entry.ref.task_id)
        for task_id in drop:
            dropped = self._unplaced.get(task_id)
            if dropped is not None and (dropped.state.final or self._replicas_wanted(dropped) <= 0):
                del self._unplaced[task_id]

    def _walk(self, chunk: int = 32) -> Iterator[TaskEntry]:
        """The entries of ``_unplaced`` in order, copied a few at a time (a walk usually stops early; a copy of
        the whole queue per tick would cost O(tasks)). Placing may move entries meanwhile: one moved to the
        front is seen at the next walk, one moved behind may be seen twice (placing is asked again: harmless)."""
        seen = 0
        while batch := list(itertools.islice(self._unplaced.values(), seen, seen + chunk)):
            yield from batch
            seen += len(batch)

    def _reconsider(self, entry: TaskEntry) -> None:
        """``entry`` may want a placement now: to the front of ``_unplaced``, before the tasks already queued (a
        placement round stops at the first queued task when no slot is free, so each task is considered)."""
        self._unplaced[entry.ref.task_id] = entry
        self._unplaced.move_to_end(entry.ref.task_id, last=False)

    def _wants_placement(self, entry: TaskEntry, now: float) -> bool:
        return not entry.state.final and entry.not_before_s <= now and self._replicas_wanted(entry) > 0

    def _place_and_look(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float
                        ) -> list[scheduler.WorkerView]:
        """Place ``entry``; the worker views afresh if that put an attempt out (it changed what is where)."""
        before = len(entry.attempts)
        self._place(entry, workers, now)
        return self.source.views(now) if len(entry.attempts) != before else workers

    def _room(self, workers: list[scheduler.WorkerView], now: float) -> bool:
        """Whether some worker, or this peer where placement may pick it, could take one of our tasks now: a free
        slot, enough trust, limits that fit our smallest task, not on the path (else no task can go out). This
        peer as a checked job's fallback does not count: waiting tasks look at it on their own timers."""
        probe, cfg = self._probe, self.config.scheduler
        if probe is None:
            return False
        if any(scheduler.ineligible(probe, w, cfg) is None for w in workers if w.peer_id not in probe.path):
            return True
        local = self.source.local(now) if self._local_allowed() else None
        return local is not None and scheduler.ineligible(probe, local, cfg) is None

    def _place(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float) -> None:
        ref = self._ref(entry)
        wanted = self._replicas_wanted(entry)
        local = self.source.local(now) if self._local_allowed() else None
        req = scheduler.PlaceRequest(
            ref, self._fuel(ref), workers, local, frozenset(entry.excluded | set(entry.attempts)),
            replicas=wanted, may_split=False,
        )
        placement = scheduler.place(req, self.config.scheduler)
        if placement.kind == "delegate":
            for worker in placement.workers:
                self._dispatch(entry, ref, worker, now)
        elif placement.kind == "local":
            self._run_local(entry, ref, now, placement.reason)
        else:
            self._queue(entry, ref, placement.reason, now)

    def _queue(self, entry: TaskEntry, ref: TaskRef, why: str, now: float) -> None:
        idle = not entry.attempts and not entry.candidates and (entry.tally is None or not entry.tally.votes)
        local = self.source.local(now) if self.local_allowed and idle else None
        if local is not None and scheduler.ineligible(ref, local, self.config.scheduler) is None:
            # Busy workers free up soon: wait for them a little; run here at once only if none could ever fit.
            excluded = entry.excluded | set(entry.attempts)
            could = any(
                scheduler.ineligible(ref, w, self.config.scheduler, busy_ok=True) is None
                for w in self.source.views(now) if w.peer_id not in excluded and w.peer_id not in ref.path
            )
            waited = entry.queued_since_s is not None and now >= entry.queued_since_s + LOCAL_FALLBACK_AFTER_S
            if not could or waited:
                self._run_local(entry, ref, now, f"local fallback: {why}")
                return
        if entry.queued_since_s is None:
            entry.queued_since_s = now
            self._timer(now + LOCAL_FALLBACK_AFTER_S, entry)
            self._timer(now + self.queue_timeout_s, entry)
            self._note(entry, f"queued: {why}")
            self._update(entry, reason=why)
        elif now >= entry.queued_since_s + self.queue_timeout_s:
            self._fail(entry, f"no worker within the {self.queue_timeout_s:g} s queue timeout: {why}", now)
        elif idle and self.local_allowed and not self._local_allowed() and now >= entry.fallback_check_s:
            # a checked job's task that waited and found this peer busy looks again later (not on every event)
            entry.fallback_check_s = max(now, entry.queued_since_s + LOCAL_FALLBACK_AFTER_S) + LOCAL_FALLBACK_AFTER_S
            self._timer(entry.fallback_check_s, entry)

    def _replicas_wanted(self, entry: TaskEntry) -> int:
        """Attempts to start now: the replicas the tally waits for that are not out, else one if none is."""
        if entry.tally is not None:
            return max(0, entry.tally.unanswered - len(entry.attempts))
        return max(0, entry.replicas - len(entry.attempts) - len(entry.candidates))

    def _local_allowed(self) -> bool:
        # Checked modes verify other peers; this peer runs tasks itself only as a fallback (and trusts itself).
        return self.local_allowed and self.policy.mode is VerificationMode.HASH

    def _ref(self, entry: TaskEntry) -> TaskRef:
        assert entry.limits is not None
        return replace(entry.ref, limits=entry.limits, commit_reveal=self._commit_reveal(entry))

    def _commit_reveal(self, entry: TaskEntry) -> bool:
        return self.policy.commit_reveal and entry.replicas > 1

    def _fuel(self, ref: TaskRef) -> float:
        learned = sum(self._fuel_per_chunk) / len(self._fuel_per_chunk) if self._fuel_per_chunk else None
        return scheduler.fuel_estimate(ref, learned)

    def _dispatch(self, entry: TaskEntry, ref: TaskRef, worker: str, now: float) -> None:
        fuel = self._fuel(ref)
        views = {w.peer_id: w for w in self.source.views(now)}
        view = views.get(worker)
        expected = scheduler.expected_s(ref, fuel, view, self.config.scheduler) if view else 1.0
        budget = min(expected * self.config.timeout_factor, ref.chunk_count * ref.limits.wall_time_s)
        deadline = min(now + OFFER_TIMEOUT_S + ATTEMPT_GRACE_S + budget, max(ref.deadline_s, now + 1.0))
        entry.attempts[worker] = Attempt(worker, ref.limits, deadline)
        self._out[ref.task_id] = entry
        entry.state, entry.queued_since_s = TaskState.RUNNING, None
        self.inflight[worker] = self.inflight.get(worker, 0) + 1
        if entry.tally is not None:
            entry.tally.add_workers([worker])
        if ref.commit_reveal:
            if entry.reveal is None or entry.reveal.phase is not Phase.COMMITTING:
                entry.reveal = CommitReveal(ref.job_id, ref.task_id, self.config.verify.replicas_max, 1)
            entry.reveal.add_workers([worker])
            entry.rounds[worker] = entry.reveal
        self._note(entry, f"sent to {worker} (attempt {entry.failures + 1}, expected {expected:.3f} s)")
        self._effects.append(Dispatch(ref, worker))
        self._update(entry, worker=worker)

    def _run_local(self, entry: TaskEntry, ref: TaskRef, now: float, why: str) -> None:
        deadline = now + ATTEMPT_GRACE_S + ref.chunk_count * ref.limits.wall_time_s
        entry.attempts[self.self_id] = Attempt(self.self_id, ref.limits, deadline, accepted=True, local=True)
        self._out[ref.task_id] = entry
        entry.state, entry.queued_since_s = TaskState.RUNNING, None
        self.inflight[self.self_id] = self.inflight.get(self.self_id, 0) + 1
        self._note(entry, why)
        self._effects.append(RunLocal(ref))
        self._update(entry, worker=self.self_id)

    def _end_attempt(self, entry: TaskEntry, worker: str) -> Attempt | None:
        attempt = entry.attempts.pop(worker, None)
        if not entry.attempts:
            self._out.pop(entry.ref.task_id, None)
        self._reconsider(entry)  # it may want another attempt now
        if attempt is not None and attempt.counted:
            left = self.inflight.get(worker, 1) - 1
            if left > 0:
                self.inflight[worker] = left
            else:
                self.inflight.pop(worker, None)
        return attempt

    # --- answers to effects -----------------------------------------------------------------------------

    def on_accepted(self, task_id: str, worker: str, now: float) -> list[Effect]:
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry else None
        if attempt is not None:
            attempt.accepted = True
        return self.drain()

    def on_rejected(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker declined the offer (full, limits, depth): try elsewhere, not a fault, no penalty."""
        entry = self.tasks.get(task_id)
        if entry is None or self._end_attempt(entry, worker) is None:
            return self.drain()
        entry.excluded.add(worker)
        self._note(entry, f"{worker} declined: {reason}")
        self._after_attempt(entry, now)
        return self.drain()

    def on_transport_error(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker could not be reached or the stream broke."""
        entry = self.tasks.get(task_id)
        if entry is None or self._end_attempt(entry, worker) is None:
            return self.drain()
        self._attempt_failed(entry, worker, f"{worker} unreachable: {reason}", now, penalise=False)
        return self.drain()

    def on_peer_gone(self, worker: str, now: float) -> list[Effect]:
        """``worker`` left (its advert expired or its connection dropped): reassign what it had."""
        for entry in list(self._out.values()):
            if worker in entry.attempts and not entry.attempts[worker].local:
                self._end_attempt(entry, worker)
                self._attempt_failed(entry, worker, f"{worker} left the network", now, penalise=False)
        return self.drain()

    def on_commitment(self, task_id: str, worker: str, digest: bytes, now: float) -> list[Effect]:
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry is not None else None
        round_ = entry.rounds.get(worker) if entry is not None else None
        if entry is None or attempt is None or round_ is None:
            return self.drain()
        try:
            round_.add_commitment(worker, digest)
        except VerificationError as exc:
            self._end_attempt(entry, worker)
            self._attempt_failed(entry, worker, f"{worker}: {exc}", now, penalise=True)
            return self.drain()
        attempt.committed = True
        if attempt.counted:  # the worker is done computing; it only waits for the reveal request
            attempt.counted = False
            left = self.inflight.get(worker, 1) - 1
            if left > 0:
                self.inflight[worker] = left
            else:
                self.inflight.pop(worker, None)
        waiting = sum(1 for w, a in entry.attempts.items() if entry.rounds.get(w) is round_ and not a.committed)
        self._note(entry, f"{len(round_.committed)} commitment(s) received, waiting for {waiting} more")
        self._maybe_reveal(entry, now)
        return self.drain()

    def _maybe_reveal(self, entry: TaskEntry, now: float) -> None:
        """Open the current round once every replica still out in it has committed."""
        round_ = entry.reveal
        if round_ is None or round_.phase is not Phase.COMMITTING or not round_.committed:
            return
        if any(entry.rounds.get(w) is round_ and not a.committed for w, a in entry.attempts.items()):
            return
        for w in round_.open_reveals():
            attempt = entry.attempts.get(w)
            if attempt is not None:
                attempt.deadline_s = now + OFFER_TIMEOUT_S + ATTEMPT_GRACE_S  # time to send the result
                self._effects.append(RequestReveal(entry.ref.task_id, w))
        self._note(entry, f"all {len(round_.committed)} commitment(s) in: reveals requested")

    def on_result(
        self, task_id: str, worker: str, tree_bytes: bytes, output: bytes, now: float, nonce: bytes = b""
    ) -> list[Effect]:
        """A result: ``tree_bytes`` is the encoded receipt tree, ``output`` the framed output chunks."""
        entry = self.tasks.get(task_id)
        if entry is None or entry.state.final:
            return self.drain()
        attempt = self._end_attempt(entry, worker)
        if attempt is None:
            return self.drain()
        try:
            tree, verified, claim = self._verify(entry, attempt, worker, tree_bytes, output, now, nonce)
        except (VerificationError, RemoteProtocolError) as exc:
            self._attempt_failed(entry, worker, f"{worker} sent a result that failed verification: {exc}", now,
                                 penalise=True)
            return self.drain()
        if claim is None or claim.failure is not None:
            self._on_signed_failure(entry, worker, verified, claim, now)
            return self.drain()
        self._learn_fuel(entry, tree.receipt.fuel_used)
        candidate = Candidate(worker, tree, output, claim, verified.signers)
        if attempt.local:
            self._accept(entry, candidate, now, checked=False)
            return self.drain()
        self._on_candidate(entry, candidate, now)
        return self.drain()

    def on_failure(self, task_id: str, worker: str, tree_bytes: bytes, now: float, nonce: bytes = b"") -> list[Effect]:
        """A signed typed failure (the receipt tree says why)."""
        return self.on_result(task_id, worker, tree_bytes, b"", now, nonce)

    def on_local_error(self, task_id: str, reason: str, now: float) -> list[Effect]:
        """The local run could not even produce a receipt (e.g. the module is missing)."""
        entry = self.tasks.get(task_id)
        if entry is None or self._end_attempt(entry, self.self_id) is None:
            return self.drain()
        self._attempt_failed(entry, self.self_id, f"local run failed: {reason}", now, penalise=False)
        return self.drain()

    def on_spot_result(self, task_id: str, chunk_index: int, output_chunk: bytes | None, now: float) -> list[Effect]:
        """This peer's re-execution of one chunk (None: it failed here too, see the reason in the journal)."""
        entry = self.tasks.get(task_id)
        if entry is None or entry.state is not TaskState.VERIFYING:
            return self.drain()
        for candidate in list(entry.candidates.values()):
            if chunk_index not in candidate.spot_pending:
                continue
            candidate.spot_pending.discard(chunk_index)
            theirs = unframe_chunks(candidate.output)[chunk_index]
            if output_chunk is None or theirs != output_chunk:
                del entry.candidates[candidate.worker]
                self._reconsider(entry)
                self.trust.record(candidate.worker, Outcome.INVALID, now)
                self._attempt_failed(
                    entry, candidate.worker,
                    f"spot check of chunk {chunk_index} failed: {candidate.worker}'s output differs from this "
                    "peer's re-execution", now, penalise=False,
                )
            elif not candidate.spot_pending:
                self._note(entry, f"spot checks passed ({entry.spot_checks} chunk(s))")
                self.trust.record(candidate.worker, Outcome.VALID, now)
                self._accept(entry, candidate, now, checked=True)
        return self.drain()

    def cancel(self, now: float, reason: str = "cancelled by the submitter") -> list[Effect]:
        self._cancel_all(now, reason)
        return self.drain()

    def _cancel_all(self, now: float, reason: str, state: JobState = JobState.CANCELLED, job_reason: str = "") -> None:
        """Cancel every task not final yet, then end the job in ``state``."""
        if self.state is not JobState.RUNNING:
            return
        for entry in self.tasks.values():
            if not entry.state.final:
                for worker in list(entry.attempts):
                    attempt = self._end_attempt(entry, worker)
                    if attempt is not None and not attempt.local:
                        self._effects.append(CancelAttempt(entry.ref.task_id, worker))
                entry.state = TaskState.CANCELLED
                self._note(entry, reason)
                self._update(entry, reason=reason)
        self._finish(state, job_reason or reason, now)

    # --- verification -----------------------------------------------------------------------------------

    def binding(self, entry: TaskEntry, limits: ReceiptLimits) -> TaskBinding:
        ref = entry.ref
        return TaskBinding.of(
            job_id=ref.job_id, task_id=ref.task_id, parent_task_id=ref.parent_task_id, module_cid=ref.module_cid,
            input_cid=ref.input_cid, limits=limits, issuer=self.self_id, chunk_count=ref.chunk_count,
        )

    def _verify(
        self, entry: TaskEntry, attempt: Attempt, worker: str, tree_bytes: bytes, output: bytes, now: float,
        nonce: bytes,
    ) -> tuple[ReceiptTree, VerifiedTree, Claim | None]:
        tree = ReceiptTree.decode(tree_bytes, self.config.verify)
        round_ = entry.rounds.get(worker)
        if round_ is not None and not attempt.committed:
            raise VerificationError(RejectReason.OUT_OF_PHASE, f"{worker} sent its result without committing first")
        verified = verify_tree(
            tree, self.binding(entry, attempt.limits), now, self.config.verify, worker=worker, guard=self.guard,
            output=output if tree.receipt.ok else None,
        )
        claim = Claim.from_tree(verified)
        if round_ is not None:
            if claim is None:
                raise VerificationError(RejectReason.COMMITMENT_MISMATCH, f"{worker} committed, then reported a "
                                        "failure that is no vote")
            round_.add_reveal(worker, claim, nonce)
        return tree, verified, claim

    def _on_candidate(self, entry: TaskEntry, candidate: Candidate, now: float) -> None:
        """A verified successful result from another peer: check it per the policy."""
        if entry.replicas == 1 and entry.tally is None and not entry.candidates:
            self._plan(entry, candidate.worker, now)
        if entry.tally is not None:
            entry.candidates[candidate.worker] = candidate
            self._vote(entry, candidate.worker, candidate.claim, now, candidate.signers)
            return
        if entry.spot_checks > 0:
            entry.state = TaskState.VERIFYING
            n = entry.ref.chunk_count
            indexes = sorted(self.rng.sample(range(n), min(entry.spot_checks, n)))
            candidate.spot_pending = set(indexes)
            entry.candidates[candidate.worker] = candidate
            self._note(entry, f"result from {candidate.worker}; re-running chunk(s) {indexes} here to spot-check it")
            self._update(entry)
            for i in indexes:
                self._effects.append(SpotCheck(self._ref(entry), i))
            return
        self._accept(entry, candidate, now, checked=False)

    def _plan(self, entry: TaskEntry, primary: str, now: float) -> None:
        """Decide replicas / spot checks once the primary worker is known."""
        mode = self.policy.mode
        if mode is VerificationMode.SPOT:
            entry.spot_checks = self.policy.spot_checks
        elif mode is VerificationMode.ADAPTIVE:
            plan = self.replication.plan(primary, now, self.rng, chunks=entry.ref.chunk_count)
            entry.spot_checks = plan.spot_checks
            if plan.replicas > 1:
                self._start_vote(entry, plan.replicas, [primary], now)
                self._note(entry, f"adaptive: {plan.why}")

    def _start_vote(self, entry: TaskEntry, replicas: int, workers: list[str], now: float) -> None:
        entry.replicas = replicas
        entry.tally = VoteTally(replicas, workers=workers, replicas_max=self.config.verify.replicas_max)
        self._reconsider(entry)
        entry.state = TaskState.VERIFYING
        self._update(entry)  # the other replicas are placed once the primary's vote is in (see _vote)

    def _place_pending_one(self, entry: TaskEntry, now: float) -> None:
        if self._replicas_wanted(entry) > 0 and entry.not_before_s <= now:
            self._place(entry, self.source.views(now), now)

    def _vote(
        self, entry: TaskEntry, worker: str, claim: Claim | None, now: float, signers: frozenset[str] = frozenset()
    ) -> None:
        assert entry.tally is not None
        self._reconsider(entry)  # the vote may ask for more replicas
        try:
            if claim is not None:
                decision = entry.tally.add_vote(worker, claim, signers)
            else:
                decision = entry.tally.add_no_show(worker)
        except VerificationError as exc:
            self._note(entry, f"vote of {worker} refused: {exc}")
            return
        cast = len(entry.tally.votes)
        self._note(entry, f"{cast} of {entry.tally.dispatched} replicas answered")
        if decision.state is TallyState.ACCEPTED and decision.accepted is not None:
            for w in entry.tally.agreeing():
                self.trust.record(w, Outcome.VALID, now)
            for w in entry.tally.dissenting():
                self.trust.record(w, Outcome.INVALID, now)
                self._note(entry, f"{w} was outvoted")
            self._decided(entry, decision.accepted, now)
        elif decision.state is TallyState.FAILED:
            self._fail(entry, f"replicas disagree and no answer reached a quorum ({decision.reason})", now)
        else:
            if decision.replicas_to_add > 0:
                entry.replicas = entry.tally.dispatched
                self._note(entry, f"no quorum yet: {decision.replicas_to_add} more replica(s)")
            entry.state = TaskState.VERIFYING
            self._place_pending_one(entry, now)

    def _decided(self, entry: TaskEntry, claim: Claim, now: float) -> None:
        if claim.failure is not None:
            self._escalate_or_fail(entry, claim.failure, f"the replicas agree on {claim.failure.name}", now)
            return
        winner = next(c for c in entry.candidates.values() if c.claim == claim)
        self._accept(entry, winner, now, checked=True)

    def _on_signed_failure(self, entry: TaskEntry, worker: str, verified: VerifiedTree, claim: Claim | None,
                           now: float) -> None:
        failure = verified.failure
        if failure is None:  # a delegation tree reports results only; a failed part comes as a leaf's failure
            failure = FailureKind.WORKER_CRASHED
        if entry.tally is not None:
            self._vote(entry, worker, claim, now, verified.signers)
            return
        if claim is None:  # timeout, crash: a property of that worker, not of the task
            self._attempt_failed(entry, worker, f"{worker} reported {failure.name}", now, penalise=False,
                                 timeout=failure is FailureKind.TIMEOUT)
            return
        self._escalate_or_fail(entry, failure, f"{worker} reported {failure.name}", now)

    def _escalate_or_fail(self, entry: TaskEntry, failure: FailureKind, why: str, now: float) -> None:
        assert entry.limits is not None
        if failure in ESCALATING and entry.escalations < self.escalations_max:
            entry.escalations += 1
            lim = entry.limits
            if failure is FailureKind.OUT_OF_FUEL:
                new = replace(lim, fuel_max=min(FUEL_ABSOLUTE_MAX, int(lim.fuel_max * self.escalation_factor)))
                what = f"fuel to {new.fuel_max}"
            else:
                memory = min(MEMORY_BYTES_ABSOLUTE_MAX, int(lim.memory_bytes_max * self.escalation_factor))
                new = replace(lim, memory_bytes_max=memory)
                what = f"memory to {memory >> 20} MiB"
            entry.limits = new
            self._reset(entry, now)
            self._note(entry, f"{why}: raising {what} (escalation {entry.escalations} of {self.escalations_max})")
            return
        self._fail(entry, f"{why} (deterministic: retrying elsewhere would give the same)", now)

    def _accept(self, entry: TaskEntry, candidate: Candidate, now: float, *, checked: bool) -> None:
        for worker in list(entry.attempts):  # replicas still out are not needed
            attempt = self._end_attempt(entry, worker)
            if attempt is not None and not attempt.local:
                self._effects.append(CancelAttempt(entry.ref.task_id, worker))
        receipt = candidate.tree.receipt
        if entry.state is not TaskState.DONE:
            self._done += 1
        entry.state, entry.checked = TaskState.DONE, checked
        entry.output_cid = _output_cid(candidate)
        entry.tree, entry.fuel_used, entry.worker = candidate.tree.encode(), receipt.fuel_used, candidate.worker
        entry.candidates.clear()
        self._note(entry, f"done by {candidate.worker} ({'checked' if checked else 'unchecked'})")
        self._update(entry, output_cid=entry.output_cid, tree=entry.tree, fuel_used=entry.fuel_used,
                     worker=candidate.worker)
        self._check_finished(now)

    # --- failures and retries ---------------------------------------------------------------------------

    def _attempt_failed(self, entry: TaskEntry, worker: str, why: str, now: float, *, penalise: bool,
                        timeout: bool = False) -> None:
        entry.excluded.add(worker)
        if penalise:
            self.trust.record(worker, Outcome.INVALID, now)
        elif timeout:
            self.trust.record(worker, Outcome.TIMEOUT, now)
        self._note(entry, why)
        if entry.tally is not None and not entry.state.final and worker not in entry.tally.votes:
            self._vote(entry, worker, None, now)  # a no-show: the tally may escalate or give up
            if _ended(entry):
                return
        entry.failures += 1
        if entry.failures > self.retries_max:
            self._fail(entry, f"gave up after {entry.failures} failed attempts (retries_max {self.retries_max})", now)
            return
        self._after_attempt(entry, now)

    def _after_attempt(self, entry: TaskEntry, now: float) -> None:
        if entry.state.final:
            return
        self._maybe_reveal(entry, now)  # the replica that ended may have been the last one not committed
        if entry.failures:
            backoff = min(BACKOFF_S_MAX, BACKOFF_S_MIN * 2 ** max(0, entry.failures - 1)) * (0.5 + self.rng.random())
            entry.not_before_s = now + backoff
            self._timer(entry.not_before_s, entry)
        if not entry.attempts and not entry.candidates and (entry.tally is None or not entry.tally.votes):
            entry.state = TaskState.PENDING
            self._update(entry)
        self._place_pending(now)

    def _expire_attempts(self, entry: TaskEntry, now: float) -> None:
        for worker, attempt in list(entry.attempts.items()):
            round_ = entry.rounds.get(worker)
            if attempt.committed and round_ is not None and round_.phase is Phase.COMMITTING:
                continue  # it waits for the other replicas of its round, whose own deadlines bound the wait
            if now >= attempt.deadline_s:
                self._end_attempt(entry, worker)
                if not attempt.local:
                    self._effects.append(CancelAttempt(entry.ref.task_id, worker))
                phase = "running" if attempt.accepted else "answering the offer"
                self._attempt_failed(entry, worker, f"{worker} timed out {phase}", now, penalise=False, timeout=True)

    def _reset(self, entry: TaskEntry, now: float) -> None:
        for worker in list(entry.attempts):
            attempt = self._end_attempt(entry, worker)
            if attempt is not None and not attempt.local:
                self._effects.append(CancelAttempt(entry.ref.task_id, worker))
        entry.tally, entry.reveal, entry.rounds, entry.candidates = None, None, {}, {}
        self._reconsider(entry)
        entry.replicas = self._initial_replicas()
        self._init_verification(entry)
        entry.state, entry.not_before_s = TaskState.PENDING, now
        self._update(entry)
        self._place_pending(now)

    def _fail(self, entry: TaskEntry, why: str, now: float) -> None:
        if entry.state.final:
            return
        for worker in list(entry.attempts):
            attempt = self._end_attempt(entry, worker)
            if attempt is not None and not attempt.local:
                self._effects.append(CancelAttempt(entry.ref.task_id, worker))
        entry.state = TaskState.FAILED
        self._note(entry, f"failed: {why}")
        self._update(entry, reason=why)
        self._cancel_all(now, f"job failed: task {entry.ref.task_id} failed", JobState.FAILED,
                         f"task {entry.ref.task_id} failed: {why}")

    # --- job ----------------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Set up verification per task and place the first tasks."""
        for entry in self.tasks.values():
            if entry.state is TaskState.PENDING:
                entry.replicas = self._initial_replicas()
                self._init_verification(entry)
        return self.tick(now)

    def _initial_replicas(self) -> int:
        return self.policy.replicas if self.policy.mode is VerificationMode.REPLICAS else 1

    def _init_verification(self, entry: TaskEntry) -> None:
        if self.policy.mode is VerificationMode.REPLICAS:
            entry.tally = VoteTally(entry.replicas, workers=[], replicas_max=self.config.verify.replicas_max)

    def _check_finished(self, now: float) -> None:
        if self.state is JobState.RUNNING and self._done == len(self.tasks):
            self._finish(JobState.DONE, "", now)

    def _finish(self, state: JobState, reason: str, now: float) -> None:
        if self.state is not JobState.RUNNING:
            return
        self.state, self.reason, self.finished_s = state, reason, now
        self._effects.append(JobFinished(state, reason))

    # --- bookkeeping ----------------------------------------------------------------------------------------

    def _learn_fuel(self, entry: TaskEntry, fuel_used: int) -> None:
        self._fuel_per_chunk.append(fuel_used / max(1, entry.ref.chunk_count))
        del self._fuel_per_chunk[:-32]

    def _note(self, entry: TaskEntry, text: str) -> None:
        entry.reasons.append(text)

    def _update(self, entry: TaskEntry, *, reason: str = "", output_cid: str = "", tree: bytes = b"",
                fuel_used: int = 0, worker: str = "") -> None:
        self._effects.append(TaskUpdate(entry.ref.task_id, entry.state, reason or (entry.reasons[-1] if entry.reasons
                                        else ""), output_cid, tree, fuel_used, worker))

    def progress(self) -> dict[str, int]:
        counts = {s.value: 0 for s in TaskState}
        for e in self.tasks.values():
            counts[e.state.value] += 1
        return counts

    def fuel_used(self) -> int:
        return sum(e.fuel_used for e in self.tasks.values())

    def explain(self) -> dict[str, list[str]]:
        """The reason chain of every task that is not done, oldest first."""
        return {tid: list(e.reasons) for tid, e in self.tasks.items() if e.state is not TaskState.DONE}


def _smallest(limits: Iterable[ReceiptLimits]) -> ReceiptLimits:
    """The componentwise smallest of ``limits``."""
    lims = list(limits)
    return ReceiptLimits(min(x.fuel_max for x in lims), min(x.memory_bytes_max for x in lims),
                         min(x.wall_time_s for x in lims), min(x.output_bytes_max for x in lims))


def _ended(entry: TaskEntry) -> bool:
    return entry.state.final


def _output_cid(candidate: Candidate) -> str:
    from pangea_p2p.core.cid import cid_of

    return cid_of(candidate.output)


__all__ = ["Coordinator", "CoordinatorConfig", "PangeaError", "WorkerSource", "math"]
