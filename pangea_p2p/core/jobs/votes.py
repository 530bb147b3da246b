"""The vote: redundant execution of a task by distinct workers, commit-then-reveal, and what a decision does.

Theory of operation
-------------------
A task under a vote has a tally (verify/voting.py) that decides how many replicas it needs
(``tally.dispatched``); ``entry.assigned`` holds the workers given the task under it, and any replica not yet
given to a worker (too few free workers, a worker that declined, an escalation) is placed at the next
placement, or waits in the queue. A replica that fails, times out or leaves is a no-show, and the tally's
answer to it (wait, add replicas, fail) is acted on.

Under commit-then-reveal every attempt belongs to the *round* (verify/commit_reveal.py) that was open when it
was placed; a round's reveals are requested when all its replicas committed, or when every member still out
has committed and nothing more can join it (the others dropped out, or the missing replica waits in the
queue). A committed replica does not time out while it waits for its round; its reveal then has
ATTEMPT_GRACE_S. Replicas placed after a round opened its reveals (an escalation, a late top-up) start a new
round. A decision waits for the reveals already asked for (that work is done; each reveal is graded, so a liar
slower than the honest quorum is still outvoted); replicas still running when it is reached are cancelled.
"""

from __future__ import annotations

from pangea_p2p.core.jobs.config import ATTEMPT_GRACE_S
from pangea_p2p.core.jobs.effects import RequestReveal
from pangea_p2p.core.jobs.model import TaskState
from pangea_p2p.core.jobs.placement import Placement
from pangea_p2p.core.jobs.tasks import Attempt, Host, TaskEntry
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.commit_reveal import CommitReveal, Phase
from pangea_p2p.core.verify.voting import Claim, Decision, TallyState, VoteTally
from pangea_p2p.errors import VerificationError


class Votes:
    """The votes of one coordinator's tasks (see the module docstring)."""

    def __init__(self, host: Host, placement: Placement) -> None:
        self.c = host
        self.placement = placement

    def init_task(self, entry: TaskEntry) -> None:
        """A task whose policy votes from the start (replicas:N): its tally, and the first round."""
        entry.tally = VoteTally(entry.replicas, workers=[], replicas_max=self.c.config.verify.replicas_max)
        if self.c.policy.commit_reveal and entry.replicas > 1:
            entry.reveal = self.reveal_round(entry, entry.replicas)

    def start(self, entry: TaskEntry, replicas: int, workers: list[str], now: float) -> None:
        """Put ``entry`` to a vote of ``replicas`` (``workers`` answered already, e.g. the adaptive primary)."""
        c = self.c
        entry.replicas = replicas
        entry.tally = VoteTally(replicas, workers=workers, replicas_max=c.config.verify.replicas_max)
        entry.assigned = set(workers)
        if c.policy.commit_reveal and replicas > len(workers):  # a round for the replicas placed now
            entry.reveal = self.reveal_round(entry, replicas - len(workers))
        entry.move(TaskState.VERIFYING)
        self.placement.reconsider(entry)
        c.update(entry)
        self.placement.place_one(entry, now)

    @staticmethod
    def reveal_round(entry: TaskEntry, replicas: int) -> CommitReveal:
        # commitments_min 1: a round can open without a replica that dropped out (see maybe_open_reveals)
        return CommitReveal(entry.ref.job_id, entry.ref.task_id, replicas, commitments_min=1)

    # --- commit, then reveal ------------------------------------------------------------------------------

    def commitment(self, entry: TaskEntry, attempt: Attempt, worker: str, digest: bytes, now: float) -> None:
        """``worker`` committed to its answer for ``entry`` (its ``attempt`` belongs to a round)."""
        c = self.c
        r = attempt.round
        assert r is not None
        try:
            to_reveal = r.add_commitment(worker, digest)
        except VerificationError as exc:
            self.placement.end_attempt(entry, worker)
            c.attempt_failed(entry, worker, f"{worker}: {exc}", now, penalise=True)
            return
        attempt.committed = True
        attempt.accept()  # a commitment answers the offer too (a worker may skip TaskAccepted)
        # its work is done: it waits for the round (its reveal then gets ATTEMPT_GRACE_S), within the job deadline
        attempt.deadline_s = max(attempt.deadline_s, entry.ref.deadline_s)
        self.placement.uncount(attempt)  # and its slot is free again (the worker releases it when it commits)
        c.note(entry, f"{len(r.committed)} of {r.commitments_needed} commitments received")
        self._request_reveals(entry, r, to_reveal, now)
        self.maybe_open_reveals(entry, now)

    def _request_reveals(self, entry: TaskEntry, r: CommitReveal, workers: list[str], now: float) -> None:
        for w in workers:
            attempt = entry.attempts.get(w)
            if attempt is not None and attempt.round is r:  # not those that dropped out since they committed
                attempt.deadline_s = now + ATTEMPT_GRACE_S
                self.c.effects.append(RequestReveal(entry.ref.task_id, w))

    def maybe_open_reveals(self, entry: TaskEntry, now: float) -> None:
        """Open the current round's reveals without the replicas that dropped out of it: once every replica of
        the round still out has committed and no replica is left to place (or the one left waits in the
        queue), nobody else will commit in it."""
        r = entry.reveal
        if r is None or r.phase is not Phase.COMMITTING or not r.committed or entry.state.final:
            return
        if not all(a.committed for a in entry.attempts.values() if a.round is r):
            return
        if entry.replicas_missing() > 0 and entry.queued_since_s is None:
            return
        self.c.note(entry, f"opening the reveals with {len(r.committed)} of {r.commitments_needed} commitments")
        self._request_reveals(entry, r, r.open_reveals(), now)

    # --- votes and decisions ------------------------------------------------------------------------------

    def vote(self, entry: TaskEntry, worker: str, claim: Claim | None, now: float,
             signers: frozenset[str] = frozenset()) -> None:
        """``worker``'s answer (None: a no-show with nothing to vote for) goes into the tally."""
        assert entry.tally is not None
        try:
            if claim is not None:
                decision = entry.tally.add_vote(worker, claim, signers)
            else:
                decision = entry.tally.add_no_show(worker)
        except VerificationError as exc:  # e.g. its tree shares a signer with another vote: it counts as a no-show
            entry.candidates.pop(worker, None)
            self.c.attempt_failed(entry, worker, f"vote of {worker} refused: {exc}", now, penalise=False)
            return
        cast = len(entry.tally.votes)
        self.c.note(entry, f"{cast} of {entry.tally.dispatched} replicas answered")
        self.on_decision(entry, decision, now)

    def no_show(self, entry: TaskEntry, worker: str) -> Decision | None:
        """``worker`` will not vote on ``entry`` (None: it had voted already, its vote stands)."""
        assert entry.tally is not None
        try:
            return entry.tally.add_no_show(worker)
        except VerificationError:
            return None

    def on_decision(self, entry: TaskEntry, decision: Decision, now: float) -> None:
        c = self.c
        assert entry.tally is not None
        if decision.state is TallyState.ACCEPTED and decision.accepted is not None:
            if self._reveals_due(entry):
                # Replicas that committed and were asked to reveal did the work already: their reveals (a round
                # trip away, within ATTEMPT_GRACE_S) are graded against the decision before the task is done.
                # Else a liar slower than the honest quorum would never be outvoted, nor lose trust.
                entry.move(TaskState.VERIFYING)
                return
            for w in entry.tally.agreeing():
                c.trust.record(w, Outcome.VALID, now)
            for w in entry.tally.dissenting():
                c.trust.record(w, Outcome.OUTVOTED, now)  # weak: colluders can outvote the honest (audits.py)
                c.note(entry, f"{w} was outvoted")
            self._decided(entry, decision.accepted, now)
        elif decision.state is TallyState.FAILED:
            why = f"replicas disagree and no answer reached a quorum ({decision.reason})"
            if not c.settle(entry, why, now):  # this peer's own run decides, if it can (audits.py)
                c.fail(entry, why, now)
        elif decision.replicas_to_add > 0:
            entry.replicas = entry.tally.dispatched
            if entry.reveal is not None:  # the added replicas commit and reveal in a round of their own
                entry.reveal = self.reveal_round(entry, decision.replicas_to_add)
            c.note(entry, f"replicas disagree: {decision.replicas_to_add} more replica(s)")
            self.placement.reconsider(entry)
            self.placement.place_one(entry, now)
        elif entry.tally.votes:
            entry.move(TaskState.VERIFYING)

    @staticmethod
    def decided_awaiting_reveals(entry: TaskEntry) -> bool:
        """Whether the task's vote is decided and it waits only for reveals to grade (see on_decision): a replica
        lost then costs the task no retry and is not placed again."""
        return entry.tally is not None and entry.tally.state is TallyState.ACCEPTED and not entry.state.final

    @staticmethod
    def _reveals_due(entry: TaskEntry) -> bool:
        """Whether a replica that committed was asked to reveal and has not answered yet."""
        return any(a.committed and a.round is not None and a.round.phase is Phase.REVEALING
                   for a in entry.attempts.values())

    def _decided(self, entry: TaskEntry, claim: Claim, now: float) -> None:
        if claim.failure is not None:
            self.c.escalate_or_fail(entry, claim.failure, f"the replicas agree on {claim.failure.name}", now)
            return
        winner = next(cand for cand in entry.candidates.values() if cand.claim == claim)
        self.c.accept(entry, winner, now, checked=True)
