"""Redundant execution with voting: a per-task quorum state machine.

A task runs on several workers (replicas); each returns a *claim* — (output digest, fuel used), or a
deterministic typed failure with its fuel. Wasmtime fuel is deterministic for the same module, input and
engine, so honest replicas agree on both numbers, and the fuel doubles as a cheap divergence detector.

Theory of operation.
  States: COLLECTING -> ACCEPTED, or COLLECTING -> FAILED. Both end states are final.
  Events: ``add_workers(workers)`` (the task was given to them), ``add_vote(worker, claim, signers)`` and
  ``add_no_show(worker)`` (timed out, crashed, sent garbage). Only a worker the task was given to may vote
  (NOT_ASSIGNED otherwise), and the peers that signed one vote's receipts (a delegated replica has several)
  may not have signed another's (DUPLICATE_VOTE): one peer cannot be two replicas by hiding in two trees.
  Each returns a Decision: the state, the accepted claim, and how many replicas the caller must dispatch now.
  A claim is accepted when at least ``quorum`` distinct workers made it AND they are a strict majority of
  the votes cast so far (so two colluders cannot win a five-replica vote by voting first, and an escalated
  vote still needs a majority). When every dispatched replica has reported and nothing is accepted, the
  tally escalates: it asks for the fewest extra replicas that could let the leading claim win — at least
  one — unless that would exceed ``replicas_max``, in which case it FAILS (QUORUM_DISAGREEMENT when claims
  differed, NO_QUORUM when too few replicas answered).
  Invariants: each worker is counted once and each signer is in at most one vote (a second vote or no-show
  from a worker raises DUPLICATE_VOTE and changes nothing); ``dispatched <= replicas_max``; an accepted
  claim never changes; votes after the end are still recorded, so the caller can tell every agreeing and
  dissenting worker to the trust book.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pangea_p2p.core.cid import cid_from_digest
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pangea_p2p.core.verify.receipts import Receipt, VerifiedTree

# Failures that depend on the machine or the moment, not on (module, input): not a vote, a no-show.
NONDETERMINISTIC_FAILURES = frozenset(
    {FailureKind.TIMEOUT, FailureKind.WORKER_CRASHED, FailureKind.CANCELLED, FailureKind.REJECTED}
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a replica says the task produced. Equal claims are votes for the same answer."""

    output_digest: bytes | None  # sha2-256 of the output; None for a failure
    fuel_used: int
    failure: FailureKind | None = None

    @classmethod
    def from_receipt(cls, receipt: Receipt) -> Claim | None:
        """The claim a verified receipt makes; None when it reports a nondeterministic failure (a no-show)."""
        if receipt.failure in NONDETERMINISTIC_FAILURES:
            return None
        return cls(receipt.output_digest, receipt.fuel_used, receipt.failure)

    @classmethod
    def from_tree(cls, verified: VerifiedTree) -> Claim | None:
        """The claim a verified receipt tree makes; None for a nondeterministic failure (a no-show).

        LocalProtocolError for a delegation tree verified without its output: only the output's digest,
        checked against every leaf, can be voted on.
        """
        if verified.failure in NONDETERMINISTIC_FAILURES:
            return None
        if verified.failure is None and verified.output_digest is None:
            raise LocalProtocolError("verify a delegation tree with its output before voting on it")
        return cls(verified.output_digest, verified.fuel_used, verified.failure)

    def __str__(self) -> str:
        what = self.failure.name if self.failure is not None else cid_from_digest(self.output_digest or bytes(32))
        return f"{what} with {self.fuel_used} fuel"


class TallyState(enum.Enum):
    COLLECTING = "collecting"
    ACCEPTED = "accepted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decision:
    state: TallyState
    accepted: Claim | None = None
    replicas_to_add: int = 0  # dispatch this many more replicas now
    reason: RejectReason | None = None  # why it FAILED


def quorum_for(replicas: int) -> int:
    """The default quorum: everyone for one or two replicas, a strict majority from three on."""
    return replicas if replicas <= 2 else replicas // 2 + 1


class VoteTally:
    """The quorum state machine of one task (see the module docstring)."""

    __slots__ = ("_assigned", "_no_shows", "_signers", "_votes", "accepted", "dispatched", "quorum", "reason",
                 "replicas_max", "state")

    def __init__(
        self, replicas: int, quorum: int | None = None, replicas_max: int = 9, *, workers: Iterable[str] = ()
    ) -> None:
        quorum = quorum_for(replicas) if quorum is None else quorum
        if not 1 <= quorum <= replicas <= replicas_max:
            raise LocalProtocolError(
                f"voting needs 1 <= quorum <= replicas <= replicas_max, got {quorum}, {replicas}, {replicas_max}"
            )
        self.quorum = quorum
        self.replicas_max = replicas_max
        self.dispatched = replicas
        self.state = TallyState.COLLECTING
        self.accepted: Claim | None = None
        self.reason: RejectReason | None = None
        self._votes: dict[str, Claim] = {}
        self._no_shows: set[str] = set()
        self._assigned: set[str] = set(workers)
        self._signers: dict[str, str] = {}  # signer -> the worker whose vote it signed for

    def add_workers(self, workers: Iterable[str]) -> None:
        """The task was given to ``workers`` too: they may vote."""
        self._assigned.update(workers)

    @property
    def votes(self) -> dict[str, Claim]:
        return dict(self._votes)

    def agreeing(self) -> list[str]:
        """Workers whose claim is the accepted one."""
        return [w for w, c in self._votes.items() if self.accepted is not None and c == self.accepted]

    def dissenting(self) -> list[str]:
        """Workers whose claim differs from the accepted one (all voters, if nothing was accepted)."""
        return [w for w, c in self._votes.items() if c != self.accepted]

    def add_vote(self, worker: str, claim: Claim, signers: Iterable[str] = ()) -> Decision:
        """Count ``worker``'s claim. ``signers``: every peer that signed a receipt of its tree
        (``VerifiedTree.signers``; the worker itself is always one). NOT_ASSIGNED if the task was not given
        to ``worker``; DUPLICATE_VOTE if it already voted or was a no-show, or if a signer of this vote
        signed another vote. A refused vote changes nothing."""
        self._check_new(worker)
        signed = {worker, *signers}
        for signer in sorted(signed):
            other = self._signers.get(signer)
            if other is not None:
                raise VerificationError(
                    RejectReason.DUPLICATE_VOTE,
                    f"the vote of {worker} was signed by {signer}, who also signed the vote of {other}",
                )
        self._votes[worker] = claim
        for signer in signed:
            self._signers[signer] = worker
        return self._decide()

    def add_no_show(self, worker: str) -> Decision:
        """A dispatched replica will not vote (timeout, crash, bad receipt)."""
        self._check_new(worker)
        self._no_shows.add(worker)
        return self._decide()

    def _check_new(self, worker: str) -> None:
        if worker not in self._assigned:
            raise VerificationError(RejectReason.NOT_ASSIGNED, f"{worker} was not given this task, it cannot vote")
        if worker in self._votes or worker in self._no_shows:
            raise VerificationError(RejectReason.DUPLICATE_VOTE, f"{worker} already voted on this task")

    def _decide(self) -> Decision:
        if self.state is not TallyState.COLLECTING:
            return Decision(self.state, self.accepted, 0, self.reason)
        counts = Counter(self._votes.values())
        cast = len(self._votes)
        best, best_count = counts.most_common(1)[0] if counts else (None, 0)
        if best is not None and best_count >= self.quorum and 2 * best_count > cast:
            self.state, self.accepted = TallyState.ACCEPTED, best
            return Decision(self.state, best)
        if cast + len(self._no_shows) < self.dispatched:
            return Decision(self.state)
        extra = max(1, self.quorum - best_count, cast - 2 * best_count + 1)
        if self.dispatched + extra > self.replicas_max:
            self.state = TallyState.FAILED
            self.reason = RejectReason.QUORUM_DISAGREEMENT if len(counts) > 1 else RejectReason.NO_QUORUM
            return Decision(self.state, None, 0, self.reason)
        self.dispatched += extra
        return Decision(self.state, None, extra)
