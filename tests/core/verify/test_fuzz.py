"""Bytes from a peer can only ever produce a VerificationError, never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.verify.execution import verify_receipt
from pangea_p2p.core.verify.merkle import MerkleProof
from pangea_p2p.core.verify.receipts import ReceiptTree, decode_any, decode_receipt
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.errors import VerificationError

from . import vectors
from .helpers import CONFIG

RECEIPT = vectors.execution_receipt().wire
TREE = vectors.delegation_tree().encode()
HONEST_TREE = vectors.delegation_tree()


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x20]))
    return bytes(data)


def only_verification_errors(call: object, *args: object) -> None:
    assert callable(call)
    with contextlib.suppress(VerificationError):
        call(*args)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=1200), mutated(RECEIPT)))
def test_receipt_decoding_and_verifying_never_crash(data: bytes) -> None:
    try:
        r = decode_receipt(data)
    except VerificationError:
        return
    # verified as given to its own signer and with the honest output, so every check gets to run
    with contextlib.suppress(VerificationError):
        verify_receipt(r, r.binding, vectors.ISSUED_AT_S, CONFIG, worker=r.worker, output=vectors.OUTPUT)
    only_verification_errors(decode_any, data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=3000), mutated(TREE)))
def test_tree_decoding_and_verifying_never_crash(data: bytes) -> None:
    try:
        tree = ReceiptTree.decode(data, CONFIG)
    except VerificationError:
        return
    with contextlib.suppress(VerificationError):
        verify_tree(tree, tree.receipt.binding, vectors.ISSUED_AT_S, CONFIG, worker=tree.receipt.signer,
                    output=vectors.TREE_OUTPUT)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=40), mutated(vectors.OUTPUT)))
def test_receipt_accepts_only_its_own_output(output: bytes) -> None:
    r = decode_receipt(RECEIPT)
    try:
        verify_receipt(r, r.binding, vectors.ISSUED_AT_S, CONFIG, worker=r.worker, output=output)
    except VerificationError:
        assert output != vectors.OUTPUT
    else:
        assert output == vectors.OUTPUT


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=40), mutated(vectors.TREE_OUTPUT)))
def test_tree_accepts_only_its_own_output(output: bytes) -> None:
    # a delegation root has no output id of its own: the leaves' parts, checked one by one, must pin it down
    tree = HONEST_TREE
    try:
        verify_tree(tree, tree.receipt.binding, vectors.ISSUED_AT_S, CONFIG, worker=tree.receipt.signer,
                    output=output)
    except VerificationError:
        assert output != vectors.TREE_OUTPUT
    else:
        assert output == vectors.TREE_OUTPUT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_proof_decoding_never_crashes(data: bytes) -> None:
    only_verification_errors(MerkleProof.decode, data)
