"""Majority voting and Byzantine tolerance of the per-task quorum state machine."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.receipts import issue_receipt
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally, quorum_for
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import NOW, WORKER, binding

RIGHT = Claim(hashlib.sha256(b"right").digest(), 1000)
WRONG = Claim(hashlib.sha256(b"wrong").digest(), 1000)
WRONG_FUEL = Claim(RIGHT.output_digest, 999)  # same bytes, different fuel: a divergence too


def run(tally: VoteTally, votes: list[tuple[str, Claim]]) -> TallyState:
    for worker, claim in votes:
        tally.add_vote(worker, claim)
    return tally.state


def test_quorum_defaults() -> None:
    assert [quorum_for(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_unanimous_pair_is_accepted() -> None:
    tally = VoteTally(2)
    assert tally.add_vote("a", RIGHT).state is TallyState.COLLECTING
    decision = tally.add_vote("b", RIGHT)
    assert decision.state is TallyState.ACCEPTED
    assert decision.accepted == RIGHT
    assert tally.agreeing() == ["a", "b"]
    assert tally.dissenting() == []


def test_majority_is_accepted_before_the_last_vote() -> None:
    tally = VoteTally(3)
    tally.add_vote("a", RIGHT)
    assert tally.add_vote("b", RIGHT).state is TallyState.ACCEPTED
    # a late dissent is still recorded, for the trust book
    tally.add_vote("c", WRONG)
    assert tally.accepted == RIGHT
    assert tally.dissenting() == ["c"]


@pytest.mark.parametrize("order", list(itertools.permutations(["good1", "good2", "bad"])))
def test_one_faulty_of_three_is_outvoted(order: tuple[str, ...]) -> None:
    tally = VoteTally(3)
    for worker in order:
        tally.add_vote(worker, WRONG if worker == "bad" else RIGHT)
    assert tally.state is TallyState.ACCEPTED
    assert tally.accepted == RIGHT
    assert tally.dissenting() == ["bad"]


@pytest.mark.parametrize("order", sorted(set(itertools.permutations("HHHXX"))))
def test_two_colluders_of_five_are_outvoted_in_every_order(order: tuple[str, ...]) -> None:
    tally = VoteTally(5)
    votes = [(f"{kind}{i}", RIGHT if kind == "H" else WRONG) for i, kind in enumerate(order)]
    assert run(tally, votes) is TallyState.ACCEPTED
    assert tally.accepted == RIGHT
    assert sorted(tally.dissenting()) == sorted(w for w, c in votes if c == WRONG)


def test_colluders_voting_first_do_not_win_early() -> None:
    tally = VoteTally(5)
    tally.add_vote("x1", WRONG)
    assert tally.add_vote("x2", WRONG).state is TallyState.COLLECTING
    tally.add_vote("h1", RIGHT)
    tally.add_vote("h2", RIGHT)
    assert tally.state is TallyState.COLLECTING
    assert tally.add_vote("h3", RIGHT).accepted == RIGHT


def test_fuel_divergence_is_disagreement() -> None:
    tally = VoteTally(2)
    tally.add_vote("a", RIGHT)
    decision = tally.add_vote("b", WRONG_FUEL)
    assert decision.state is TallyState.COLLECTING
    assert decision.replicas_to_add == 1


def test_disagreement_escalates_until_a_majority() -> None:
    tally = VoteTally(2, replicas_max=5)
    tally.add_vote("a", RIGHT)
    assert tally.add_vote("b", WRONG).replicas_to_add == 1
    assert tally.dispatched == 3
    decision = tally.add_vote("c", RIGHT)
    assert decision.state is TallyState.ACCEPTED
    assert decision.accepted == RIGHT
    assert tally.dissenting() == ["b"]


def test_escalation_asks_for_enough_replicas_to_outvote() -> None:
    # 3 replicas, quorum 2, three different answers: the leader (1 vote) needs 2 more to be a majority of 5
    tally = VoteTally(3, replicas_max=9)
    tally.add_vote("a", RIGHT)
    tally.add_vote("b", WRONG)
    decision = tally.add_vote("c", WRONG_FUEL)
    assert decision.replicas_to_add == 2
    tally.add_vote("d", RIGHT)
    assert tally.state is TallyState.COLLECTING  # 2 of 4 is not a majority
    assert tally.add_vote("e", RIGHT).accepted == RIGHT


def test_persistent_disagreement_fails_at_the_cap() -> None:
    tally = VoteTally(2, replicas_max=3)
    tally.add_vote("a", RIGHT)
    tally.add_vote("b", WRONG)
    decision = tally.add_vote("c", WRONG_FUEL)
    assert decision.state is TallyState.FAILED
    assert decision.reason is RejectReason.QUORUM_DISAGREEMENT
    assert tally.accepted is None
    assert sorted(tally.dissenting()) == ["a", "b", "c"]


def test_no_shows_escalate_then_fail_without_quorum() -> None:
    tally = VoteTally(2, replicas_max=3)
    tally.add_vote("a", RIGHT)
    assert tally.add_no_show("b").replicas_to_add == 1
    decision = tally.add_no_show("c")
    assert decision.state is TallyState.FAILED
    assert decision.reason is RejectReason.NO_QUORUM


def test_a_worker_votes_once() -> None:
    tally = VoteTally(3)
    tally.add_vote("a", WRONG)
    with pytest.raises(VerificationError) as err:
        tally.add_vote("a", WRONG)
    assert err.value.reason is RejectReason.DUPLICATE_VOTE
    with pytest.raises(VerificationError):
        tally.add_no_show("a")
    tally.add_vote("b", RIGHT)
    assert tally.state is TallyState.COLLECTING  # "a" was not counted twice
    assert tally.votes == {"a": WRONG, "b": RIGHT}


def test_a_sybil_cannot_stuff_the_ballot_under_one_id() -> None:
    tally = VoteTally(3)
    tally.add_vote("bad", WRONG)
    for _ in range(5):
        with pytest.raises(VerificationError):
            tally.add_vote("bad", WRONG)
    tally.add_vote("h1", RIGHT)
    assert tally.add_vote("h2", RIGHT).accepted == RIGHT


def test_deterministic_failures_are_votes_nondeterministic_are_no_shows() -> None:
    b = binding()
    trap = issue_receipt(WORKER, b, output_cid=None, failure=FailureKind.TRAP, fuel_used=5, now=NOW,
                         rng=random.Random(0))
    timeout = issue_receipt(WORKER, b, output_cid=None, failure=FailureKind.TIMEOUT, fuel_used=5, now=NOW,
                            rng=random.Random(0))
    ok = issue_receipt(WORKER, b, output_cid=cid_of(b"right"), fuel_used=1000, now=NOW, rng=random.Random(0))
    assert Claim.from_receipt(trap) == Claim(None, 5, FailureKind.TRAP)
    assert Claim.from_receipt(timeout) is None
    assert Claim.from_receipt(ok) == RIGHT
    assert "TRAP" in str(Claim.from_receipt(trap))
    assert cid_of(b"right") in str(RIGHT)


def test_finished_tally_stays_finished() -> None:
    tally = VoteTally(1)
    assert tally.add_vote("a", RIGHT).accepted == RIGHT
    decision = tally.add_vote("b", WRONG)
    assert decision.state is TallyState.ACCEPTED
    assert decision.accepted == RIGHT
    assert decision.replicas_to_add == 0


@pytest.mark.parametrize(("replicas", "quorum", "cap"), [(0, None, 3), (2, 3, 3), (4, None, 3), (2, 0, 3)])
def test_bad_tally_parameters(replicas: int, quorum: int | None, cap: int) -> None:
    with pytest.raises(LocalProtocolError):
        VoteTally(replicas, quorum, cap)


def test_random_byzantine_minorities_never_win() -> None:
    # any strict minority of liars, voting in any order and with any mix of wrong answers, loses
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 7)
        liars = rng.randint(0, (n - 1) // 2)
        workers = [f"w{i}" for i in range(n)]
        rng.shuffle(workers)
        tally = VoteTally(n, replicas_max=n)
        for i, w in enumerate(workers):
            claim = Claim(bytes([rng.randint(1, 2)]) * 32, 7) if i < liars else RIGHT
            tally.add_vote(w, claim)
        assert tally.state is TallyState.ACCEPTED, (n, liars)
        assert tally.accepted == RIGHT, (n, liars)
