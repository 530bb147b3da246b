"""Majority voting and Byzantine tolerance of the per-task quorum state machine."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt, verify_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree, VerifiedTree
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally, quorum_for
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import CONFIG, LIMITS, NOW, WORKER, binding, identity

RIGHT = Claim(hashlib.sha256(b"right").digest(), 1000)
WRONG = Claim(hashlib.sha256(b"wrong").digest(), 1000)
WRONG_FUEL = Claim(RIGHT.output_digest, 999)  # same bytes, different fuel: a divergence too


def run(tally: VoteTally, votes: list[tuple[str, Claim]]) -> TallyState:
    for worker, claim in votes:
        tally.add_vote(worker, claim)
    return tally.state


def given_to(*workers: str) -> list[str]:
    return list(workers)


def test_quorum_defaults() -> None:
    assert [quorum_for(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_unanimous_pair_is_accepted() -> None:
    tally = VoteTally(2, workers=given_to("a", "b"))
    assert tally.add_vote("a", RIGHT).state is TallyState.COLLECTING
    decision = tally.add_vote("b", RIGHT)
    assert decision.state is TallyState.ACCEPTED
    assert decision.accepted == RIGHT
    assert tally.agreeing() == ["a", "b"]
    assert tally.dissenting() == []


def test_majority_is_accepted_before_the_last_vote() -> None:
    tally = VoteTally(3, workers=given_to("a", "b", "c"))
    tally.add_vote("a", RIGHT)
    assert tally.add_vote("b", RIGHT).state is TallyState.ACCEPTED
    # a late dissent is still recorded, for the trust book
    tally.add_vote("c", WRONG)
    assert tally.accepted == RIGHT
    assert tally.dissenting() == ["c"]


@pytest.mark.parametrize("order", list(itertools.permutations(["good1", "good2", "bad"])))
def test_one_faulty_of_three_is_outvoted(order: tuple[str, ...]) -> None:
    tally = VoteTally(3, workers=order)
    for worker in order:
        tally.add_vote(worker, WRONG if worker == "bad" else RIGHT)
    assert tally.state is TallyState.ACCEPTED
    assert tally.accepted == RIGHT
    assert tally.dissenting() == ["bad"]


@pytest.mark.parametrize("order", sorted(set(itertools.permutations("HHHXX"))))
def test_two_colluders_of_five_are_outvoted_in_every_order(order: tuple[str, ...]) -> None:
    votes = [(f"{kind}{i}", RIGHT if kind == "H" else WRONG) for i, kind in enumerate(order)]
    tally = VoteTally(5, workers=[w for w, _ in votes])
    assert run(tally, votes) is TallyState.ACCEPTED
    assert tally.accepted == RIGHT
    assert sorted(tally.dissenting()) == sorted(w for w, c in votes if c == WRONG)


def test_colluders_voting_first_do_not_win_early() -> None:
    tally = VoteTally(5, workers=given_to("x1", "x2", "h1", "h2", "h3"))
    tally.add_vote("x1", WRONG)
    assert tally.add_vote("x2", WRONG).state is TallyState.COLLECTING
    tally.add_vote("h1", RIGHT)
    tally.add_vote("h2", RIGHT)
    assert tally.state is TallyState.COLLECTING
    assert tally.add_vote("h3", RIGHT).accepted == RIGHT


def test_fuel_divergence_is_disagreement() -> None:
    tally = VoteTally(2, workers=given_to("a", "b"))
    tally.add_vote("a", RIGHT)
    decision = tally.add_vote("b", WRONG_FUEL)
    assert decision.state is TallyState.COLLECTING
    assert decision.replicas_to_add == 1


def test_disagreement_escalates_until_a_majority() -> None:
    tally = VoteTally(2, replicas_max=5, workers=given_to("a", "b"))
    tally.add_vote("a", RIGHT)
    assert tally.add_vote("b", WRONG).replicas_to_add == 1
    assert tally.dispatched == 3
    tally.add_workers(["c"])
    decision = tally.add_vote("c", RIGHT)
    assert decision.state is TallyState.ACCEPTED
    assert decision.accepted == RIGHT
    assert tally.dissenting() == ["b"]


def test_escalation_asks_for_enough_replicas_to_outvote() -> None:
    # 3 replicas, quorum 2, three different answers: the leader (1 vote) needs 2 more to be a majority of 5
    tally = VoteTally(3, replicas_max=9, workers=given_to("a", "b", "c"))
    tally.add_vote("a", RIGHT)
    tally.add_vote("b", WRONG)
    decision = tally.add_vote("c", WRONG_FUEL)
    assert decision.replicas_to_add == 2
    tally.add_workers(["d", "e"])
    tally.add_vote("d", RIGHT)
    assert tally.state is TallyState.COLLECTING  # 2 of 4 is not a majority
    assert tally.add_vote("e", RIGHT).accepted == RIGHT


def test_persistent_disagreement_fails_at_the_cap() -> None:
    tally = VoteTally(2, replicas_max=3, workers=given_to("a", "b"))
    tally.add_vote("a", RIGHT)
    tally.add_vote("b", WRONG)
    tally.add_workers(["c"])
    decision = tally.add_vote("c", WRONG_FUEL)
    assert decision.state is TallyState.FAILED
    assert decision.reason is RejectReason.QUORUM_DISAGREEMENT
    assert tally.accepted is None
    assert sorted(tally.dissenting()) == ["a", "b", "c"]


def test_no_shows_escalate_then_fail_without_quorum() -> None:
    tally = VoteTally(2, replicas_max=3, workers=given_to("a", "b"))
    tally.add_vote("a", RIGHT)
    assert tally.add_no_show("b").replicas_to_add == 1
    tally.add_workers(["c"])
    decision = tally.add_no_show("c")
    assert decision.state is TallyState.FAILED
    assert decision.reason is RejectReason.NO_QUORUM


def test_a_worker_votes_once() -> None:
    tally = VoteTally(3, workers=given_to("a", "b", "c"))
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
    tally = VoteTally(3, workers=given_to("bad", "h1", "h2"))
    tally.add_vote("bad", WRONG)
    for _ in range(5):
        with pytest.raises(VerificationError):
            tally.add_vote("bad", WRONG)
    tally.add_vote("h1", RIGHT)
    assert tally.add_vote("h2", RIGHT).accepted == RIGHT


def test_deterministic_failures_are_votes_nondeterministic_are_no_shows() -> None:
    b = binding()
    trap = issue_receipt(WORKER, b, failure=FailureKind.TRAP, fuel_used=5, now=NOW, rng=random.Random(0))
    timeout = issue_receipt(WORKER, b, failure=FailureKind.TIMEOUT, fuel_used=5, now=NOW, rng=random.Random(0))
    output = frame_chunks([b"ri", b"ght"])
    ok = issue_receipt(WORKER, b, output=output, fuel_used=1000, now=NOW, rng=random.Random(0))
    assert Claim.from_receipt(trap) == Claim(None, 5, FailureKind.TRAP)
    assert Claim.from_receipt(timeout) is None
    assert Claim.from_receipt(ok) == Claim(hashlib.sha256(output).digest(), 1000)
    assert "TRAP" in str(Claim.from_receipt(trap))
    assert cid_of(b"right") in str(RIGHT)


def test_finished_tally_stays_finished() -> None:
    tally = VoteTally(1, workers=given_to("a", "b"))
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
        tally = VoteTally(n, replicas_max=n, workers=workers)
        for i, w in enumerate(workers):
            claim = Claim(bytes([rng.randint(1, 2)]) * 32, 7) if i < liars else RIGHT
            tally.add_vote(w, claim)
        assert tally.state is TallyState.ACCEPTED, (n, liars)
        assert tally.accepted == RIGHT, (n, liars)


# --- only the workers the task was given to may vote -----------------------------------------------------------


def test_a_worker_the_task_was_not_given_to_cannot_vote() -> None:
    tally = VoteTally(2, workers=given_to("a", "b"))
    tally.add_vote("a", WRONG)
    with pytest.raises(VerificationError, match="mallory was not given this task") as err:
        tally.add_vote("mallory", WRONG)
    assert err.value.reason is RejectReason.NOT_ASSIGNED
    with pytest.raises(VerificationError) as err:
        tally.add_no_show("mallory")
    assert err.value.reason is RejectReason.NOT_ASSIGNED
    # nothing changed: "a" alone has voted, the tally still waits for "b"
    assert tally.votes == {"a": WRONG}
    assert tally.state is TallyState.COLLECTING
    decision = tally.add_vote("b", RIGHT)
    assert decision.replicas_to_add == 1
    with pytest.raises(VerificationError):
        tally.add_vote("c", RIGHT)  # escalated, but "c" was not given the task yet
    tally.add_workers(["c"])
    assert tally.add_vote("c", RIGHT).accepted == RIGHT


def test_unassigned_voters_cannot_win_against_a_tally_with_no_workers() -> None:
    tally = VoteTally(1)
    for w in ("x", "y", "z"):
        with pytest.raises(VerificationError) as err:
            tally.add_vote(w, WRONG)
        assert err.value.reason is RejectReason.NOT_ASSIGNED
    assert tally.state is TallyState.COLLECTING
    assert tally.votes == {}


# --- one peer cannot be two replicas by hiding in two receipt trees --------------------------------------------

TASK = binding("t", chunk_count=4)
CHUNKS = [f"result {i}".encode() for i in range(4)]
OUTPUT = frame_chunks(CHUNKS)
D1, D2, D3 = identity(50), identity(51), identity(52)
X, Y, Z = identity(60), identity(61), identity(62)


def direct(worker: Identity, seed: int = 0) -> VerifiedTree:
    """A replica that ran the task itself."""
    r = issue_receipt(worker, TASK, output=OUTPUT, fuel_used=4000, now=NOW, rng=random.Random(seed))
    return verify_receipt(r, TASK, NOW, CONFIG, worker=worker.peer_id, output=OUTPUT)


def delegated_tree(delegator: Identity, leaves: tuple[Identity, Identity], seed: int = 0) -> ReceiptTree:
    """A replica that split the task in two and delegated the halves to ``leaves``."""
    rng = random.Random(seed)
    half = dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // 2)
    kids = []
    for j, leaf in enumerate(leaves):
        b = binding(f"t.{j}", issuer=delegator, parent_task_id="t", limits=half, chunk_count=2)
        kids.append(ReceiptTree(issue_receipt(leaf, b, output=frame_chunks(CHUNKS[2 * j : 2 * j + 2]),
                                              fuel_used=2000, now=NOW - 5, rng=rng)))
    return delegate(delegator, TASK, kids, now=NOW - 1, rng=rng)


def delegated(delegator: Identity, leaves: tuple[Identity, Identity], seed: int = 0) -> VerifiedTree:
    tree = delegated_tree(delegator, leaves, seed)
    return verify_tree(tree, TASK, NOW, CONFIG, worker=delegator.peer_id, output=OUTPUT)


def vote(tally: VoteTally, verified: VerifiedTree) -> TallyState:
    claim = Claim.from_tree(verified)
    assert claim is not None
    return tally.add_vote(verified.worker, claim, verified.signers).state


def test_a_peer_hiding_as_a_leaf_in_two_replica_trees_is_a_duplicate_vote() -> None:
    # D1 and D2 were given the task; both delegate half of it to X. Were both votes counted, X's one answer
    # would count twice: the second vote is refused, and changes nothing.
    first, second = delegated(D1, (X, Y)), delegated(D2, (X, Z))
    tally = VoteTally(2, workers=[D1.peer_id, D2.peer_id])
    assert vote(tally, first) is TallyState.COLLECTING
    with pytest.raises(VerificationError, match=f"signed by {X.peer_id}, who also signed the vote of {D1.peer_id}"
                       ) as err:
        vote(tally, second)
    assert err.value.reason is RejectReason.DUPLICATE_VOTE
    assert tally.state is TallyState.COLLECTING
    assert list(tally.votes) == [D1.peer_id]
    # the caller counts D2 as a no-show and dispatches one more replica, which decides
    decision = tally.add_no_show(D2.peer_id)
    assert decision.replicas_to_add == 1
    tally.add_workers([D3.peer_id])
    assert vote(tally, direct(D3)) is TallyState.ACCEPTED
    assert tally.agreeing() == [D1.peer_id, D3.peer_id]


def test_a_replica_hiding_in_another_replicas_tree_is_a_duplicate_vote() -> None:
    # X was given the task itself and also ran half of D1's replica: either order, one of the two is refused
    for order in ((direct(X), delegated(D1, (X, Y))), (delegated(D1, (X, Y)), direct(X))):
        tally = VoteTally(2, workers=[X.peer_id, D1.peer_id])
        vote(tally, order[0])
        with pytest.raises(VerificationError) as err:
            vote(tally, order[1])
        assert err.value.reason is RejectReason.DUPLICATE_VOTE
        assert list(tally.votes) == [order[0].worker]


def test_replicas_with_disjoint_signers_all_count() -> None:
    tally = VoteTally(3, workers=[D1.peer_id, D2.peer_id, X.peer_id])
    vote(tally, delegated(D1, (Y, Z)))
    vote(tally, direct(X))
    assert tally.state is TallyState.ACCEPTED
    assert vote(tally, delegated(D2, (D3, identity(63)))) is TallyState.ACCEPTED
    assert tally.dissenting() == []


@st.composite
def ballots(draw: st.DrawFn) -> list[tuple[str, frozenset[str]]]:
    peers = [f"p{i}" for i in range(8)]
    return draw(st.lists(st.tuples(st.sampled_from(peers), st.frozensets(st.sampled_from(peers), max_size=3)),
                         max_size=12))


@settings(max_examples=200, deadline=None)
@given(assigned=st.frozensets(st.sampled_from([f"p{i}" for i in range(8)])), votes=ballots())
def test_a_vote_counts_exactly_when_its_signers_are_new(
    assigned: frozenset[str], votes: list[tuple[str, frozenset[str]]]
) -> None:
    # the model: a vote counts iff its worker was given the task and has not voted, and no peer that signed it
    # (the worker included) signed a vote that counted; a refused vote changes nothing
    tally = VoteTally(1, replicas_max=1, workers=assigned)
    signed: set[str] = set()
    counted: dict[str, Claim] = {}
    for worker, signers in votes:
        before = tally.votes
        claim = WRONG if len(counted) % 2 else RIGHT
        if worker not in assigned:
            expected: RejectReason | None = RejectReason.NOT_ASSIGNED
        elif worker in counted or signed & (signers | {worker}):
            expected = RejectReason.DUPLICATE_VOTE
        else:
            expected = None
        if expected is None:
            tally.add_vote(worker, claim, signers)
            counted[worker] = claim
            signed |= signers | {worker}
        else:
            with pytest.raises(VerificationError) as err:
                tally.add_vote(worker, claim, signers)
            assert err.value.reason is expected
            assert tally.votes == before
    assert tally.votes == counted


# --- claims from verified receipts and trees ---------------------------------------------------------------


def test_claim_from_a_verified_receipt() -> None:
    verified = direct(WORKER)
    claim = Claim.from_tree(verified)
    assert claim == Claim(hashlib.sha256(OUTPUT).digest(), 4000)
    assert claim == Claim.from_receipt(verified.leaves[0])


@pytest.mark.parametrize("failure", list(FailureKind))
def test_claim_from_a_verified_failure(failure: FailureKind) -> None:
    r = issue_receipt(WORKER, TASK, failure=failure, fuel_used=77, now=NOW, rng=random.Random(0))
    claim = Claim.from_tree(verify_receipt(r, TASK, NOW, CONFIG, worker=WORKER.peer_id))
    if failure in (FailureKind.TIMEOUT, FailureKind.WORKER_CRASHED, FailureKind.CANCELLED, FailureKind.REJECTED):
        assert claim is None  # the machine or the moment, not the task: a no-show
    else:
        assert claim == Claim(None, 77, failure)
    assert claim == Claim.from_receipt(r)


def test_claim_from_a_delegation_tree_needs_its_output() -> None:
    tree = delegated_tree(D1, (X, Y))
    without = verify_tree(tree, TASK, NOW, CONFIG, worker=D1.peer_id)
    assert without.output_digest is None
    with pytest.raises(LocalProtocolError, match="verify a delegation tree with its output"):
        Claim.from_tree(without)
    with_output = verify_tree(tree, TASK, NOW, CONFIG, worker=D1.peer_id, output=OUTPUT)
    assert Claim.from_tree(with_output) == Claim(hashlib.sha256(OUTPUT).digest(), 4000)


def test_a_direct_and_a_delegated_replica_of_the_same_output_agree() -> None:
    # the claim of a tree is over the whole output, so it compares with a replica that ran everything itself
    assert Claim.from_tree(direct(WORKER)) == Claim.from_tree(delegated(D1, (X, Y)))
    tally = VoteTally(2, workers=[WORKER.peer_id, D1.peer_id])
    vote(tally, direct(WORKER))
    assert vote(tally, delegated(D1, (X, Y))) is TallyState.ACCEPTED
    assert tally.accepted == Claim(hashlib.sha256(OUTPUT).digest(), 4000)
