"""Spot checks: re-executing k random chunks catches wrong chunks behind a Merkle commitment."""

from __future__ import annotations

import random

import pytest

from pangea_p2p.core.verify.merkle import MerkleProof, MerkleTree
from pangea_p2p.core.verify.spotcheck import SpotCheck, SpotState, choose_chunks
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError


def compute(i: int) -> bytes:
    """The 'task': what re-executing chunk i gives."""
    return f"chunk {i} squared is {i * i}".encode()


CHUNKS = [compute(i) for i in range(20)]
TREE = MerkleTree.from_chunks(CHUNKS)


def test_choice_is_seeded_distinct_and_bounded() -> None:
    a = choose_chunks(100, 5, random.Random(1))
    assert a == choose_chunks(100, 5, random.Random(1))
    assert a != choose_chunks(100, 5, random.Random(2))
    assert len(set(a)) == 5
    assert all(0 <= i < 100 for i in a)
    assert list(a) == sorted(a)
    assert choose_chunks(3, 10, random.Random(1)) == (0, 1, 2)
    assert choose_chunks(0, 3, random.Random(1)) == ()
    with pytest.raises(LocalProtocolError):
        choose_chunks(-1, 1, random.Random(1))


def test_honest_worker_passes() -> None:
    check = SpotCheck.start(TREE.root, len(CHUNKS), 4, random.Random(3))
    for i in check.indexes:
        check.add_claim(i, CHUNKS[i], TREE.proof(i))
    for i in check.indexes[:-1]:
        assert check.add_reexecution(i, compute(i)) is SpotState.PENDING
    assert check.add_reexecution(check.indexes[-1], compute(check.indexes[-1])) is SpotState.PASSED
    assert check.error is None


def test_wrong_chunk_behind_a_valid_proof_is_caught() -> None:
    # the worker committed to a wrong chunk 7 and proves it faithfully: the proof is fine, the bytes are not
    bad = list(CHUNKS)
    bad[7] = b"made up"
    tree = MerkleTree.from_chunks(bad)
    check = SpotCheck(tree.root, len(bad), [3, 7])
    check.add_reexecution(7, compute(7))
    assert check.add_claim(7, bad[7], tree.proof(7)) is SpotState.FAILED
    assert check.error is not None
    assert check.error.reason is RejectReason.SPOT_CHECK_MISMATCH
    assert "chunk 7" in str(check.error)


def test_right_chunk_with_a_proof_that_does_not_lead_to_the_root() -> None:
    bad = list(CHUNKS)
    bad[7] = b"made up"
    tree = MerkleTree.from_chunks(bad)
    # the worker sends the true chunk 7 with its proof, but it committed to the made-up one
    check = SpotCheck(tree.root, len(bad), [7])
    assert check.add_claim(7, CHUNKS[7], TREE.proof(7)) is SpotState.FAILED
    assert check.error is not None
    assert check.error.reason is RejectReason.PROOF_INVALID


def test_proof_for_another_size_is_refused() -> None:
    # the root alone does not fix the size (RFC 6962), so the check insists on the signed chunk count
    chunks = [b"a", b"b", b"c"]
    tree = MerkleTree.from_chunks(chunks)
    check = SpotCheck(tree.root, 3, [0])
    assert check.add_claim(0, b"a", MerkleProof(0, 4, tree.proof(0).path)) is SpotState.FAILED
    assert check.error is not None
    assert check.error.reason is RejectReason.PROOF_INVALID


def test_full_output_instead_of_proofs() -> None:
    check = SpotCheck.start(TREE.root, len(CHUNKS), 3, random.Random(4))
    assert check.add_claims_from_output(CHUNKS) is SpotState.PENDING
    for i in check.indexes:
        check.add_reexecution(i, compute(i))
    assert check.state is SpotState.PASSED
    tampered = list(CHUNKS)
    tampered[0] = b"x"
    other = SpotCheck.start(TREE.root, len(CHUNKS), 3, random.Random(4))
    assert other.add_claims_from_output(tampered) is SpotState.FAILED
    assert other.error is not None
    assert other.error.reason is RejectReason.PROOF_INVALID
    short = SpotCheck.start(TREE.root, len(CHUNKS), 3, random.Random(4))
    assert short.add_claims_from_output(CHUNKS[:-1]) is SpotState.FAILED


def test_an_output_verified_already_needs_no_root_and_no_proofs() -> None:
    # what a coordinator does: the worker's whole output was checked against its receipts on arrival
    check = SpotCheck.start(None, len(CHUNKS), 3, random.Random(4))
    assert check.indexes == SpotCheck.start(TREE.root, len(CHUNKS), 3, random.Random(4)).indexes  # same draw
    assert check.add_verified_output(CHUNKS) is SpotState.PENDING
    first, *rest = check.indexes
    assert check.waiting(first)
    assert check.add_reexecution(first, compute(first)) is SpotState.PENDING
    assert not check.waiting(first)
    for i in rest:
        check.add_reexecution(i, compute(i))
    assert check.state is SpotState.PASSED
    with pytest.raises(LocalProtocolError):  # proofs need a root to lead to
        SpotCheck.start(None, len(CHUNKS), 3, random.Random(4)).add_claim(0, CHUNKS[0], TREE.proof(0))


def test_a_wrong_chunk_or_a_guest_that_fails_here_fails_the_check() -> None:
    wrong = list(CHUNKS)
    check = SpotCheck.start(None, len(CHUNKS), 2, random.Random(5))
    wrong[check.indexes[1]] = b"not what the guest computes"
    check.add_verified_output(wrong)
    assert check.add_reexecution(check.indexes[0], compute(check.indexes[0])) is SpotState.PENDING
    assert check.add_reexecution(check.indexes[1], compute(check.indexes[1])) is SpotState.FAILED
    assert check.error is not None
    assert check.error.reason is RejectReason.SPOT_CHECK_MISMATCH
    assert not check.waiting(check.indexes[1])
    trapped = SpotCheck.start(None, len(CHUNKS), 2, random.Random(5))
    trapped.add_verified_output(CHUNKS)
    assert trapped.add_reexecution(trapped.indexes[0], None) is SpotState.FAILED  # the worker said it succeeded
    assert trapped.error is not None
    assert trapped.error.reason is RejectReason.SPOT_CHECK_MISMATCH


def test_only_chosen_chunks_once_each() -> None:
    check = SpotCheck(TREE.root, len(CHUNKS), [1, 2])
    with pytest.raises(VerificationError) as err:
        check.add_claim(5, CHUNKS[5], TREE.proof(5))
    assert err.value.reason is RejectReason.BINDING_MISMATCH
    check.add_claim(1, CHUNKS[1], TREE.proof(1))
    with pytest.raises(VerificationError) as err:
        check.add_claim(1, CHUNKS[1], TREE.proof(1))
    assert err.value.reason is RejectReason.DUPLICATE_VOTE


def test_bad_parameters() -> None:
    for root, count, idx in [(TREE.root, 0, [0]), (b"x", 3, [0]), (TREE.root, 3, [3]), (TREE.root, 3, [1, 1]),
                             (TREE.root, 3, [])]:
        with pytest.raises(LocalProtocolError):
            SpotCheck(root, count, idx)


def test_detection_rate_follows_one_minus_one_minus_f_to_the_k() -> None:
    # a worker with 2 wrong chunks of 20 (f = 0.1) escapes k = 5 checks with probability ~0.9^5 = 0.59 (exactly
    # C(18,5)/C(20,5) = 0.553 without replacement); over 400 seeded checks the rate lands near that
    bad = list(CHUNKS)
    bad[4], bad[13] = b"lazy", b"lazier"
    tree = MerkleTree.from_chunks(bad)
    rng = random.Random(11)
    caught = 0
    for _ in range(400):
        check = SpotCheck.start(tree.root, len(bad), 5, rng)
        for i in check.indexes:
            check.add_claim(i, bad[i], tree.proof(i))
            check.add_reexecution(i, compute(i))
        caught += check.state is SpotState.FAILED
    assert 0.38 < caught / 400 < 0.52  # expected 1 - 0.553 = 0.447
