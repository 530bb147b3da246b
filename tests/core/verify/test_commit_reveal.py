"""Commit, then reveal: a lazy worker cannot copy another's answer."""

from __future__ import annotations

import hashlib
import random

import pytest

from pangea_p2p.core.verify.commit_reveal import CommitReveal, Phase, commit, commitment
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import OTHER, SUBMITTER, WORKER, identity

JOB, TASK = "job-1", "t0"
RIGHT = Claim(hashlib.sha256(b"right").digest(), 1000)
HONEST = [WORKER.peer_id, identity(4).peer_id, identity(5).peer_id]
LAZY = OTHER.peer_id  # a replica that would rather copy than compute
GIVEN_TO = [*HONEST, LAZY]


def reason(call: object, *args: object) -> RejectReason:
    assert callable(call)
    with pytest.raises(VerificationError) as err:
        call(*args)
    return err.value.reason


def test_honest_round_feeds_the_vote() -> None:
    rng = random.Random(1)
    round_ = CommitReveal(JOB, TASK, commitments_needed=3, workers=HONEST)
    nonces = {}
    for i, w in enumerate(HONEST):
        digest, nonces[w] = commit(JOB, TASK, RIGHT, w, rng)
        opened = round_.add_commitment(w, digest)
        assert opened == ([] if i < 2 else HONEST)
    assert round_.phase is Phase.REVEALING
    tally = VoteTally(3, workers=HONEST)
    for w in HONEST:
        tally.add_vote(w, round_.add_reveal(w, RIGHT, nonces[w]))
    assert tally.state is TallyState.ACCEPTED
    assert tally.accepted == RIGHT


def test_copying_a_commitment_does_not_open_as_your_own() -> None:
    rng = random.Random(2)
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=GIVEN_TO)
    honest_digest, honest_nonce = commit(JOB, TASK, RIGHT, HONEST[0], rng)
    round_.add_commitment(HONEST[0], honest_digest)
    round_.add_commitment(LAZY, honest_digest)  # the lazy worker sends a copy of what it saw
    round_.add_reveal(HONEST[0], RIGHT, honest_nonce)
    # ... and even after seeing the honest reveal (claim and nonce), it cannot open the copy as its own
    assert reason(round_.add_reveal, LAZY, RIGHT, honest_nonce) is RejectReason.COMMITMENT_MISMATCH


def test_committing_after_reveals_opened_is_refused() -> None:
    rng = random.Random(3)
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=GIVEN_TO)
    for w in HONEST[:2]:
        round_.add_commitment(w, commit(JOB, TASK, RIGHT, w, rng)[0])
    # the lazy worker now learns the answer from a reveal and tries to commit to it
    late, _ = commit(JOB, TASK, RIGHT, LAZY, rng)
    assert reason(round_.add_commitment, LAZY, late) is RejectReason.OUT_OF_PHASE
    assert reason(round_.add_reveal, LAZY, RIGHT, bytes(16)) is RejectReason.OUT_OF_PHASE


def test_revealing_early_is_refused_and_can_be_retried() -> None:
    rng = random.Random(4)
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=GIVEN_TO)
    digest, nonce = commit(JOB, TASK, RIGHT, HONEST[0], rng)
    round_.add_commitment(HONEST[0], digest)
    assert reason(round_.add_reveal, HONEST[0], RIGHT, nonce) is RejectReason.OUT_OF_PHASE
    round_.add_commitment(HONEST[1], commit(JOB, TASK, RIGHT, HONEST[1], rng)[0])
    assert round_.add_reveal(HONEST[0], RIGHT, nonce) == RIGHT


def test_reveal_must_match_claim_nonce_and_task() -> None:
    rng = random.Random(5)
    round_ = CommitReveal(JOB, TASK, commitments_needed=1, workers=GIVEN_TO)
    digest, nonce = commit(JOB, TASK, RIGHT, HONEST[0], rng)
    round_.add_commitment(HONEST[0], digest)
    other = Claim(RIGHT.output_digest, RIGHT.fuel_used + 1)
    assert reason(round_.add_reveal, HONEST[0], other, nonce) is RejectReason.COMMITMENT_MISMATCH
    assert reason(round_.add_reveal, HONEST[0], RIGHT, bytes(16)) is RejectReason.COMMITMENT_MISMATCH
    assert reason(round_.add_reveal, HONEST[0], RIGHT, nonce[:8]) is RejectReason.COMMITMENT_MISMATCH
    # a commitment made for another task does not open here
    elsewhere = CommitReveal(JOB, "t1", commitments_needed=1, workers=GIVEN_TO)
    elsewhere.add_commitment(HONEST[0], digest)
    assert reason(elsewhere.add_reveal, HONEST[0], RIGHT, nonce) is RejectReason.COMMITMENT_MISMATCH
    assert round_.add_reveal(HONEST[0], RIGHT, nonce) == RIGHT


def test_one_commitment_and_one_reveal_per_worker() -> None:
    rng = random.Random(6)
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=GIVEN_TO)
    digest, nonce = commit(JOB, TASK, RIGHT, HONEST[0], rng)
    round_.add_commitment(HONEST[0], digest)
    assert reason(round_.add_commitment, HONEST[0], digest) is RejectReason.DUPLICATE_VOTE
    round_.add_commitment(HONEST[1], commit(JOB, TASK, RIGHT, HONEST[1], rng)[0])
    round_.add_reveal(HONEST[0], RIGHT, nonce)
    assert reason(round_.add_reveal, HONEST[0], RIGHT, nonce) is RejectReason.DUPLICATE_VOTE
    assert reason(round_.add_reveal, HONEST[2], RIGHT, nonce) is RejectReason.OUT_OF_PHASE  # never committed
    assert reason(round_.add_reveal, SUBMITTER.peer_id, RIGHT, nonce) is RejectReason.NOT_ASSIGNED


def test_deadline_opens_reveals_with_enough_commitments() -> None:
    rng = random.Random(7)
    round_ = CommitReveal(JOB, TASK, commitments_needed=3, commitments_min=2, workers=GIVEN_TO)
    round_.add_commitment(HONEST[0], commit(JOB, TASK, RIGHT, HONEST[0], rng)[0])
    with pytest.raises(LocalProtocolError):
        round_.open_reveals()
    round_.add_commitment(HONEST[1], commit(JOB, TASK, RIGHT, HONEST[1], rng)[0])
    assert sorted(round_.open_reveals()) == sorted(HONEST[:2])
    assert round_.open_reveals() == []
    assert reason(round_.add_commitment, HONEST[2], b"\x00" * 32) is RejectReason.OUT_OF_PHASE


def test_commitment_hides_and_binds() -> None:
    n1, n2 = bytes(16), b"\x01" * 16
    w = HONEST[0]
    assert commitment(JOB, TASK, RIGHT, w, n1) != commitment(JOB, TASK, RIGHT, w, n2)  # hiding: fresh nonce
    assert commitment(JOB, TASK, RIGHT, w, n1) != commitment(JOB, TASK, RIGHT, LAZY, n1)  # bound to the worker
    failed = Claim(None, 5, FailureKind.TRAP)
    assert commitment(JOB, TASK, failed, w, n1) != commitment(JOB, TASK, Claim(None, 5, FailureKind.OUT_OF_FUEL), w,
                                                              n1)
    with pytest.raises(LocalProtocolError):
        commitment(JOB, TASK, RIGHT, w, b"short")
    with pytest.raises(LocalProtocolError):
        commitment("bad job", TASK, RIGHT, w, n1)


def test_malformed_commitment() -> None:
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=GIVEN_TO)
    assert reason(round_.add_commitment, HONEST[0], b"\x00" * 31) is RejectReason.MALFORMED


def test_a_peer_the_task_was_not_given_to_cannot_commit() -> None:
    # unassigned peers cannot fill the round and open the reveals early, nor get their commitment in
    rng = random.Random(8)
    round_ = CommitReveal(JOB, TASK, commitments_needed=2, workers=HONEST[:2])
    round_.add_commitment(HONEST[0], commit(JOB, TASK, RIGHT, HONEST[0], rng)[0])
    outsider = identity(9).peer_id
    with pytest.raises(VerificationError, match="was not given this task, it cannot commit") as err:
        round_.add_commitment(outsider, commit(JOB, TASK, RIGHT, outsider, rng)[0])
    assert err.value.reason is RejectReason.NOT_ASSIGNED
    assert round_.committed == [HONEST[0]]
    assert round_.phase is Phase.COMMITTING
    # NOT_ASSIGNED comes first, whatever else is wrong with the message
    assert reason(round_.add_commitment, outsider, b"short") is RejectReason.NOT_ASSIGNED
    round_.add_workers([outsider])
    assert round_.add_commitment(outsider, commit(JOB, TASK, RIGHT, outsider, rng)[0]) == [HONEST[0], outsider]


def test_a_peer_the_task_was_not_given_to_cannot_reveal() -> None:
    rng = random.Random(9)
    round_ = CommitReveal(JOB, TASK, commitments_needed=1, workers=[HONEST[0]])
    digest, nonce = commit(JOB, TASK, RIGHT, HONEST[0], rng)
    round_.add_commitment(HONEST[0], digest)
    assert reason(round_.add_reveal, LAZY, RIGHT, nonce) is RejectReason.NOT_ASSIGNED
    assert round_.add_reveal(HONEST[0], RIGHT, nonce) == RIGHT


def test_a_round_with_no_workers_accepts_nothing() -> None:
    round_ = CommitReveal(JOB, TASK, commitments_needed=1)
    assert reason(round_.add_commitment, HONEST[0], bytes(32)) is RejectReason.NOT_ASSIGNED
    assert round_.committed == []
