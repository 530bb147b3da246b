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
workers at the same time (never two on one worker), each drawn at random among the eligible workers
(``PlaceRequest.rng``, see scheduler.py), so that a party with many identities and inflated adverts cannot
fill a vote. A worker that failed, timed out or lied on a task is excluded from it.

Worker faults and unreachable workers are counted apart. A fault (an accepted attempt that timed out, a
signed crash, a result that fails verification or is outvoted, a departure) counts toward ``retries_max``.
An unreachable worker (``on_transport_error``, or an offer with no answer by its deadline) is a partition or
a crash, not a fault: it counts toward ``unreachable_max`` instead, backs off (also while other replicas are
out), and goes into the peer's shared ``Reachability`` for ``unreachable_cooldown_s``, during which none of
its coordinators offers it a task (any answer from it ends the cool-down). Its replica is placed again (a
no-show of the vote only if it had committed). So a partition delays tasks instead of failing them, and the
loop stays bounded. A deterministic OUT_OF_FUEL / MEMORY_LIMIT_EXCEEDED (agreed on by the quorum) raises that
limit by ``escalation_factor`` and starts over, ``escalations_max`` times (the same workers may run it again:
the replay guard remembers one receipt per task, worker *and limits*). When no worker fits, the task queues
(under HASH this peer runs it itself if it fits) and fails after ``queue_timeout_s``.

Verification, per the job's policy: every result's receipt tree is verified offline against the binding the
coordinator issued (signatures, keys, content ids, Merkle roots over the output chunks; this peer's own local
run is one execution receipt, verified as such); then HASH accepts it, SPOT re-runs k random chunks locally
and compares, REPLICAS votes (commit-then-reveal when asked), and ADAPTIVE asks the trust policy per task.
Only checked outcomes feed the trust book.

Replicas: the tally (voting.py) decides how many replicas a task needs (``tally.dispatched``); ``assigned``
holds the workers given the task under it, and any replica not yet given to a worker (too few free workers,
a worker that declined, an escalation) is placed at the next placement, or waits in the queue. A replica
that fails, times out or leaves is a no-show, and the tally's answer to it (wait, add replicas, fail) is
acted on. Under commit-then-reveal every attempt belongs to the *round* that was open when it was placed;
a round's reveals are requested when all its replicas committed, or when every member still out has
committed and nothing more can join it (the others dropped out, or the missing replica waits in the queue).
A committed replica does not time out while it waits for its round; its reveal then has ATTEMPT_GRACE_S.
Replicas placed after a round opened its reveals (an escalation, a late top-up) start a new round.
A decision waits for the reveals already asked for (that work is done; each reveal is graded, so a liar
slower than the honest quorum is still outvoted); replicas still running when it is reached are cancelled.

Invariants: a task is DONE at most once and never changes afterwards; the number of attempts out per task is
at most its replica count; worker faults per task at most ``retries_max`` and unreachable workers at most
``unreachable_max`` (then FAILED with the reason chain);
every effect that expects an answer is correlated by (task_id, worker); the reason chain of a task is
bounded (``REASONS_MAX``).

Cost. A job may hold tens of thousands of tasks and every event ends in a placement round or a ``tick``, so
nothing per event scans all of them. The coordinator keeps:
- ``_out``: the tasks with at least one attempt out (exactly those; deadlines, expiry and departures look
  only here);
- ``_unplaced``: an ordered superset of the tasks that want a placement (not final, and PENDING or with
  replicas the tally counts on not yet given to a worker), cleaned as it is walked; a task whose attempt,
  candidate or vote changed goes back to its front;
- ``_due``: the tasks the next placement round looks at whatever the room: those whose state changed as
  above, whose placement left replicas unplaced (the next round places or queues the rest, as a scan would),
  and those whose timer fired;
- a heap of timers (queue timeout, local fallback, a checked job's re-look at this peer, end of a backoff),
  each live only while the value it was set for is unchanged (stale ones are dropped lazily);
- ``_queued`` (tasks with ``queued_since_s``, for the cool-down expiry wake-up) and a count of DONE tasks.
Index invariant, after every call: a task that wants a placement is in ``_unplaced``, and if it is not
queued it is in ``_due`` or has a live timer (a backoff). A placement round first places the due tasks,
then walks ``_unplaced`` in order only while some worker — or this peer, where placement may pick it —
could take the job's smallest task (free slot, limits, trust floor, not cooling down, not on the path): when
none could, no task can go out, and every task left in the walk is queued with its timers or due, so the
round stops at once. This peer as a checked job's *fallback* is not in that check: a queued task that finds
this peer busy once its fallback delay is over looks at it again every LOCAL_FALLBACK_AFTER_S (a timer).
``next_deadline(now)`` is then ``now`` itself when a timer is due or a task is due for a look (the next
tick takes them all: no busy loop).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import math
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import cid_from_digest
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
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationMode, VerificationPolicy, as_int
from pangea_p2p.core.trust import Outcome, ReplicationPolicy, TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.checks import check_binding
from pangea_p2p.core.verify.commit_reveal import CommitReveal, Phase
from pangea_p2p.core.verify.config import VerifyConfig, check_range
from pangea_p2p.core.verify.execution import verify_receipt
from pangea_p2p.core.verify.format import malformed
from pangea_p2p.core.verify.receipts import Receipt, ReceiptTree, VerifiedTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.core.verify.voting import Claim, Decision, TallyState, VoteTally
from pangea_p2p.errors import FailureKind, RejectReason, RemoteProtocolError, VerificationError

REASONS_MAX = 12
BACKOFF_S_MIN = 0.2
BACKOFF_S_MAX = 30.0
ATTEMPT_GRACE_S = 10.0
OFFER_TIMEOUT_S = 10.0
FUEL_ABSOLUTE_MAX = 10**15
MEMORY_BYTES_ABSOLUTE_MAX = 4 << 30
LOCAL_FALLBACK_AFTER_S = 2.0  # a task that only waits for busy workers runs here after this long
RELOOK_S = 1.0  # while tasks wait in the queue, the workers are looked at again this often (slots free up elsewhere)
ESCALATING = (FailureKind.OUT_OF_FUEL, FailureKind.MEMORY_LIMIT_EXCEEDED)

# Timer kinds (see Cost in the module docstring): a timer is live while the value it was set for is unchanged.
_TIMEOUT, _FALLBACK, _RECHECK, _BACKOFF = 0, 1, 2, 3


@dataclass
class WorkerSource:
    """How a coordinator sees candidate workers: the driver's capacity directory, trust and RTTs."""

    views: Callable[[float], list[scheduler.WorkerView]]
    local: Callable[[float], scheduler.WorkerView | None]


class Reachability:
    """Workers that could not be reached lately, each until its cool-down ends. One per peer, shared by its
    coordinators (like ``inflight``): a worker one job could not dial is not offered another job's tasks either
    until the cool-down is over, or until it is heard from (any answer marks it reachable again). Bounded:
    expired entries are dropped, and at most ``entries_max`` are kept (the soonest to expire go first)."""

    def __init__(self, entries_max: int = 4096) -> None:
        self.entries_max = entries_max
        self._until: dict[str, float] = {}

    def mark_unreachable(self, worker: str, until_s: float) -> None:
        self._until[worker] = max(until_s, self._until.get(worker, until_s))
        if len(self._until) > self.entries_max:
            for w, _ in sorted(self._until.items(), key=lambda kv: (kv[1], kv[0]))[: len(self._until) // 4]:
                del self._until[w]

    def mark_reachable(self, worker: str) -> None:
        self._until.pop(worker, None)

    def cooling(self, now: float) -> frozenset[str]:
        """The workers still in their cool-down at ``now`` (expired ones are forgotten)."""
        if not self._until:
            return frozenset()
        expired = [w for w, t in self._until.items() if t <= now]
        for w in expired:
            del self._until[w]
        return frozenset(self._until)

    def next_expiry(self, now: float) -> float | None:
        return min((t for t in self._until.values() if t > now), default=None)


@dataclass
class Attempt:
    worker: str
    limits: ReceiptLimits
    deadline_s: float
    accepted: bool = False
    committed: bool = False
    local: bool = False
    round: CommitReveal | None = None  # the commit-reveal round it commits and reveals in
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
    tree_bytes: bytes = b""  # the tree as received (re-encoded when empty)


@dataclass
class TaskEntry:
    ref: TaskRef
    state: TaskState = TaskState.PENDING
    limits: ReceiptLimits | None = None
    attempts: dict[str, Attempt] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)  # workers given the task in this round (the tally's voters)
    failures: int = 0  # worker faults: timeouts, crashes, wrong or unverifiable answers (bounded by retries_max)
    unreachable: int = 0  # workers that could not be reached (bounded by unreachable_max, not retries_max)
    escalations: int = 0
    not_before_s: float = 0.0
    queued_since_s: float | None = None
    fallback_at_s: float | None = None  # when this peer runs it itself if no busy worker freed up by then
    fallback_check_s: float | None = None  # when a queued task of a checked job looks at this peer again (busy)
    tally: VoteTally | None = None
    reveal: CommitReveal | None = None  # the round replicas placed now join (earlier ones keep theirs)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    replicas: int = 1
    spot_checks: int = 0
    checked: bool = False
    reasons: deque[str] = field(default_factory=lambda: deque(maxlen=REASONS_MAX))
    output_cid: str = ""
    tree: bytes = b""
    fuel_used: int = 0
    worker: str = ""
    ref_cache: TaskRef | None = None  # _ref's answer for the current limits and round (a replace costs ~15 us)
    binding_cache: TaskBinding | None = None  # binding()'s, for the limits it names


class TaskView:
    """A read-only view of one task of a coordinator: what its driver, the API and checkers may read."""

    __slots__ = ("_e", "policy")

    def __init__(self, entry: TaskEntry, policy: VerificationPolicy) -> None:
        self._e = entry
        self.policy = policy

    @property
    def ref(self) -> TaskRef:
        return self._e.ref

    @property
    def task_id(self) -> str:
        return self._e.ref.task_id

    @property
    def state(self) -> TaskState:
        return self._e.state

    @property
    def limits(self) -> ReceiptLimits:
        return self._e.limits or self._e.ref.limits

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(self._e.reasons)

    @property
    def output_cid(self) -> str:
        return self._e.output_cid

    @property
    def tree(self) -> bytes:
        return self._e.tree

    @property
    def fuel_used(self) -> int:
        return self._e.fuel_used

    @property
    def worker(self) -> str:
        return self._e.worker

    @property
    def checked(self) -> bool:
        return self._e.checked

    @property
    def spot_checks(self) -> int:
        return self._e.spot_checks

    @property
    def vote(self) -> VoteView | None:
        """The task's vote (replicas), if it has one."""
        tally = self._e.tally
        return None if tally is None else VoteView(tally)


class VoteView:
    """A read-only view of a task's vote."""

    __slots__ = ("_t",)

    def __init__(self, tally: VoteTally) -> None:
        self._t = tally

    @property
    def votes(self) -> dict[str, Claim]:
        return dict(self._t.votes)

    @property
    def accepted(self) -> Claim | None:
        return self._t.accepted

    @property
    def quorum(self) -> int:
        return self._t.quorum

    @property
    def state(self) -> TallyState:
        return self._t.state


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    scheduler: scheduler.SchedulerConfig = field(default_factory=scheduler.SchedulerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    timeout_factor: float = 3.0  # an attempt may take this many times its expected duration, plus the grace
    unreachable_max: int = 16  # a task fails after this many unreachable workers (a partition that never heals)
    unreachable_cooldown_s: float = 20.0  # a worker that could not be reached gets no task for this long

    def __post_init__(self) -> None:
        check_range("timeout_factor", self.timeout_factor, 1.0, 1000.0)
        as_int("unreachable_max", self.unreachable_max, 0, 100_000)
        check_range("unreachable_cooldown_s", self.unreachable_cooldown_s, 0.0, 86400.0)


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
        reachability: Reachability | None = None,
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
        self.reachability = reachability if reachability is not None else Reachability()
        self.replication = ReplicationPolicy(trust)
        self.tasks: dict[str, TaskEntry] = {t.task_id: TaskEntry(t, limits=t.limits) for t in tasks}
        # Placement indexes (see Cost in the module docstring).
        self._out: dict[str, TaskEntry] = {}  # tasks with at least one attempt out
        self._unplaced: OrderedDict[str, TaskEntry] = OrderedDict(self.tasks)  # superset of those wanting placement
        self._due: dict[str, None] = dict.fromkeys(self.tasks)  # looked at by the next placement round, room or not
        self._queued: set[str] = set()  # tasks with queued_since_s set (not DONE)
        self._timers: list[tuple[float, str, int]] = []  # heap of (when, task id, kind)
        self._done = 0  # tasks DONE
        self._walking = False  # a placement walk is iterating _unplaced (moves to its front are deferred)
        self._deferred: list[TaskEntry] = []
        self._looked_s = -math.inf  # when the last placement round ran
        # A task as small as any of ours, on the path they all share: a worker that cannot take it can take none
        # of them (limits only grow, by escalation), which makes the "any room?" check job-wide.
        self._probe = _probe(tasks)
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
        self._queued.discard(task_id)
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

    def next_deadline(self, now: float = -math.inf) -> float | None:
        """When ``tick`` next has something to do (None: only events can move it): after ``now``, or ``now``
        itself when a timer is due or a task waits for its look at the next placement round (the next tick
        takes them all: no busy loop)."""
        if self.state is not JobState.RUNNING:
            return None
        times = [a.deadline_s for e in self._out.values() for a in e.attempts.values() if now < a.deadline_s]
        while self._timers and not self._live(self._timers[0]):
            heapq.heappop(self._timers)  # stale: the value it was set for changed
        if self._timers:
            times.append(max(now, self._timers[0][0]))
        if self._queued:  # waiting for a worker: look again in a while (a slot frees up, a worker appears), or
            times.append(max(now, self._looked_s + RELOOK_S))  # when a worker's cool-down ends
            expiry = self.reachability.next_expiry(now)
            if expiry is not None:
                times.append(expiry)
        times.extend(max(now, e.not_before_s) for e in map(self.tasks.__getitem__, self._due) if self._may_want(e))
        return min((t for t in times if t < math.inf), default=None)

    def _timer(self, when: float, entry: TaskEntry, kind: int) -> None:
        heapq.heappush(self._timers, (when, entry.ref.task_id, kind))

    def _live(self, timer: tuple[float, str, int]) -> bool:
        """Whether ``timer`` still stands for something: the value it was set for is unchanged (a queue timeout
        counts only while no attempt is out: ``_end_attempt`` sets it again when the last one ends)."""
        when, task_id, kind = timer
        e = self.tasks[task_id]
        if e.state.final:
            return False
        if kind == _BACKOFF:
            return e.not_before_s == when
        if kind == _TIMEOUT:
            return e.queued_since_s is not None and not e.attempts and e.queued_since_s + self.queue_timeout_s == when
        if kind == _FALLBACK:
            return e.queued_since_s is not None and e.fallback_at_s == when
        return e.queued_since_s is not None and e.fallback_check_s == when

    # --- placement --------------------------------------------------------------------------------------

    def _place_pending(self, now: float) -> None:
        """Place what wants placing (see Cost in the module docstring): first the tasks due for a look (their
        timers fired, their state changed, or a placement left replicas unplaced), whatever the room; then the
        others in ``_unplaced`` order while some worker (or this peer) has room for our smallest task."""
        if self.state is not JobState.RUNNING:
            return
        self._looked_s = now
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if self._live(timer):
                self._due[timer[1]] = None
        if not self._due and not self._unplaced:
            return
        workers: list[scheduler.WorkerView] | None = None
        looked: set[str] = set()
        again: list[str] = []  # placed in part: looked at again by the next round (as a full scan would)
        due, self._due = self._due, {}
        for task_id in due:
            entry = self.tasks[task_id]
            if self.state is not JobState.RUNNING or not self._wants_placement(entry, now):
                continue
            if workers is None:
                workers = self.source.views(now)
            workers = self._place_and_look(entry, workers, now)
            looked.add(task_id)
            if self._wants_placement(entry, now) and entry.queued_since_s is None:
                again.append(task_id)
        if self._unplaced and self.state is JobState.RUNNING:
            self._walk_unplaced(workers, looked, again, now)
        for task_id in again:
            self._due[task_id] = None

    def _walk_unplaced(self, workers: list[scheduler.WorkerView] | None, looked: set[str], again: list[str],
                       now: float) -> None:
        """Walk ``_unplaced`` in order while there is room, dropping the tasks that want no placement (the
        workers are looked at only once a task wants placing)."""
        drop: list[str] = []
        room: bool | None = None
        self._walking = True
        try:
            for task_id, entry in self._unplaced.items():
                if not self._may_want(entry):
                    drop.append(task_id)
                    continue
                if entry.not_before_s > now or task_id in looked:
                    continue  # backing off (its timer brings it back), or placed by this round already
                if workers is None:
                    workers = self.source.views(now)
                if room is None:
                    room = self._room(workers, now)
                if not room:
                    break  # everything from here on is queued, or due for a look (see Cost)
                before = workers
                workers = self._place_and_look(entry, workers, now)
                if self.state is not JobState.RUNNING:
                    break
                if workers is not before:
                    room = self._room(workers, now)
                if not self._may_want(entry):
                    drop.append(task_id)
                elif entry.queued_since_s is None and entry.not_before_s <= now:
                    again.append(task_id)
        finally:
            self._walking = False
        for task_id in drop:
            if not self._may_want(self.tasks[task_id]):
                self._unplaced.pop(task_id, None)
        deferred, self._deferred = self._deferred, []
        for entry in deferred:
            self._reconsider(entry)

    def _reconsider(self, entry: TaskEntry) -> None:
        """``entry`` may want a placement now: to the front of ``_unplaced``, and due for a look at the next
        placement round (whatever the room: it is placed or queued with its reason and timers)."""
        if self._walking:  # not while a walk iterates _unplaced
            self._deferred.append(entry)
            return
        task_id = entry.ref.task_id
        self._unplaced[task_id] = entry
        self._unplaced.move_to_end(task_id, last=False)
        self._due[task_id] = None

    def _may_want(self, entry: TaskEntry) -> bool:
        """Whether ``entry`` wants a placement, now or when its backoff ends."""
        return not entry.state.final and (entry.state is TaskState.PENDING or self._replicas_missing(entry) > 0)

    def _wants_placement(self, entry: TaskEntry, now: float) -> bool:
        return entry.not_before_s <= now and self._may_want(entry)

    def _place_and_look(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float
                        ) -> list[scheduler.WorkerView]:
        """Place ``entry``; the worker views afresh if that put an attempt out (it changed what is where)."""
        before = len(entry.attempts)
        self._place(entry, workers, now)
        return self.source.views(now) if len(entry.attempts) != before else workers

    def _room(self, workers: list[scheduler.WorkerView], now: float) -> bool:
        """Whether some worker, or this peer where placement may pick it, could take one of our tasks now: a
        free slot, enough trust, limits that fit our smallest task, not cooling down, not on the path (else no
        task can go out). This peer as a checked job's fallback does not count: waiting tasks look at it on
        their own timers."""
        probe, cfg = self._probe, self.config.scheduler
        if probe is None:
            return False
        cooling = self.reachability.cooling(now)
        if any(scheduler.ineligible(probe, w, cfg) is None for w in workers
               if w.peer_id not in probe.path and w.peer_id not in cooling):
            return True
        local = self.source.local(now) if self._local_allowed() else None
        return local is not None and scheduler.ineligible(probe, local, cfg) is None

    def _place(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float) -> None:
        ref = self._ref(entry)
        wanted = self._replicas_wanted(entry)
        local = self.source.local(now) if self._local_allowed() else None
        # Replicas of a vote (also a single top-up) are independent random draws, not the best-ranked workers:
        # a party that lies about its speed must not get every replica of a task (see scheduler.py).
        req = scheduler.PlaceRequest(
            ref, self._fuel(ref), workers, local, frozenset(self._busy_with(entry)) | self.reachability.cooling(now),
            replicas=wanted, may_split=False, rng=self.rng if entry.tally is not None else None,
        )
        placement = scheduler.place(req, self.config.scheduler)
        if placement.kind == "delegate":
            if entry.reveal is not None and entry.reveal.phase is not Phase.COMMITTING:
                entry.reveal = self._reveal_round(entry, len(placement.workers))  # too late to join that one
            views = {w.peer_id: w for w in workers if w.peer_id in placement.workers}
            for worker in placement.workers:
                self._dispatch(entry, ref, worker, views.get(worker), now)
        elif placement.kind == "local":
            self._run_local(entry, ref, now, placement.reason)
        else:
            self._queue(entry, ref, placement.reason, workers, now)

    def _busy_with(self, entry: TaskEntry) -> set[str]:
        """Workers that must not get (another replica of) this task: excluded, given it in this round, out with
        it, or already voted: never two replicas of a task on one worker."""
        done = set(entry.tally.votes) if entry.tally is not None else set()
        return entry.excluded | entry.assigned | set(entry.attempts) | set(entry.candidates) | done

    def _queue(self, entry: TaskEntry, ref: TaskRef, why: str, workers: list[scheduler.WorkerView],
               now: float) -> None:
        local = self.source.local(now) if self.local_allowed and self.self_id not in entry.attempts else None
        if local is not None and scheduler.ineligible(ref, local, self.config.scheduler) is None:
            # Run it here (this peer trusts its own result; it settles a vote that lacks workers, see on_result)
            # at once if nothing is under way and no known worker could ever take it, else after a short wait
            # for busy workers to free up. Under checked policies only when nothing else is left to do.
            idle = not entry.attempts and not entry.candidates and (entry.tally is None or not entry.tally.votes)
            excluded = self._busy_with(entry)
            could = any(
                scheduler.ineligible(ref, w, self.config.scheduler, busy_ok=True) is None
                for w in workers if w.peer_id not in excluded and w.peer_id not in ref.path
            )
            if entry.fallback_at_s is None:
                entry.fallback_at_s = now + LOCAL_FALLBACK_AFTER_S
                self._timer(entry.fallback_at_s, entry, _FALLBACK)
            if (idle and not could) or now >= entry.fallback_at_s:
                self._run_local(entry, ref, now, f"local fallback: {why}")
                return
        elif (local is not None and not self._local_allowed() and now >= (entry.fallback_check_s or -math.inf)
              and scheduler.ineligible(ref, local, self.config.scheduler, busy_ok=True) is None
              and (entry.fallback_at_s is None or now >= entry.fallback_at_s)):
            # A checked job's task that could run here once this peer has a free slot: as this peer's slots are
            # not part of the "any room?" check (see Cost), it looks again in a while (not on every event).
            entry.fallback_check_s = now + LOCAL_FALLBACK_AFTER_S
            self._timer(entry.fallback_check_s, entry, _RECHECK)
        if entry.queued_since_s is None:
            entry.queued_since_s = now
            self._queued.add(entry.ref.task_id)
            self._timer(now + self.queue_timeout_s, entry, _TIMEOUT)
            self._note(entry, f"queued: {why}")
            self._update(entry, reason=why)
            self._maybe_open_reveals(entry, now)
        elif now >= entry.queued_since_s + self.queue_timeout_s and not entry.attempts:
            self._fail(entry, f"no worker within the {self.queue_timeout_s:g} s queue timeout: {why}", now)

    def _replicas_wanted(self, entry: TaskEntry) -> int:
        return max(1, self._replicas_missing(entry))

    def _replicas_missing(self, entry: TaskEntry) -> int:
        """Replicas the tally counts on that were not given to any worker yet (none without a tally)."""
        return 0 if entry.tally is None else entry.tally.dispatched - len(entry.assigned)

    def _local_allowed(self) -> bool:
        # Checked modes verify other peers; this peer runs tasks itself only as a fallback (and trusts itself).
        return self.local_allowed and self.policy.mode is VerificationMode.HASH

    def _ref(self, entry: TaskEntry) -> TaskRef:
        """The task as it goes out now: its current limits, and commit-reveal if a round is open."""
        assert entry.limits is not None
        commit_reveal, cached = self._commit_reveal(entry), entry.ref_cache
        if cached is None or cached.limits != entry.limits or cached.commit_reveal is not commit_reveal:
            cached = entry.ref_cache = replace(entry.ref, limits=entry.limits, commit_reveal=commit_reveal)
        return cached

    def _commit_reveal(self, entry: TaskEntry) -> bool:
        return entry.reveal is not None  # a commit-reveal round is open for the replicas placed now

    def _fuel(self, ref: TaskRef) -> float:
        learned = sum(self._fuel_per_chunk) / len(self._fuel_per_chunk) if self._fuel_per_chunk else None
        return scheduler.fuel_estimate(ref, learned)

    def _dispatch(self, entry: TaskEntry, ref: TaskRef, worker: str, view: scheduler.WorkerView | None,
                  now: float) -> None:
        fuel = self._fuel(ref)
        expected = scheduler.expected_s(ref, fuel, view, self.config.scheduler) if view else 1.0
        budget = min(expected * self.config.timeout_factor, ref.chunk_count * ref.limits.wall_time_s)
        deadline = min(now + OFFER_TIMEOUT_S + ATTEMPT_GRACE_S + budget, max(ref.deadline_s, now + 1.0))
        entry.attempts[worker] = Attempt(worker, ref.limits, deadline, round=entry.reveal)
        entry.assigned.add(worker)
        self._started(entry)
        self.inflight[worker] = self.inflight.get(worker, 0) + 1
        if entry.tally is not None:
            entry.tally.add_workers([worker])
        if entry.reveal is not None:  # its round waits for its commitment too
            r = entry.reveal
            r.add_workers([worker])
            r.commitments_needed = max(r.commitments_needed, sum(1 for a in entry.attempts.values() if a.round is r))
        self._note(entry, f"sent to {worker} (attempt {entry.failures + 1}, expected {expected:.3f} s)")
        self._effects.append(Dispatch(ref, worker))
        self._update(entry, worker=worker)

    def _run_local(self, entry: TaskEntry, ref: TaskRef, now: float, why: str) -> None:
        deadline = now + ATTEMPT_GRACE_S + ref.chunk_count * ref.limits.wall_time_s
        entry.attempts[self.self_id] = Attempt(self.self_id, ref.limits, deadline, accepted=True, local=True)
        self._started(entry)
        self.inflight[self.self_id] = self.inflight.get(self.self_id, 0) + 1
        self._note(entry, why)
        self._effects.append(RunLocal(ref))
        self._update(entry, worker=self.self_id)

    def _started(self, entry: TaskEntry) -> None:
        """An attempt of ``entry`` went out: it runs, and waits in the queue no more."""
        entry.state, entry.queued_since_s, entry.fallback_at_s, entry.fallback_check_s = (
            TaskState.RUNNING, None, None, None)
        self._out[entry.ref.task_id] = entry
        self._queued.discard(entry.ref.task_id)

    def _end_attempt(self, entry: TaskEntry, worker: str) -> Attempt | None:
        attempt = entry.attempts.pop(worker, None)
        if attempt is None:
            return None
        if not entry.attempts:
            self._out.pop(entry.ref.task_id, None)
            if entry.queued_since_s is not None:  # its queue timeout counts again (see _live)
                self._timer(entry.queued_since_s + self.queue_timeout_s, entry, _TIMEOUT)
        self._reconsider(entry)  # it may want another attempt now
        self._uncount(attempt)
        return attempt

    def _call_off(self, entry: TaskEntry) -> None:
        """End every attempt of ``entry``; the workers running one are told to stop."""
        for worker in list(entry.attempts):
            attempt = self._end_attempt(entry, worker)
            if attempt is not None and not attempt.local:
                self._effects.append(CancelAttempt(entry.ref.task_id, worker))

    def _backoff(self, misses: int) -> float:
        """How long a task waits before it is placed again after ``misses`` failed or unreachable attempts."""
        return min(BACKOFF_S_MAX, BACKOFF_S_MIN * 2.0 ** max(0, misses - 1)) * (0.5 + self.rng.random())

    def _uncount(self, attempt: Attempt) -> None:
        """The attempt no longer occupies a slot of its worker (it ended, or committed and only waits)."""
        if attempt.counted:
            attempt.counted = False
            left = self.inflight.get(attempt.worker, 1) - 1
            if left > 0:
                self.inflight[attempt.worker] = left
            else:
                self.inflight.pop(attempt.worker, None)

    # --- answers to effects -----------------------------------------------------------------------------

    def on_accepted(self, task_id: str, worker: str, now: float) -> list[Effect]:
        self._heard_from(worker)
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry else None
        if attempt is not None:
            attempt.accepted = True
        return self.drain()

    def on_rejected(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker declined the offer (full, limits, depth): try elsewhere, not a fault, no penalty."""
        self._heard_from(worker)
        entry = self.tasks.get(task_id)
        attempt = self._end_attempt(entry, worker) if entry is not None else None
        if entry is None or attempt is None:
            return self.drain()
        if attempt.committed:  # it took part in a vote round already: a no-show, not a free retry
            self._attempt_failed(entry, worker, f"{worker} declined after committing: {reason}", now, penalise=False)
            return self.drain()
        entry.excluded.add(worker)
        entry.assigned.discard(worker)  # it never ran it: the replica is placed again
        self._note(entry, f"{worker} declined: {reason}")
        self._after_attempt(entry, now)
        return self.drain()

    def on_transport_error(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker could not be reached or the stream broke: not a fault of the worker (a partition, a
        crash), so it costs no retry and no trust; the worker cools down for every task, and the replica is
        placed again (a committed replica that can no longer reveal is a no-show of its vote)."""
        entry = self.tasks.get(task_id)
        attempt = self._end_attempt(entry, worker) if entry is not None else None
        if entry is None or attempt is None:
            return self.drain()
        self._unreachable(entry, worker, attempt, f"{worker} unreachable: {reason}", now)
        return self.drain()

    def _unreachable(self, entry: TaskEntry, worker: str, attempt: Attempt, why: str, now: float) -> None:
        """``worker`` could not be reached (its attempt has ended): cool it down, place the replica again."""
        self.reachability.mark_unreachable(worker, now + self.config.unreachable_cooldown_s)
        self._note(entry, why)
        tally = entry.tally
        if attempt.committed and tally is not None and self._decided_awaiting_reveals(entry):
            with contextlib.suppress(VerificationError):  # only its reveal was awaited: nothing to place again
                self._on_decision(entry, tally.add_no_show(worker), now)
            self._after_attempt(entry, now)
            return
        entry.unreachable += 1
        if entry.unreachable > self.config.unreachable_max:
            self._fail(entry, f"gave up after {entry.unreachable} unreachable workers "
                              f"(unreachable_max {self.config.unreachable_max})", now)
            return
        if attempt.committed and entry.tally is not None:
            with contextlib.suppress(VerificationError):
                self._on_decision(entry, entry.tally.add_no_show(worker), now)
        else:
            entry.assigned.discard(worker)  # it never answered: the replica is placed again
        # back off before placing it again even while other replicas are out (a partition would otherwise use
        # up the budget one dial timeout after another)
        backoff = self._backoff(entry.unreachable)
        if now + backoff > entry.not_before_s:
            entry.not_before_s = now + backoff
            self._timer(entry.not_before_s, entry, _BACKOFF)
        self._after_attempt(entry, now)

    def _heard_from(self, worker: str) -> None:
        self.reachability.mark_reachable(worker)

    def on_peer_gone(self, worker: str, now: float) -> list[Effect]:
        """``worker`` left (its advert expired or its connection dropped): reassign what it had."""
        for entry in list(self._out.values()):
            if worker in entry.attempts and not entry.attempts[worker].local:
                self._end_attempt(entry, worker)
                self._attempt_failed(entry, worker, f"{worker} left the network", now, penalise=False)
        return self.drain()

    def on_commitment(self, task_id: str, worker: str, digest: bytes, now: float) -> list[Effect]:
        self._heard_from(worker)
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry is not None else None
        if entry is None or attempt is None or attempt.round is None:
            return self.drain()
        r = attempt.round
        try:
            to_reveal = r.add_commitment(worker, digest)
        except VerificationError as exc:
            self._end_attempt(entry, worker)
            self._attempt_failed(entry, worker, f"{worker}: {exc}", now, penalise=True)
            return self.drain()
        attempt.committed = True
        attempt.accepted = True  # a commitment answers the offer too (a worker may skip TaskAccepted)
        # its work is done: it waits for the round (its reveal then gets ATTEMPT_GRACE_S), within the job deadline
        attempt.deadline_s = max(attempt.deadline_s, entry.ref.deadline_s)
        self._uncount(attempt)  # and its slot is free again (the worker releases it when it commits)
        self._note(entry, f"{len(r.committed)} of {r.commitments_needed} commitments received")
        self._request_reveals(entry, r, to_reveal, now)
        self._maybe_open_reveals(entry, now)
        return self.drain()

    def _request_reveals(self, entry: TaskEntry, r: CommitReveal, workers: list[str], now: float) -> None:
        for w in workers:
            attempt = entry.attempts.get(w)
            if attempt is not None and attempt.round is r:  # not those that dropped out since they committed
                attempt.deadline_s = now + ATTEMPT_GRACE_S
                self._effects.append(RequestReveal(entry.ref.task_id, w))

    def _maybe_open_reveals(self, entry: TaskEntry, now: float) -> None:
        """Open the current round's reveals without the replicas that dropped out of it: once every replica of
        the round still out has committed and no replica is left to place (or the one left waits in the
        queue), nobody else will commit in it."""
        r = entry.reveal
        if r is None or r.phase is not Phase.COMMITTING or not r.committed or entry.state.final:
            return
        if not all(a.committed for a in entry.attempts.values() if a.round is r):
            return
        if self._replicas_missing(entry) > 0 and entry.queued_since_s is None:
            return
        self._note(entry, f"opening the reveals with {len(r.committed)} of {r.commitments_needed} commitments")
        self._request_reveals(entry, r, r.open_reveals(), now)

    def on_result(
        self, task_id: str, worker: str, tree_bytes: bytes, output: bytes, now: float, nonce: bytes = b"",
        *, own: ReceiptTree | None = None,
    ) -> list[Effect]:
        """A result: ``tree_bytes`` is the encoded receipt tree, ``output`` the framed output chunks. ``own``:
        the tree itself, for this peer's own local run (the driver signed it over the sandbox's output a moment
        ago): its signature and output digest are then not checked again (it is still bound, recorded by the
        replay guard and journaled as signed, so it verifies offline like any other receipt)."""
        self._heard_from(worker)
        entry = self.tasks.get(task_id)
        if entry is None or entry.state.final:
            return self.drain()
        attempt = entry.attempts.get(worker)
        if attempt is None:
            return self.drain()
        own = own if attempt.local else None
        try:
            tree = own or ReceiptTree.decode(tree_bytes, self.config.verify)
        except (VerificationError, RemoteProtocolError):
            tree = None  # verified (and refused) below
        if tree is not None and tree.receipt.binding.limits != attempt.limits:
            # the answer to an earlier attempt of this worker under the limits before an escalation, overtaken
            # by its CancelAttempt: stale, not a lie (a wrong binding under the attempt's own limits still is)
            self._note(entry, f"ignored a stale result of {worker} for the limits before an escalation")
            return self.drain()
        self._end_attempt(entry, worker)
        try:
            tree, verified, claim = self._verify(entry, attempt, worker, tree_bytes, output, now, nonce, tree,
                                                 own=own is not None)
        except (VerificationError, RemoteProtocolError) as exc:
            self._attempt_failed(entry, worker, f"{worker} sent a result that failed verification: {exc}", now,
                                 penalise=True)
            return self.drain()
        if claim is None or claim.failure is not None:
            self._on_signed_failure(entry, worker, verified, claim, now)
            return self.drain()
        self._learn_fuel(entry, tree.receipt.fuel_used)
        candidate = Candidate(worker, tree, output, claim, verified.signers, tree_bytes=tree_bytes if own else b"")
        if attempt.local:  # this peer's own answer: it settles the task, and grades the replicas that answered
            for other in entry.candidates.values():
                self.trust.record(other.worker, Outcome.VALID if other.claim == claim else Outcome.INVALID, now)
                if other.claim != claim:
                    self._note(entry, f"{other.worker}'s answer differs from this peer's own run")
            self._accept(entry, candidate, now, checked=bool(entry.candidates))
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

    def on_spot_result(
        self, task_id: str, chunk_index: int, output_chunk: bytes | None, now: float, inconclusive: str = ""
    ) -> list[Effect]:
        """This peer's re-execution of one chunk: its output, or None when the guest failed here (a trap, which
        the worker's success contradicts). ``inconclusive`` names why the re-execution could not say anything
        (this peer timed out, was full, could not fetch the input): the result is then accepted unchecked,
        and nobody's trust changes."""
        entry = self.tasks.get(task_id)
        if entry is None or entry.state is not TaskState.VERIFYING:
            return self.drain()
        for candidate in list(entry.candidates.values()):
            if chunk_index not in candidate.spot_pending:
                continue
            candidate.spot_pending.discard(chunk_index)
            if inconclusive:
                self._note(entry, f"spot check of chunk {chunk_index} inconclusive here ({inconclusive}): "
                                  f"{candidate.worker}'s result accepted unchecked")
                self._accept(entry, candidate, now, checked=False)
                continue
            theirs = unframe_chunks(candidate.output)[chunk_index]
            if output_chunk is None or theirs != output_chunk:
                del entry.candidates[candidate.worker]
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
        if self.state is not JobState.RUNNING:
            return self.drain()
        self._cancel_tasks(now, reason)
        self._finish(JobState.CANCELLED, reason, now)
        return self.drain()

    def _cancel_tasks(self, now: float, reason: str) -> None:
        """Every task not final: its attempts called off, CANCELLED."""
        for entry in self.tasks.values():
            if not entry.state.final:
                self._call_off(entry)
                entry.state = TaskState.CANCELLED
                self._note(entry, reason)
                self._update(entry, reason=reason)

    # --- verification -----------------------------------------------------------------------------------

    def binding(self, entry: TaskEntry, limits: ReceiptLimits) -> TaskBinding:
        cached = entry.binding_cache  # one per task and limits: every result of the task is checked against it
        if cached is None or cached.limits != limits:
            cached = entry.binding_cache = entry.ref.binding(limits, issuer=self.self_id)
        return cached

    def _verify(
        self, entry: TaskEntry, attempt: Attempt, worker: str, tree_bytes: bytes, output: bytes, now: float,
        nonce: bytes, decoded: ReceiptTree | None, *, own: bool,
    ) -> tuple[ReceiptTree, VerifiedTree, Claim | None]:
        """``decoded``: ``tree_bytes`` decoded already (None: they did not decode, and this raises why); ``own``:
        it is the tree this peer signed for its own local run (see on_result)."""
        tree = decoded or ReceiptTree.decode(tree_bytes, self.config.verify)
        binding = self.binding(entry, attempt.limits)
        out = output if tree.receipt.ok else None
        if own:  # this peer's own run, signed here over the sandbox's output: bound, not re-verified
            r = tree.receipt
            if not isinstance(r, Receipt) or tree.children or r.worker != worker:
                raise malformed("a local run answers with one execution receipt of this peer")
            check_binding(r.binding, binding)
            verified = VerifiedTree.of_receipt(r)
        elif attempt.local:  # this peer's own run: the issuer signed the leaf, which verify_tree calls a cycle
            if not isinstance(tree.receipt, Receipt) or tree.children:
                raise malformed("a local run answers with one execution receipt")
            verified = verify_receipt(tree.receipt, binding, now, self.config.verify, worker=worker, output=out)
        else:
            verified = verify_tree(tree, binding, now, self.config.verify, worker=worker, output=out)
        claim = Claim.from_tree(verified)
        if attempt.round is not None and claim is not None:  # a no-show (crash, timeout) has nothing to reveal
            if not attempt.committed:
                raise VerificationError(RejectReason.OUT_OF_PHASE, f"{worker} sent its result without committing first")
            attempt.round.add_reveal(worker, claim, nonce)
        root = verified.root
        # One accepted receipt per (task, worker) *and limits*: after an escalation the same worker may run the
        # task again under the raised limits (an old receipt cannot pass for it: its binding names the old ones).
        lim = root.binding.limits
        key = hashlib.sha256(root.replay_key + struct.pack(
            ">QQdQ", lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max)).digest()
        self.guard.check_and_record(key, root.issued_at_s, now, "receipt root")
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
        entry.assigned = set(workers)
        if self.policy.commit_reveal and replicas > len(workers):  # a round for the replicas placed now
            entry.reveal = self._reveal_round(entry, replicas - len(workers))
        entry.state = TaskState.VERIFYING
        self._reconsider(entry)
        self._update(entry)
        self._place_pending_one(entry, now)

    def _reveal_round(self, entry: TaskEntry, replicas: int) -> CommitReveal:
        # commitments_min 1: a round can open without a replica that dropped out (see _maybe_open_reveals)
        return CommitReveal(entry.ref.job_id, entry.ref.task_id, replicas, commitments_min=1)

    def _place_pending_one(self, entry: TaskEntry, now: float) -> None:
        if self._replicas_missing(entry) > 0:
            self._place(entry, self.source.views(now), now)
            if self._replicas_missing(entry) > 0 and entry.queued_since_s is None:
                self._due[entry.ref.task_id] = None  # placed in part: the rest at the next round

    def _vote(
        self, entry: TaskEntry, worker: str, claim: Claim | None, now: float, signers: frozenset[str] = frozenset()
    ) -> None:
        assert entry.tally is not None
        try:
            if claim is not None:
                decision = entry.tally.add_vote(worker, claim, signers)
            else:
                decision = entry.tally.add_no_show(worker)
        except VerificationError as exc:  # e.g. its tree shares a signer with another vote: it counts as a no-show
            entry.candidates.pop(worker, None)
            self._attempt_failed(entry, worker, f"vote of {worker} refused: {exc}", now, penalise=False)
            return
        cast = len(entry.tally.votes)
        self._note(entry, f"{cast} of {entry.tally.dispatched} replicas answered")
        self._on_decision(entry, decision, now)

    def _on_decision(self, entry: TaskEntry, decision: Decision, now: float) -> None:
        assert entry.tally is not None
        if decision.state is TallyState.ACCEPTED and decision.accepted is not None:
            if self._reveals_due(entry):
                # Replicas that committed and were asked to reveal did the work already: their reveals (a round
                # trip away, within ATTEMPT_GRACE_S) are graded against the decision before the task is done.
                # Else a liar slower than the honest quorum would never be outvoted, nor lose trust.
                entry.state = TaskState.VERIFYING
                return
            for w in entry.tally.agreeing():
                self.trust.record(w, Outcome.VALID, now)
            for w in entry.tally.dissenting():
                self.trust.record(w, Outcome.INVALID, now)
                self._note(entry, f"{w} was outvoted")
            self._decided(entry, decision.accepted, now)
        elif decision.state is TallyState.FAILED:
            self._fail(entry, f"replicas disagree and no answer reached a quorum ({decision.reason})", now)
        elif decision.replicas_to_add > 0:
            entry.replicas = entry.tally.dispatched
            if entry.reveal is not None:  # the added replicas commit and reveal in a round of their own
                entry.reveal = self._reveal_round(entry, decision.replicas_to_add)
            self._note(entry, f"replicas disagree: {decision.replicas_to_add} more replica(s)")
            self._reconsider(entry)
            self._place_pending_one(entry, now)
        elif entry.tally.votes:
            entry.state = TaskState.VERIFYING

    @staticmethod
    def _decided_awaiting_reveals(entry: TaskEntry) -> bool:
        """Whether the task's vote is decided and it waits only for reveals to grade (see _on_decision): a replica
        lost then costs the task no retry and is not placed again."""
        return entry.tally is not None and entry.tally.state is TallyState.ACCEPTED and not entry.state.final

    @staticmethod
    def _reveals_due(entry: TaskEntry) -> bool:
        """Whether a replica that committed was asked to reveal and has not answered yet."""
        return any(a.committed and a.round is not None and a.round.phase is Phase.REVEALING
                   for a in entry.attempts.values())

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
            self._note(entry, f"{why}: raising {what} (escalation {entry.escalations} of {self.escalations_max})")
            self._reset(entry, now)
            return
        self._fail(entry, f"{why} (deterministic: retrying elsewhere would give the same)", now)

    def _accept(self, entry: TaskEntry, candidate: Candidate, now: float, *, checked: bool) -> None:
        self._call_off(entry)  # replicas still out are not needed
        receipt = candidate.tree.receipt
        if entry.state is not TaskState.DONE:
            self._done += 1
        self._queued.discard(entry.ref.task_id)
        entry.state, entry.checked = TaskState.DONE, checked
        entry.output_cid = _output_cid(candidate)
        entry.tree = candidate.tree_bytes or candidate.tree.encode()
        entry.fuel_used, entry.worker = receipt.fuel_used, candidate.worker
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
        decision: Decision | None = None
        if entry.tally is not None and not entry.state.final:
            with contextlib.suppress(VerificationError):  # it voted already: its vote stands
                decision = entry.tally.add_no_show(worker)
        if self._decided_awaiting_reveals(entry):  # only its reveal was awaited: the task needs no retry
            assert decision is not None
            self._on_decision(entry, decision, now)
            self._after_attempt(entry, now)
            return
        entry.failures += 1
        if entry.failures > self.retries_max:
            self._fail(entry, f"gave up after {entry.failures} failed attempts (retries_max {self.retries_max})", now)
            return
        if decision is not None:  # the no-show may complete the round: more replicas, or no quorum possible
            self._on_decision(entry, decision, now)
        self._after_attempt(entry, now)

    def _after_attempt(self, entry: TaskEntry, now: float) -> None:
        if entry.state.final:
            return
        if not entry.attempts and not entry.candidates:
            misses = entry.failures + entry.unreachable
            backoff = self._backoff(misses)
            entry.state, entry.not_before_s = TaskState.PENDING, now + (backoff if misses else 0.0)
            if misses:
                self._timer(entry.not_before_s, entry, _BACKOFF)
            self._update(entry)
        self._reconsider(entry)
        self._maybe_open_reveals(entry, now)
        self._place_pending(now)

    def _expire_attempts(self, entry: TaskEntry, now: float) -> None:
        for worker, attempt in list(entry.attempts.items()):
            if now >= attempt.deadline_s and self.state is JobState.RUNNING:
                if self._end_attempt(entry, worker) is None:  # ended meanwhile (the task failed or was accepted)
                    continue
                if not attempt.local:
                    self._effects.append(CancelAttempt(entry.ref.task_id, worker))
                if not attempt.accepted and not attempt.local:  # never answered the offer: as if unreachable
                    self.trust.record(worker, Outcome.TIMEOUT, now)
                    self._unreachable(entry, worker, attempt, f"{worker} timed out answering the offer", now)
                    continue
                self._attempt_failed(entry, worker, f"{worker} timed out running", now, penalise=False, timeout=True)

    def _reset(self, entry: TaskEntry, now: float) -> None:
        self._call_off(entry)
        entry.tally, entry.reveal, entry.candidates, entry.assigned = None, None, {}, set()
        entry.replicas = self._initial_replicas()
        self._init_verification(entry)
        entry.state, entry.not_before_s = TaskState.PENDING, now
        self._reconsider(entry)
        self._update(entry)
        self._place_pending(now)

    def _fail(self, entry: TaskEntry, why: str, now: float) -> None:
        if entry.state.final:
            return
        self._call_off(entry)
        entry.state = TaskState.FAILED
        self._note(entry, f"failed: {why}")
        self._update(entry, reason=why)
        self._cancel_tasks(now, f"job failed: task {entry.ref.task_id} failed")
        self._finish(JobState.FAILED, f"task {entry.ref.task_id} failed: {why}", now)

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
            if self.policy.commit_reveal and entry.replicas > 1:
                entry.reveal = self._reveal_round(entry, entry.replicas)

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

    def view(self, task_id: str) -> TaskView:
        """A read-only view of task ``task_id`` (KeyError if it is not one of ours)."""
        return TaskView(self.tasks[task_id], self.policy)

    def views(self) -> list[TaskView]:
        """Read-only views of every task, in the order they were given."""
        return [TaskView(e, self.policy) for e in self.tasks.values()]

    def attempt_limits(self, task_id: str, worker: str) -> ReceiptLimits | None:
        """The limits of ``worker``'s attempt at ``task_id`` if one is out (None: no answer is awaited)."""
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry is not None else None
        return None if attempt is None else attempt.limits

    def explain(self, *, done: bool = False) -> dict[str, list[str]]:
        """The reason chain of every task that is not done (``done``: of every task), oldest first."""
        return {tid: list(e.reasons) for tid, e in self.tasks.items() if done or e.state is not TaskState.DONE}


def _probe(tasks: list[TaskRef]) -> TaskRef | None:
    """A task with the componentwise smallest limits of ``tasks``, on the path they all share."""
    if not tasks:
        return None
    shared = set(tasks[0].path).intersection(*(t.path for t in tasks[1:]))
    return replace(tasks[0], limits=_smallest(t.limits for t in tasks),
                   path=tuple(p for p in tasks[0].path if p in shared))


def _smallest(limits: Iterable[ReceiptLimits]) -> ReceiptLimits:
    """The componentwise smallest of ``limits``."""
    lims = list(limits)
    return ReceiptLimits(min(x.fuel_max for x in lims), min(x.memory_bytes_max for x in lims),
                         min(x.wall_time_s for x in lims), min(x.output_bytes_max for x in lims))


def _output_cid(candidate: Candidate) -> str:
    """The content id of an accepted output: its digest was checked against the bytes when it was verified."""
    digest = candidate.claim.output_digest
    assert digest is not None  # a candidate is a successful result
    return cid_from_digest(digest)


__all__ = ["Coordinator", "CoordinatorConfig", "TaskView", "VoteView", "WorkerSource"]
