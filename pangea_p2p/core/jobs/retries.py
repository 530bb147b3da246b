"""Failures and retries: what a coordinator does when an attempt does not bring an accepted result.

A *fault* (an accepted attempt that timed out, a signed crash, a result that fails verification, is outvoted or
fails its spot check, a departure) excludes the worker from the task and counts toward ``retries_max``; the task
is placed again after a backoff. An *unreachable* worker (a dial or stream failure, an offer with no answer by
its deadline) is a partition or a crash, not a fault: it counts toward no limit, backs off (also while other
replicas are out, up to BACKOFF_S_MAX), and cools down in the peer's shared ``Reachability`` for
``unreachable_cooldown_s``; its replica is placed again (a no-show of the vote only if it had committed). So a
partition delays tasks instead of failing them (the job's deadline bounds the wait), and the loop stays bounded
(one offer per cool-down per worker). A deterministic failure agreed on
(OUT_OF_FUEL, MEMORY_LIMIT_EXCEEDED) raises that limit by ``escalation_factor`` and starts the task over,
``escalations_max`` times; any other deterministic failure fails the task (retrying elsewhere gives the same).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from pangea_p2p.core.jobs.config import FUEL_ABSOLUTE_MAX, MEMORY_BYTES_ABSOLUTE_MAX
from pangea_p2p.core.jobs.effects import CancelAttempt
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.core.jobs.placement import BACKOFF, Placement
from pangea_p2p.core.jobs.strategies import Strategy
from pangea_p2p.core.jobs.tasks import Attempt, Host, TaskEntry
from pangea_p2p.core.jobs.votes import Votes
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.receipts import VerifiedTree
from pangea_p2p.core.verify.voting import Claim
from pangea_p2p.errors import FailureKind, VerificationError

ESCALATING = (FailureKind.OUT_OF_FUEL, FailureKind.MEMORY_LIMIT_EXCEEDED)


class Retries:
    """Faults, unreachable workers, deadlines and escalations of one coordinator's tasks."""

    def __init__(self, host: Host, placement: Placement, votes: Votes, strategy: Strategy) -> None:
        self.c = host
        self.placement = placement
        self.votes = votes
        self.strategy = strategy

    def escalate_or_fail(self, entry: TaskEntry, failure: FailureKind, why: str, now: float) -> None:
        """A deterministic failure agreed on: raise the limit it ran out of (OUT_OF_FUEL, MEMORY_LIMIT_EXCEEDED)
        by ``escalation_factor`` — never above what some known peer (or this one) accepts — or fail the task."""
        if failure in ESCALATING and entry.escalations < self.c.escalations_max:
            lim = entry.limits
            fuel = failure is FailureKind.OUT_OF_FUEL
            now_at = lim.fuel_max if fuel else lim.memory_bytes_max
            top = self._most_accepted(now, fuel=fuel)
            raised = min(top, FUEL_ABSOLUTE_MAX if fuel else MEMORY_BYTES_ABSOLUTE_MAX,
                         int(now_at * self.c.escalation_factor))
            if raised <= now_at:
                what = f"{now_at} fuel" if fuel else f"{now_at >> 20} MiB of memory"
                self.c.fail(entry, f"{why}: it needs more than {what}, the most any known peer accepts", now)
                return
            entry.escalations += 1
            if fuel:
                new, what = replace(lim, fuel_max=raised), f"fuel to {raised}"
            else:
                new, what = replace(lim, memory_bytes_max=raised), f"memory to {raised >> 20} MiB"
            entry.limits = new
            self.c.note(entry, f"{why}: raising {what} (escalation {entry.escalations} of {self.c.escalations_max})")
            self.reset(entry, now)
            return
        self.c.fail(entry, f"{why} (deterministic: retrying elsewhere would give the same)", now)

    def _most_accepted(self, now: float, *, fuel: bool) -> int:
        """The most fuel (or memory) any known worker, or this peer where it may run tasks, accepts."""
        views = list(self.c.source.views(now))
        local = self.c.source.local(now) if self.c.local_allowed else None
        if local is not None:
            views.append(local)
        return max((w.fuel_max if fuel else w.memory_bytes_max for w in views), default=0)

    def attempt_failed(self, entry: TaskEntry, worker: str, why: str, now: float, *, penalise: bool,
                       timeout: bool = False, proven: bool = False) -> None:
        """``worker``'s attempt at ``entry`` (ended already) was a fault: it is excluded from the task, and the
        task is tried elsewhere after a backoff, or fails after ``retries_max`` faults. A fault proven to be the
        worker's (``penalise``: a forged or unverifiable result; ``proven``: a lie, recorded by ``proven_lie``)
        costs the task no retry:
        retries_max guards against a task that fails everywhere (a crash, a timeout), and a party with many
        lying identities must not be able to fail an honest task by using it up (each worker faults once per
        task: it is excluded, so the loop stays bounded, and the job's deadline bounds it too)."""
        entry.excluded.add(worker)
        if penalise:
            self.c.trust.record(worker, Outcome.INVALID, now)
        elif timeout:
            self.c.trust.record(worker, Outcome.TIMEOUT, now)
        self.c.note(entry, why)
        decision = self.votes.no_show(entry, worker) if entry.tally is not None and not entry.state.final else None
        if self.votes.decided_awaiting_reveals(entry):  # only its reveal was awaited: the task needs no retry
            assert decision is not None
            self.votes.on_decision(entry, decision, now)
            self.after_attempt(entry, now)
            return
        if not penalise and not proven:
            entry.failures += 1
        if entry.failures > (most := self.c.retries_max):
            self.c.fail(entry, f"gave up after {entry.failures} failed attempts (retries_max {most})", now)
            return
        if decision is not None:  # the no-show may complete the round: more replicas, or no quorum possible
            self.votes.on_decision(entry, decision, now)
        self.after_attempt(entry, now)

    def unreachable(self, entry: TaskEntry, worker: str, attempt: Attempt, why: str, now: float) -> None:
        """``worker`` could not be reached (its attempt has ended): cool it down, place the replica again."""
        self.c.reachability.mark_unreachable(worker, now + self.c.config.unreachable_cooldown_s)
        self.c.note(entry, why)
        tally = entry.tally
        if attempt.committed and tally is not None and self.votes.decided_awaiting_reveals(entry):
            with contextlib.suppress(VerificationError):  # only its reveal was awaited: nothing to place again
                self.votes.on_decision(entry, tally.add_no_show(worker), now)
            self.after_attempt(entry, now)
            return
        entry.unreachable += 1  # no fault and no limit: a partition delays the task, the job's deadline bounds it
        if attempt.committed and tally is not None:
            with contextlib.suppress(VerificationError):
                self.votes.on_decision(entry, tally.add_no_show(worker), now)
        else:
            entry.assigned.discard(worker)  # it never answered: the replica is placed again
        # back off before placing it again even while other replicas are out (a partition would otherwise use
        # up the budget one dial timeout after another)
        backoff = self.placement.backoff(entry.unreachable)
        if now + backoff > entry.not_before_s:
            entry.not_before_s = now + backoff
            self.placement.timer(entry.not_before_s, entry, BACKOFF)
        self.after_attempt(entry, now)

    def hedge(self, entry: TaskEntry, attempt: Attempt, now: float) -> None:
        """``attempt``, the only one at ``entry``, is late (far beyond its expected time, within the task's limits):
        it may be honest and slow, or withholding. It runs on to its hard deadline (the wall limit, no trust lost
        before), and a backup goes to another worker (twice as long before it is late): the first answer wins."""
        entry.lates += 1
        attempt.late_s, attempt.deadline_s = 0.0, attempt.due_s
        entry.hedge = True
        self.c.note(entry, f"{attempt.worker} is late: a backup goes elsewhere (it runs on; the first answer wins)")
        self.placement.reconsider(entry)
        self.placement.place_pending(now)

    def late(self, entry: TaskEntry, worker: str, now: float) -> None:
        """``worker``'s replica of a vote (ended, not committed) ran far beyond its expected time, though within
        the task's limits, holding up the vote's round: it may be honest and slow, or withholding its answer. It
        is replaced on another worker, costing no retry and only a TIMEOUT in the trust book (weak evidence: slow
        is not wrong, but a withholder must not keep its standing); the task is not offered to it again. The next
        replica gets twice as long — unless another replica of the task already committed or answered in time:
        the task is not long then, this worker was (so withholders cannot stretch the wait)."""
        others_in_time = bool(entry.candidates) or any(a.committed for a in entry.attempts.values()) or bool(
            entry.tally is not None and entry.tally.votes)
        if not others_in_time:
            entry.lates += 1
        self.c.trust.record(worker, Outcome.TIMEOUT, now)
        entry.excluded.add(worker)
        entry.assigned.discard(worker)  # its replica (of a vote too: it had not committed) is placed again
        self.c.note(entry, f"{worker} is late: placed elsewhere (no fault, a timeout)")
        self.after_attempt(entry, now)

    def signed_failure(self, entry: TaskEntry, worker: str, verified: VerifiedTree, claim: Claim | None,
                           now: float) -> None:
        failure = verified.failure
        if failure is None:  # a delegation tree reports results only; a failed part comes as a leaf's failure
            failure = FailureKind.WORKER_CRASHED
        if entry.tally is not None:
            self.votes.vote(entry, worker, claim, now, verified.signers)
            return
        if claim is None:  # timeout, crash: a property of that worker, not of the task
            self.attempt_failed(entry, worker, f"{worker} reported {failure.name}", now, penalise=False,
                                timeout=failure is FailureKind.TIMEOUT)
            return
        self.escalate_or_fail(entry, failure, f"{worker} reported {failure.name}", now)

    def after_attempt(self, entry: TaskEntry, now: float) -> None:
        if entry.state.final:
            return
        if not entry.attempts and not entry.candidates:
            entry.hedge = False
            misses = entry.failures + entry.unreachable
            backoff = self.placement.backoff(misses)
            entry.move(TaskState.PENDING)
            entry.not_before_s = now + (backoff if misses else 0.0)
            if misses:
                self.placement.timer(entry.not_before_s, entry, BACKOFF)
            self.c.update(entry)
        self.placement.reconsider(entry)
        self.votes.maybe_open_reveals(entry, now)
        self.placement.place_pending(now)

    def expire_attempts(self, entry: TaskEntry, now: float) -> None:
        for worker, attempt in list(entry.attempts.items()):
            if now >= attempt.deadline_s and self.c.state is JobState.RUNNING and worker in entry.attempts:
                if attempt.is_late and entry.tally is None:  # a single attempt runs on, with a backup elsewhere
                    self.hedge(entry, attempt, now)
                    continue
                if self.placement.end_attempt(entry, worker) is None:  # ended meanwhile (failed or accepted)
                    continue
                if not attempt.local:
                    self.c.effects.append(CancelAttempt(entry.ref.task_id, worker))
                if not attempt.accepted and not attempt.local:  # never answered the offer: as if unreachable
                    self.c.trust.record(worker, Outcome.TIMEOUT, now)
                    self.unreachable(entry, worker, attempt, f"{worker} timed out answering the offer", now)
                    continue
                if attempt.is_late:
                    self.late(entry, worker, now)
                    continue
                self.attempt_failed(entry, worker, f"{worker} timed out running", now, penalise=False, timeout=True)

    def reset(self, entry: TaskEntry, now: float) -> None:
        """Start ``entry`` over under its new limits (an escalation)."""
        self.placement.call_off(entry)
        entry.tally, entry.reveal, entry.candidates, entry.assigned = None, None, {}, set()
        entry.replicas = self.strategy.initial_replicas()
        self.strategy.init_task(entry)
        entry.move(TaskState.PENDING)
        entry.not_before_s = now
        self.placement.reconsider(entry)
        self.c.update(entry)
        self.placement.place_pending(now)
