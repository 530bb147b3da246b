"""The coordinator: gets every task of a job (or of a split task) done, verified, exactly once.

Theory of operation
-------------------
One ``Coordinator`` owns a list of tasks (``TaskRef``) that all run the same module. The submitter of a job
makes one for the job's tasks; a worker that splits a received task makes one for the parts. It is driven by
events — ``tick(now)`` and the answers to its effects (``on_accepted``, ``on_rejected``, ``on_commitment``,
``on_result``, ``on_failure``, ``on_transport_error``, ``on_spot_result``, ``on_local_error``,
``on_peer_gone``, ``cancel``) — and returns effects (``effects.py``). It never reads a clock, never touches
I/O, and draws every random choice (spot-check chunks, replica draws, adaptive replication, retry jitter) from
the rng it was given. This class is the facade; its parts are:

    tasks.py         the task records, their state machine (TRANSITIONS) and read-only views
    placement.py     the queue, its indexes and timers, and where each task goes (offer, local run, queue)
    votes.py         replicas, commit-then-reveal rounds, and what a vote's decision does
    verification.py  verifying a result offline, then checking it per the strategy (spot checks, the vote)
    strategies.py    one object per verification policy: hash, spot, replicas, adaptive
    audits.py        re-executing a sample of accepted results here, and correcting what a liar got accepted

Replicas of a task are attempts with distinct workers at the same time (never two on one worker), each drawn
at random among the eligible workers, so that a party with many identities and inflated adverts cannot fill a
vote. A worker that failed, timed out or lied on a task is excluded from it.

Worker faults and unreachable workers are counted apart. A fault (an accepted attempt that timed out, a signed
crash, a result that fails verification or is outvoted, a departure) counts toward ``retries_max``. An unreachable
worker (``on_transport_error``, or an offer with no answer by its deadline) is a partition or a crash, not a fault:
it counts toward no limit, backs off (also while other replicas are out), and goes into the peer's shared
``Reachability`` for ``unreachable_cooldown_s``, during which none of its coordinators offers it a task (any answer
from it ends the cool-down). Its replica is placed again (a no-show of the vote only if it had committed). A worker
that declines because it is full is not excluded from the task: it cools down for BUSY_COOLDOWN_S. So busy workers
and partitions delay tasks instead of failing them: a waiting task is bounded by the job's deadline only (its tasks'
``deadline_s``: at it, every task not done fails with what it was waiting for). A task fails early only when no
known peer could ever take it (placement.py, stuck) or after ``retries_max`` faults.

A job's coordinator *keeps going* (``keep_going``): a failed task does not stop the others, the job ends when
every task is final (FAILED if any failed), and what is done stays retrievable. A split task's parts stop at
the first failure instead (the split fails as a whole; its issuer retries it elsewhere).

A deterministic OUT_OF_FUEL / MEMORY_LIMIT_EXCEEDED (agreed on by the quorum) raises that limit by
``escalation_factor`` and starts over, ``escalations_max`` times (the same workers may run it again: the replay
guard remembers one receipt per task, worker *and limits*).

Every proven lie (a signed result this peer's own deterministic re-execution contradicts: a failed spot check,
a replica's answer that differs from this peer's own run, a failed audit) goes through ``proven_lie``: the liar's
trust drops to the floor and a ``ProvenLie`` effect carries its signed receipt tree out, for the fraud proof and
for the behaviour, which then re-verifies (``recheck``) everything the liar signed or voted for on this peer. A
job is DONE only when its audits are settled.

Invariants: a task is DONE at most once and its result changes afterwards only by an audit's correction
(tasks.TRANSITIONS, audits.py); the number of attempts out per task is at most its replica count (and one backup
of a late single attempt); worker faults per task at most ``retries_max`` (then FAILED with the reason chain);
every effect that expects
an answer is correlated by (task_id, worker); the reason chain of a task is bounded (``REASONS_MAX``).
"""

from __future__ import annotations

import math
import random

from pangea_p2p.core.cid import cid_from_digest
from pangea_p2p.core.jobs.admission import BUSY
from pangea_p2p.core.jobs.audits import AuditBudget, Audits
from pangea_p2p.core.jobs.config import (
    BUSY_COOLDOWN_S,
    CoordinatorConfig,
    WorkerSource,
)
from pangea_p2p.core.jobs.effects import Effect, JobFinished, ProvenLie, TaskUpdate
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.placement import Placement
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.retries import Retries
from pangea_p2p.core.jobs.strategies import strategy_for
from pangea_p2p.core.jobs.tasks import Candidate, TaskEntry, TaskView
from pangea_p2p.core.jobs.verification import Verification
from pangea_p2p.core.jobs.votes import Votes
from pangea_p2p.core.trust import Outcome, TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.commit_reveal import CommitReveal
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import FailureKind, RemoteProtocolError, VerificationError

ESCALATING = (FailureKind.OUT_OF_FUEL, FailureKind.MEMORY_LIMIT_EXCEEDED)


def _offshoot(rng: random.Random) -> random.Random:
    """An rng of its own for a part, seeded from ``rng``'s state without drawing from it (the draws made from
    ``rng`` stay what they were)."""
    copy = random.Random()
    copy.setstate(rng.getstate())
    return random.Random(copy.getrandbits(64) ^ 0x9E3779B97F4A7C15)


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
        keep_going: bool = False,
        audit_budget: AuditBudget | None = None,
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
        self.keep_going = keep_going
        self.tasks: dict[str, TaskEntry] = {t.task_id: TaskEntry(t, t.limits) for t in tasks}
        self.deadline_s = min((t.deadline_s for t in tasks), default=math.inf)
        self.failed: list[str] = []  # tasks FAILED, in order
        self.state = JobState.RUNNING
        self.started_s = now
        self.finished_s: float | None = None
        self.reason = ""
        self.effects: list[Effect] = []
        self.placement = Placement(self, tasks)
        self.votes = Votes(self, self.placement)
        self.strategy = strategy_for(policy, self, self.votes)
        self.verification = Verification(self, self.placement, self.votes, self.strategy)
        self.retries = Retries(self, self.placement, self.votes, self.strategy)
        audited = local_allowed and policy.mode is not VerificationMode.HASH
        budget = audit_budget if audit_budget is not None else AuditBudget(trust.config.audit_budget)
        self.audits = Audits(self, self.placement, self.verification, enabled=audited, rng=_offshoot(rng),
                             budget=budget)

    # --- driving ----------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Set up verification per task and place the first tasks."""
        for entry in self.tasks.values():
            if entry.state is TaskState.PENDING:
                entry.replicas = self.strategy.initial_replicas()
                self.strategy.init_task(entry)
        return self.tick(now)

    def drain(self) -> list[Effect]:
        """The effects produced since the last call, in order."""
        out, self.effects = self.effects, []
        return out

    def restore(self, task_id: str, output_cid: str, tree: bytes, fuel_used: int, worker: str) -> None:
        """Mark a task DONE from the journal (a restarted submitter resumes its jobs)."""
        entry = self.tasks[task_id]
        if entry.state is TaskState.DONE:
            return
        entry.move(TaskState.DONE)
        self.placement.finished(entry)
        entry.output_cid, entry.tree, entry.fuel_used, entry.worker = output_cid, tree, fuel_used, worker
        entry.signers = frozenset((worker,))  # the receipt tree is not decoded again: its worker stands for it

    def tick(self, now: float) -> list[Effect]:
        """Fire due timers and place pending tasks; return the effects."""
        if self.state is JobState.RUNNING and now >= self.deadline_s:
            self._deadline_passed(now)
        if self.state is JobState.RUNNING:
            for entry in list(self.placement.out.values()):
                self.retries.expire_attempts(entry, now)
            self.placement.place_pending(now)
            self._check_finished(now)
        return self.drain()

    def next_deadline(self, now: float = -math.inf) -> float | None:
        """When ``tick`` next has something to do (None: only events can move it): after ``now``, or ``now``
        itself when a timer is due or a task waits for its look at the next placement round (the next tick
        takes them all: no busy loop)."""
        if self.state is not JobState.RUNNING:
            return None
        nxt = self.placement.deadline(now)
        if self.deadline_s < math.inf:
            nxt = self.deadline_s if nxt is None else min(nxt, self.deadline_s)
        return nxt

    # --- answers to effects -----------------------------------------------------------------------------

    def on_accepted(self, task_id: str, worker: str, now: float) -> list[Effect]:
        self.reachability.mark_reachable(worker)
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry else None
        if attempt is not None:
            attempt.accept()
        return self._answered(now)

    def on_rejected(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker declined the offer (full, limits, depth): try elsewhere, not a fault, no penalty."""
        self.reachability.mark_reachable(worker)
        entry = self.tasks.get(task_id)
        attempt = self.placement.end_attempt(entry, worker) if entry is not None else None
        if entry is None or attempt is None:
            return self._answered(now)
        if attempt.committed:  # it took part in a vote round already: a no-show, not a free retry
            self.attempt_failed(entry, worker, f"{worker} declined after committing: {reason}", now, penalise=False)
            return self._answered(now)
        if reason.startswith(BUSY):  # full now, not unfit: no offers for a while, then it may take the task
            self.reachability.mark_busy(worker, now + BUSY_COOLDOWN_S)
        else:
            entry.excluded.add(worker)
        entry.assigned.discard(worker)  # it never ran it: the replica is placed again
        self.note(entry, f"{worker} declined: {reason}")
        self.retries.after_attempt(entry, now)
        return self._answered(now)

    def on_transport_error(self, task_id: str, worker: str, reason: str, now: float) -> list[Effect]:
        """The worker could not be reached or the stream broke: not a fault of the worker (a partition, a
        crash), so it costs no retry and no trust; the worker cools down for every task, and the replica is
        placed again (a committed replica that can no longer reveal is a no-show of its vote)."""
        entry = self.tasks.get(task_id)
        attempt = self.placement.end_attempt(entry, worker) if entry is not None else None
        if entry is None or attempt is None:
            return self._answered(now)
        self.retries.unreachable(entry, worker, attempt, f"{worker} unreachable: {reason}", now)
        return self._answered(now)

    def on_peer_gone(self, worker: str, now: float) -> list[Effect]:
        """``worker`` left (its advert expired or its connection dropped): reassign what it had."""
        for entry in list(self.placement.out.values()):
            if worker in entry.attempts and not entry.attempts[worker].local:
                self.placement.end_attempt(entry, worker)
                self.attempt_failed(entry, worker, f"{worker} left the network", now, penalise=False)
        return self._answered(now)

    def on_commitment(self, task_id: str, worker: str, digest: bytes, now: float) -> list[Effect]:
        self.reachability.mark_reachable(worker)
        entry = self.tasks.get(task_id)
        attempt = entry.attempts.get(worker) if entry is not None else None
        if entry is not None and attempt is not None and attempt.round is not None:
            self.votes.commitment(entry, attempt, worker, digest, now)
        return self._answered(now)

    def on_result(
        self, task_id: str, worker: str, tree_bytes: bytes, output: bytes, now: float, nonce: bytes = b"",
        *, own: ReceiptTree | None = None,
    ) -> list[Effect]:
        """A result: ``tree_bytes`` is the encoded receipt tree, ``output`` the framed output chunks. ``own``:
        the tree itself, for this peer's own local run (the driver signed it over the sandbox's output a moment
        ago): its signature and output digest are then not checked again (it is still bound, recorded by the
        replay guard and journaled as signed, so it verifies offline like any other receipt)."""
        self.reachability.mark_reachable(worker)
        entry = self.tasks.get(task_id)
        if entry is None or entry.state.final:
            return self._answered(now)
        attempt = entry.attempts.get(worker)
        if attempt is None:
            return self._answered(now)
        own = own if attempt.local else None
        try:
            tree = own or ReceiptTree.decode(tree_bytes, self.config.verify)
        except (VerificationError, RemoteProtocolError):
            tree = None  # verified (and refused) below
        if tree is not None and tree.receipt.binding.limits != attempt.limits:
            # the answer to an earlier attempt of this worker under the limits before an escalation, overtaken
            # by its CancelAttempt: stale, not a lie (a wrong binding under the attempt's own limits still is)
            self.note(entry, f"ignored a stale result of {worker} for the limits before an escalation")
            return self._answered(now)
        self.placement.end_attempt(entry, worker)
        try:
            tree, verified, claim = self.verification.verify(entry, attempt, worker, tree_bytes, output, now, nonce,
                                                             tree, own=own is not None)
        except (VerificationError, RemoteProtocolError) as exc:
            self.attempt_failed(entry, worker, f"{worker} sent a result that failed verification: {exc}", now,
                                penalise=True)
            return self._answered(now)
        if claim is None or claim.failure is not None:
            self.retries.signed_failure(entry, worker, verified, claim, now)
            return self._answered(now)
        self.placement.learn_fuel(entry, tree.receipt.fuel_used)
        candidate = Candidate(worker, tree, output, claim, verified.signers, tree_bytes=tree_bytes if own else b"")
        if attempt.local:
            self.verification.own_result(entry, candidate, now)
        else:
            self.verification.candidate(entry, candidate, now)
        return self._answered(now)

    def on_failure(self, task_id: str, worker: str, tree_bytes: bytes, now: float, nonce: bytes = b"") -> list[Effect]:
        """A signed typed failure (the receipt tree says why)."""
        return self.on_result(task_id, worker, tree_bytes, b"", now, nonce)

    def on_local_error(self, task_id: str, reason: str, now: float) -> list[Effect]:
        """The local run could not even produce a receipt (e.g. the module is missing)."""
        entry = self.tasks.get(task_id)
        if entry is None or self.placement.end_attempt(entry, self.self_id) is None:
            return self._answered(now)
        self.attempt_failed(entry, self.self_id, f"local run failed: {reason}", now, penalise=False)
        return self._answered(now)

    def on_spot_result(
        self, task_id: str, chunk_index: int, output_chunk: bytes | None, now: float, inconclusive: str = "",
        fuel_used: int = 0,
    ) -> list[Effect]:
        """This peer's re-execution of one chunk: its output and the fuel it took, or None when the guest failed
        here (a trap, which the worker's success contradicts). ``inconclusive`` names why the re-execution could
        not say anything (this peer timed out, was full, could not fetch the input): the result is then
        accepted unchecked, and nobody's trust changes."""
        entry = self.tasks.get(task_id)
        if entry is not None:
            self.verification.spot_result(entry, chunk_index, output_chunk, now, inconclusive, fuel_used)
        return self._answered(now)

    def on_audit(self, task_id: str, tree: ReceiptTree | None, output: bytes, now: float,
                 inconclusive: str = "") -> list[Effect]:
        """This peer's own whole run of an accepted task (``tree``: the receipt it signed over ``output``), or why
        it could not run it (``inconclusive``): see audits.py. Also for a job already finished."""
        entry = self.tasks.get(task_id)
        if entry is not None:
            self.audits.result(entry, tree, output, now, inconclusive)
            self._check_finished(now)
        return self._answered(now)

    def audit_owed(self, task_id: str, now: float) -> list[Effect]:
        """The audit drawn for ``task_id`` that the budget could not pay for then can run now (audits.py)."""
        self.audits.owed(task_id)
        return self._answered(now)

    def recheck(self, liar: str, now: float) -> list[Effect]:
        """``liar`` was proven to have lied (here or on another coordinator of this peer): audit every result of
        this coordinator it signed or voted for (also when the job is finished: a correction is recorded)."""
        self.audits.recheck(liar)
        return self._answered(now)

    def cancel(self, now: float, reason: str = "cancelled by the submitter") -> list[Effect]:
        if self.state is JobState.RUNNING:
            self._cancel_tasks(reason)
            self._finish(JobState.CANCELLED, reason, now)
        return self._answered(now)

    def _answered(self, now: float) -> list[Effect]:
        """The effects of an answer; if it freed a slot of a worker, the queue moves at once (not at the next
        look): a queued task of this job may go where an attempt just ended or committed."""
        if self.placement.freed and self.state is JobState.RUNNING:
            self.placement.place_pending(now)
        return self.drain()

    # --- what the parts call (tasks.Host) ---------------------------------------------------------------

    def note(self, entry: TaskEntry, text: str) -> None:
        entry.reasons.append(text)

    def update(self, entry: TaskEntry, *, reason: str = "", output_cid: str = "", tree: bytes = b"",
               fuel_used: int = 0, worker: str = "", corrected: bool = False) -> None:
        self.effects.append(TaskUpdate(entry.ref.task_id, entry.state, reason or (entry.reasons[-1] if entry.reasons
                                       else ""), output_cid, tree, fuel_used, worker, corrected))

    def accept(self, entry: TaskEntry, candidate: Candidate, now: float, *, checked: bool,
               unchecked_why: str = "", audit: str = "") -> None:
        """``candidate``'s result is the task's: DONE, with every candidate that made the same claim behind it
        (``backers``) and the others' claims kept (``dissent``); then its audit is drawn (``audit``: forced,
        and why). ``unchecked_why``: it was accepted without the check the policy asks for, and why."""
        self.placement.call_off(entry)  # replicas still out are not needed
        receipt = candidate.tree.receipt
        entry.move(TaskState.DONE)
        self.placement.finished(entry)
        entry.checked, entry.unchecked_why = checked, unchecked_why
        digest = candidate.claim.output_digest  # checked against the bytes when the result was verified
        assert digest is not None  # a candidate is a successful result
        entry.output_cid = cid_from_digest(digest)
        entry.tree = candidate.tree_bytes or candidate.tree.encode()
        entry.fuel_used, entry.worker = receipt.fuel_used, candidate.worker
        backing = [cand for cand in entry.candidates.values() if cand.claim == candidate.claim]
        backing.append(candidate)
        entry.backers = {cand.worker: cand.tree for cand in backing}
        entry.signers = frozenset().union(*(cand.signers for cand in backing))
        entry.dissent = {w: (cand.claim, cand.tree) for w, cand in entry.candidates.items()
                         if cand.claim != candidate.claim}
        entry.candidates.clear()
        self.note(entry, f"done by {candidate.worker} ({'checked' if checked else 'unchecked'})")
        self.update(entry, output_cid=entry.output_cid, tree=entry.tree, fuel_used=entry.fuel_used,
                    worker=candidate.worker)
        if entry.dissent and not audit:  # someone signed another answer: one of the two sides lied, settle it here
            audit = f"the replicas disagreed ({', '.join(sorted(entry.dissent))} outvoted): audited"
        self.audits.accepted(entry, audit)
        self._check_finished(now)

    def settle(self, entry: TaskEntry, why: str, now: float) -> bool:
        """``entry``'s vote failed (``why``): settled by this peer's own run if it can (audits.py)."""
        return self.audits.settle(entry, why)

    def proven_lie(self, entry: TaskEntry, worker: str, tree: ReceiptTree | bytes | None, why: str,
                   now: float) -> None:
        """``worker`` signed a result of ``entry`` (its receipt tree ``tree``) that this peer's own deterministic
        re-execution contradicts (``why``): the one path of every proven lie. Its trust drops to the floor, and
        a ``ProvenLie`` effect carries the proof out (the behaviour re-verifies everything it signed or voted
        for, and the proof can be published)."""
        if worker == self.self_id:
            return  # this peer's own run is the reference: it cannot contradict itself
        self.trust.record(worker, Outcome.PROVEN_LIE, now)
        self.note(entry, f"{worker} is proven to have lied")
        encoded = tree.encode() if isinstance(tree, ReceiptTree) else (tree or b"")
        self.effects.append(ProvenLie(worker, self.placement.ref(entry), encoded, why))

    def fail(self, entry: TaskEntry, why: str, now: float) -> None:
        if entry.state.final:
            return
        self.placement.call_off(entry)
        entry.move(TaskState.FAILED)
        self.placement.finished(entry)
        self.failed.append(entry.ref.task_id)
        self.note(entry, f"failed: {why}")
        self.update(entry, reason=why)
        if self.keep_going:
            self._check_finished(now)
            return
        self._cancel_tasks(f"job failed: task {entry.ref.task_id} failed")
        self._finish(JobState.FAILED, f"task {entry.ref.task_id} failed: {why}", now)

    def _deadline_passed(self, now: float) -> None:
        """The job's deadline passed: every task not final fails with what it was waiting for."""
        for entry in self.tasks.values():
            if not entry.state.final:
                waiting = entry.reasons[-1] if entry.reasons else entry.state.value
                self.placement.call_off(entry)
                entry.move(TaskState.FAILED)
                self.placement.finished(entry)
                self.failed.append(entry.ref.task_id)
                why = f"the job's deadline passed; last: {waiting}"
                self.note(entry, f"failed: {why}")
                self.update(entry, reason=why)
        self._check_finished(now)

    def escalate_or_fail(self, entry: TaskEntry, failure: FailureKind, why: str, now: float) -> None:
        self.retries.escalate_or_fail(entry, failure, why, now)

    def attempt_failed(self, entry: TaskEntry, worker: str, why: str, now: float, *, penalise: bool,
                       timeout: bool = False, proven: bool = False) -> None:
        self.retries.attempt_failed(entry, worker, why, now, penalise=penalise, timeout=timeout, proven=proven)

    def maybe_open_reveals(self, entry: TaskEntry, now: float) -> None:
        self.votes.maybe_open_reveals(entry, now)

    def reveal_round(self, entry: TaskEntry, replicas: int) -> CommitReveal:
        return self.votes.reveal_round(entry, replicas)

    def _cancel_tasks(self, reason: str) -> None:
        """Every task not final: its attempts called off, CANCELLED."""
        for entry in self.tasks.values():
            if not entry.state.final:
                self.placement.call_off(entry)
                entry.move(TaskState.CANCELLED)
                self.note(entry, reason)
                self.update(entry, reason=reason)

    def _check_finished(self, now: float) -> None:
        if self.state is not JobState.RUNNING:
            return
        n, done = len(self.tasks), self.placement.done
        if done + len(self.failed) == n:
            self.audits.pay_owed()  # the budget pays what it can of this job's owed audits before it ends
        if self.audits.pending:
            return  # (a result whose audit runs may still be corrected: the job ends once they are settled)
        if done == n:
            self._finish(JobState.DONE, self.unchecked_summary(), now)
        elif done + len(self.failed) == n:
            first = self.tasks[self.failed[0]]
            why = first.reasons[-1].removeprefix("failed: ") if first.reasons else "failed"
            more = f" (and {len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
            partial = " (their outputs make a partial result)" if done else ""
            self._finish(JobState.FAILED, f"task {first.ref.task_id} failed: {why}{more}; {done} of {n} tasks "
                         f"done{partial}", now)

    def _finish(self, state: JobState, reason: str, now: float) -> None:
        if self.state is not JobState.RUNNING:
            return
        self.state, self.reason, self.finished_s = state, reason, now
        self.effects.append(JobFinished(state, reason))

    # --- reading ------------------------------------------------------------------------------------------

    def unchecked(self) -> dict[str, str]:
        """The tasks accepted unchecked although the policy asked for a check, and why."""
        return {tid: e.unchecked_why for tid, e in self.tasks.items() if e.unchecked_why}

    def unchecked_summary(self) -> str:
        """What a done job says when its policy was not fully met ("" when it was)."""
        unchecked = self.unchecked()
        if not unchecked:
            return ""
        first = next(iter(unchecked.values()))
        return (f"{len(unchecked)} of {len(self.tasks)} task(s) accepted unchecked although the policy is "
                f"{self.policy}: {first}")

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

    def load(self) -> dict[str, int]:
        """The slots this coordinator's attempts hold, per worker (what it adds to the peer's ``inflight``)."""
        out: dict[str, int] = {}
        for entry in self.placement.out.values():
            for worker, attempt in entry.attempts.items():
                if attempt.counted:
                    out[worker] = out.get(worker, 0) + 1
        return out

    def check(self) -> None:
        """Assert the invariants of the module docstring and the placement indexes (placement.py, Cost): for
        tests, and for simulations that check after every event."""
        replicas_max = self.config.verify.replicas_max
        for e in self.tasks.values():
            # at most its replicas out, and one backup of a late single attempt
            assert len(e.attempts) <= max(1, e.replicas) + (e.tally is None), (e.ref.task_id, list(e.attempts))
            if e.tally is not None:  # never more workers given the task than the tally asked for
                assert len(e.assigned) <= e.tally.dispatched <= replicas_max, (e.ref.task_id, e.assigned)
            assert e.state is not TaskState.DONE or not e.attempts, e.ref.task_id
        if self.state is JobState.DONE:
            assert all(e.state is TaskState.DONE for e in self.tasks.values())
        if self.state is JobState.RUNNING and self.audits.pending:  # audits hold a job whose tasks are all done
            assert all(self.tasks[t].state is TaskState.DONE for t in self.audits.pending)
        if self.state is JobState.RUNNING:
            self.placement.check()


__all__ = ["Coordinator"]
