"""A coordinator's tasks: one record per task with its attempts and candidate results, the task state machine,
the read-only views the rest of the peer reads, and what a coordinator's parts need of it (``Host``).

Theory of operation (the task lifecycle; rule: every change of ``TaskEntry.state`` goes through ``move``,
which refuses a transition the table below does not list, as h11's ``_state.py`` does)::

    PENDING   --an attempt goes out (offer or local run)-------------------> RUNNING
    RUNNING   --another replica goes out---------------------------------> RUNNING
    RUNNING   --a verified result waits for its checks (spot, vote)------> VERIFYING
    VERIFYING --more replicas go out, or the vote waits on---------------> RUNNING / VERIFYING
    RUNNING / VERIFYING --every attempt ended, nothing left to check-----> PENDING (placed again, backoff)
    RUNNING / VERIFYING / PENDING --escalation (raise fuel or memory)----> PENDING
    PENDING / RUNNING / VERIFYING --accepted---> DONE   --failed---> FAILED   --cancelled---> CANCELLED
    PENDING   --restored from the journal--------------------------------> DONE

DONE, FAILED and CANCELLED are final: a task accepted never changes state again, and its result changes only
by a correction — this peer's own re-execution (an audit, audits.py) replacing a result it proved wrong. An
*attempt* is one worker working on the task under one set of limits (out from its offer until its answer,
failure or deadline); a *candidate* is a verified result waiting for its checks. An accepted task keeps who
stands behind its result (``backers``: the worker, or every replica that voted for it, with its receipt
tree; ``signers``: every peer that signed a receipt of those trees, delegation included) and the claims that
lost to it (``dissent``), for its audit and for the recheck when one of them is proven to have lied.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from pangea_p2p.core.jobs.config import CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.effects import Effect
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationPolicy
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.commit_reveal import CommitReveal
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.spotcheck import SpotCheck
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally
from pangea_p2p.errors import FailureKind, LocalProtocolError

REASONS_MAX = 12


class AuditState(enum.Enum):
    """Where a DONE task's audit is (audits.py): none drawn, out, or how it ended."""

    NONE = "none"
    PENDING = "pending"
    PASSED = "passed"  # this peer's re-execution agrees with the accepted result
    CORRECTED = "corrected"  # it did not: the result was replaced by this peer's own
    INCONCLUSIVE = "inconclusive"  # this peer could not re-execute it (kept as accepted)

_P, _R, _V, _D, _F, _C = (TaskState.PENDING, TaskState.RUNNING, TaskState.VERIFYING, TaskState.DONE,
                          TaskState.FAILED, TaskState.CANCELLED)
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _P: frozenset({_P, _R, _D, _F, _C}),
    _R: frozenset({_R, _V, _P, _D, _F, _C}),
    _V: frozenset({_V, _R, _P, _D, _F, _C}),
    _D: frozenset(),
    _F: frozenset(),
    _C: frozenset(),
}


@dataclass
class Attempt:
    worker: str
    limits: ReceiptLimits
    deadline_s: float
    accepted: bool = False
    committed: bool = False
    local: bool = False
    round: CommitReveal | None = None  # the commit-reveal round it commits and reveals in
    due_s: float = 0.0  # its deadline once accepted (until then ``deadline_s`` is the offer's: no answer, unreachable)
    late_s: float = 0.0  # once accepted, when it is *late* (far beyond its expected time, not committed): a vote's
    # replica is replaced, a single attempt gets a backup (it runs on); 0: never

    def accept(self) -> None:
        """The worker took it (TaskAccepted, or a commitment): its deadline is the work's now (first the point
        where it is late, if that comes before the hard one)."""
        if not self.accepted:
            self.accepted = True
            self.deadline_s = max(self.deadline_s, min(self.late_s, self.due_s) if self.late_s else self.due_s)

    @property
    def is_late(self) -> bool:
        """Whether its current deadline is the one where it is late (not the hard one, not the offer's)."""
        return self.accepted and not self.committed and 0.0 < self.late_s == self.deadline_s < self.due_s
    counted: bool = True  # counts as load on the worker (not any more once it committed and only waits)


@dataclass
class Candidate:
    """A verified result waiting for its checks (spot checks or the vote)."""

    worker: str
    tree: ReceiptTree
    output: bytes
    claim: Claim
    signers: frozenset[str]  # every peer that signed a receipt of the tree (a vote's signers must not overlap)
    spot: SpotCheck | None = None  # its spot check, while chunks are re-run here
    spot_fuel: int = 0  # the fuel this peer's re-runs of the spot-checked chunks took
    tree_bytes: bytes = b""  # the tree as received (re-encoded when empty)


@dataclass
class TaskEntry:
    ref: TaskRef
    limits: ReceiptLimits  # the current ones (escalation raises them)
    state: TaskState = TaskState.PENDING
    attempts: dict[str, Attempt] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)  # workers given the task in this round (the tally's voters)
    failures: int = 0  # worker faults: timeouts, crashes, wrong or unverifiable answers (bounded by retries_max)
    lates: int = 0  # attempts that were late (each next one is given twice as long)
    hedge: bool = False  # a late single attempt runs on and wants a backup on another worker
    unreachable: int = 0  # workers that could not be reached (a partition: it waits, bounded by the deadline)
    escalations: int = 0
    not_before_s: float = 0.0
    queued_since_s: float | None = None
    stuck_since_s: float | None = None  # since when no known peer could ever take it (queued, none out)
    fallback_at_s: float | None = None  # when this peer runs it itself if no busy worker freed up by then
    fallback_check_s: float | None = None  # when a queued task of a checked job looks at this peer again (busy)
    tally: VoteTally | None = None
    reveal: CommitReveal | None = None  # the round replicas placed now join (earlier ones keep theirs)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    replicas: int = 1
    spot_checks: int = 0
    checked: bool = False
    unchecked_why: str = ""  # accepted unchecked although the policy asked for a check: why
    reasons: deque[str] = field(default_factory=lambda: deque(maxlen=REASONS_MAX))
    output_cid: str = ""
    tree: bytes = b""
    fuel_used: int = 0
    worker: str = ""
    backers: dict[str, ReceiptTree | None] = field(default_factory=dict)  # who stands behind the accepted result
    signers: frozenset[str] = frozenset()  # every peer that signed a receipt of the backers' trees
    dissent: dict[str, tuple[Claim, ReceiptTree]] = field(default_factory=dict)  # answers that lost to it
    audit: AuditState = AuditState.NONE
    corrections: list[str] = field(default_factory=list)  # what audits changed in the accepted result
    ref_cache: TaskRef | None = None  # the task as it goes out for the current limits and round
    binding_cache: TaskBinding | None = None  # what results are checked against, for the limits it names

    def move(self, to: TaskState) -> None:
        """Change state; LocalProtocolError for a transition the lifecycle does not have."""
        if to not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"task {self.ref.task_id}: no transition {self.state.value} -> {to.value}")
        self.state = to

    def replicas_missing(self) -> int:
        """Replicas the tally counts on that were not given to any worker yet (none without a tally)."""
        return 0 if self.tally is None else self.tally.dispatched - len(self.assigned)

    def busy_with(self) -> set[str]:
        """Workers that must not get (another replica of) this task: excluded, given it in this round, out with
        it, or already voted: never two replicas of a task on one worker."""
        done = set(self.tally.votes) if self.tally is not None else set()
        return self.excluded | self.assigned | set(self.attempts) | set(self.candidates) | done


class Host(Protocol):
    """The coordinator as its parts (placement, the vote, the verification strategies) see it: the job's shared
    state, its effects, and the few decisions that end an attempt, a task or the job."""

    self_id: str
    policy: VerificationPolicy
    config: CoordinatorConfig
    trust: TrustBook
    guard: ReplayGuard
    rng: random.Random
    source: WorkerSource
    inflight: dict[str, int]
    reachability: Reachability
    tasks: dict[str, TaskEntry]
    state: JobState
    queue_timeout_s: float
    retries_max: int
    escalations_max: int
    escalation_factor: float
    local_allowed: bool
    effects: list[Effect]

    def note(self, entry: TaskEntry, text: str) -> None: ...

    def update(self, entry: TaskEntry, *, reason: str = "", output_cid: str = "", tree: bytes = b"",
               fuel_used: int = 0, worker: str = "", corrected: bool = False) -> None: ...

    def accept(self, entry: TaskEntry, candidate: Candidate, now: float, *, checked: bool,
               unchecked_why: str = "", audit: str = "") -> None: ...

    def proven_lie(self, entry: TaskEntry, worker: str, tree: ReceiptTree | bytes | None, why: str,
                   now: float) -> None: ...

    def fail(self, entry: TaskEntry, why: str, now: float) -> None: ...

    def settle(self, entry: TaskEntry, why: str, now: float) -> bool: ...

    def escalate_or_fail(self, entry: TaskEntry, failure: FailureKind, why: str, now: float) -> None: ...

    def attempt_failed(self, entry: TaskEntry, worker: str, why: str, now: float, *, penalise: bool,
                       timeout: bool = False, proven: bool = False) -> None: ...

    def maybe_open_reveals(self, entry: TaskEntry, now: float) -> None: ...

    def reveal_round(self, entry: TaskEntry, replicas: int) -> CommitReveal: ...


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
        return self._e.limits

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
    def unchecked_why(self) -> str:
        """Why it was accepted unchecked although its job's policy asked for a check ("" if it was not)."""
        return self._e.unchecked_why

    @property
    def spot_checks(self) -> int:
        return self._e.spot_checks

    @property
    def audit(self) -> AuditState:
        """Where its audit is (NONE: none was drawn)."""
        return self._e.audit

    @property
    def corrections(self) -> tuple[str, ...]:
        """What audits changed in its accepted result (empty: nothing), oldest first."""
        return tuple(self._e.corrections)

    @property
    def backers(self) -> tuple[str, ...]:
        """The workers behind its accepted result (the worker, or every replica that voted for it)."""
        return tuple(self._e.backers)

    @property
    def failures(self) -> int:
        """Worker faults so far (timeouts, crashes, wrong or unverifiable answers)."""
        return self._e.failures

    @property
    def unreachable(self) -> int:
        """Workers that could not be reached for it so far."""
        return self._e.unreachable

    @property
    def escalations(self) -> int:
        return self._e.escalations

    @property
    def replicas(self) -> int:
        return self._e.replicas

    @property
    def not_before_s(self) -> float:
        """It is not placed again before this time (a backoff after a failed or unreachable attempt)."""
        return self._e.not_before_s

    @property
    def out_with(self) -> tuple[str, ...]:
        """The workers an attempt of it is out with now (this peer's id for a local run)."""
        return tuple(self._e.attempts)

    def deadline_of(self, worker: str) -> float | None:
        """When ``worker``'s attempt at it times out (None: no attempt of it is out)."""
        attempt = self._e.attempts.get(worker)
        return None if attempt is None else attempt.deadline_s

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
    def dispatched(self) -> int:
        """Replicas the vote counts on (more are added when answers disagree)."""
        return self._t.dispatched

    @property
    def state(self) -> TallyState:
        return self._t.state
