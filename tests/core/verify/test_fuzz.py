"""Bytes from a peer can only ever produce a VerificationError, never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.verify.chain import ReceiptTree, decode_any, verify_tree
from pangea_p2p.core.verify.merkle import MerkleProof
from pangea_p2p.core.verify.receipts import decode_receipt, verify_receipt
from pangea_p2p.errors import VerificationError

from . import vectors
from .helpers import CONFIG

RECEIPT = vectors.execution_receipt().wire
TREE = vectors.delegation_tree().encode()


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
    only_verification_errors(verify_receipt, r, r.binding, vectors.ISSUED_AT_S, CONFIG)
    only_verification_errors(decode_any, data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=3000), mutated(TREE)))
def test_tree_decoding_and_verifying_never_crash(data: bytes) -> None:
    try:
        tree = ReceiptTree.decode(data, CONFIG)
    except VerificationError:
        return
    only_verification_errors(verify_tree, tree, tree.receipt.binding, vectors.ISSUED_AT_S, CONFIG)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_proof_decoding_never_crashes(data: bytes) -> None:
    only_verification_errors(MerkleProof.decode, data)
