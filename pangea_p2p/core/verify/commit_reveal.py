"""Commit, then reveal: replicas cannot copy each other's answers.

Each replica first sends only a commitment
    SHA-256("pangea/commit/v1\\0" || u8 len(job_id) || job_id || u8 len(task_id) || task_id
            || u8 status || output digest (32 bytes, zeros for a failure) || u64 fuel_used
            || u8 len(worker) || worker || nonce (16 bytes))
and reveals (claim, nonce) only once enough commitments are in. The worker's own peer id inside the hash
means a lazy worker that copies someone else's commitment cannot open it as its own; the nonce means the
commitment does not give away the answer (the set of plausible outputs can be small); the job and task ids
keep a commitment from being replayed on another task. Fuel is committed too, since the vote is on both.

Theory of operation (one round; an escalation that adds replicas opens a new round for them).
  Phases: COMMITTING -> REVEALING.
  ``add_commitment(worker, digest)`` is accepted only while COMMITTING, once per worker, and only from a
  worker the task was given to (``workers`` / ``add_workers``; NOT_ASSIGNED otherwise). When
  ``commitments_needed`` are in, or the caller gives up waiting and calls ``open_reveals()`` with at least
  ``commitments_min`` in, the phase turns to REVEALING and the call returns the workers to ask for their
  reveal. ``add_reveal(worker, claim, nonce)`` is accepted only from a worker the task was given to
  (NOT_ASSIGNED), only while REVEALING, once, from a worker that committed, and only if it hashes to that
  worker's commitment; it returns the claim for the VoteTally.
  Invariants: no commitment is accepted after the first reveal could have been seen (the phase never goes
  back); a worker has at most one commitment and one reveal; every returned claim opens its commitment.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from typing import TYPE_CHECKING

from pangea_p2p.core.verify.format import NONCE_BYTES, ZERO_DIGEST, encode_id, id_problem
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

    from pangea_p2p.core.verify.voting import Claim

COMMIT_TAG = b"pangea/commit/v1\x00"
_CLAIM = struct.Struct(">B32sQ")


def commitment(job_id: str, task_id: str, claim: Claim, worker: str, nonce: bytes) -> bytes:
    """The 32-byte commitment of ``worker`` to ``claim`` on a task."""
    problem = id_problem("job_id", job_id) or id_problem("task_id", task_id) or id_problem("worker", worker)
    if problem:
        raise LocalProtocolError(problem)
    if len(nonce) != NONCE_BYTES:
        raise LocalProtocolError(f"a commitment nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
    status = 0 if claim.failure is None else int(claim.failure)
    return hashlib.sha256(
        COMMIT_TAG + encode_id(job_id) + encode_id(task_id)
        + _CLAIM.pack(status, claim.output_digest or ZERO_DIGEST, claim.fuel_used)
        + encode_id(worker) + nonce
    ).digest()


def commit(job_id: str, task_id: str, claim: Claim, worker: str, rng: random.Random) -> tuple[bytes, bytes]:
    """(commitment, nonce) for a worker: send the first now, keep the nonce for the reveal."""
    nonce = rng.randbytes(NONCE_BYTES)
    return commitment(job_id, task_id, claim, worker, nonce), nonce


class Phase(enum.Enum):
    COMMITTING = "committing"
    REVEALING = "revealing"


class CommitReveal:
    """One commit-then-reveal round of one task, run by the peer that collects the votes."""

    __slots__ = ("_assigned", "_commitments", "_revealed", "commitments_min", "commitments_needed", "job_id", "phase",
                 "task_id")

    def __init__(
        self, job_id: str, task_id: str, commitments_needed: int, commitments_min: int | None = None, *,
        workers: Iterable[str] = (),
    ) -> None:
        commitments_min = commitments_needed if commitments_min is None else commitments_min
        if not 1 <= commitments_min <= commitments_needed:
            raise LocalProtocolError(
                f"need 1 <= commitments_min <= commitments_needed, got {commitments_min}, {commitments_needed}"
            )
        self.job_id = job_id
        self.task_id = task_id
        self.commitments_needed = commitments_needed
        self.commitments_min = commitments_min
        self.phase = Phase.COMMITTING
        self._commitments: dict[str, bytes] = {}
        self._revealed: set[str] = set()
        self._assigned: set[str] = set(workers)

    def add_workers(self, workers: Iterable[str]) -> None:
        """The task was given to ``workers`` too: they may commit."""
        self._assigned.update(workers)

    @property
    def committed(self) -> list[str]:
        return list(self._commitments)

    def add_commitment(self, worker: str, digest: bytes) -> list[str]:
        """Record a commitment; returns the workers to ask for reveals if this one opened the reveal phase."""
        if worker not in self._assigned:
            raise VerificationError(RejectReason.NOT_ASSIGNED, f"{worker} was not given this task, it cannot commit")
        if self.phase is not Phase.COMMITTING:
            raise VerificationError(
                RejectReason.OUT_OF_PHASE, f"commitment from {worker} arrived after reveals opened"
            )
        if worker in self._commitments:
            raise VerificationError(RejectReason.DUPLICATE_VOTE, f"{worker} already committed on this task")
        if len(digest) != 32:
            raise VerificationError(RejectReason.MALFORMED, f"commitment from {worker} is {len(digest)} bytes, not 32")
        self._commitments[worker] = bytes(digest)
        if len(self._commitments) >= self.commitments_needed:
            return self._open()
        return []

    def open_reveals(self) -> list[str]:
        """Stop waiting for commitments (deadline passed); needs ``commitments_min`` of them."""
        if self.phase is Phase.REVEALING:
            return []
        if len(self._commitments) < self.commitments_min:
            raise LocalProtocolError(
                f"only {len(self._commitments)} commitments, reveals need at least {self.commitments_min}"
            )
        return self._open()

    def _open(self) -> list[str]:
        self.phase = Phase.REVEALING
        return list(self._commitments)

    def add_reveal(self, worker: str, claim: Claim, nonce: bytes) -> Claim:
        """Check a reveal against its commitment; the returned claim goes to the VoteTally."""
        if worker not in self._assigned:
            raise VerificationError(RejectReason.NOT_ASSIGNED, f"{worker} was not given this task, it cannot reveal")
        if self.phase is not Phase.REVEALING:
            raise VerificationError(
                RejectReason.OUT_OF_PHASE, f"{worker} revealed before the commitments were in"
            )
        expected = self._commitments.get(worker)
        if expected is None:
            raise VerificationError(RejectReason.OUT_OF_PHASE, f"{worker} revealed without committing first")
        if worker in self._revealed:
            raise VerificationError(RejectReason.DUPLICATE_VOTE, f"{worker} already revealed on this task")
        if len(nonce) != NONCE_BYTES or commitment(self.job_id, self.task_id, claim, worker, nonce) != expected:
            raise VerificationError(
                RejectReason.COMMITMENT_MISMATCH, f"{worker}'s reveal ({claim}) does not open its commitment"
            )
        self._revealed.add(worker)
        return claim
