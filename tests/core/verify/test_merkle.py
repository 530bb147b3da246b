from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.verify.merkle import (
    EMPTY_ROOT,
    MerkleProof,
    MerkleTree,
    check_inclusion,
    leaf_hash,
    node_hash,
    root_from_proof,
    root_of,
    verify_inclusion,
)
from pangea_p2p.errors import RejectReason, VerificationError

# The Certificate Transparency reference data for RFC 6962 (the same leaves, roots and audit paths appear in
# the CT project's merkle tree tests and in the independent implementations that check against them).
CT_LEAVES = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
]]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def rfc6962_root(chunks: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 §2.1: split at the largest power of two smaller than n."""
    n = len(chunks)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + chunks[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_root(chunks[:k]) + rfc6962_root(chunks[k:])).digest()


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert MerkleTree.from_chunks([]).root == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert root_of([]) == EMPTY_ROOT


@pytest.mark.parametrize("n", range(1, 9))
def test_certificate_transparency_roots(n: int) -> None:
    assert MerkleTree.from_chunks(CT_LEAVES[:n]).root.hex() == CT_ROOTS[n - 1]
    assert root_of(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_certificate_transparency_audit_paths(index: int, size: int, path: list[str]) -> None:
    tree = MerkleTree.from_chunks(CT_LEAVES[:size])
    proof = tree.proof(index)
    assert [p.hex() for p in proof.path] == path
    assert verify_inclusion(bytes.fromhex(CT_ROOTS[size - 1]), CT_LEAVES[index], proof)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = b"a" * 32, b"b" * 32
    # an inner node over (a, b) is not the leaf a||b: the second-preimage attack RFC 6962's prefixes stop
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert leaf_hash(a) == hashlib.sha256(b"\x00" + a).digest()
    # a two-leaf tree cannot be passed off as a one-leaf tree over the concatenated leaf hashes
    two = MerkleTree.from_chunks([a, b]).root
    assert two != MerkleTree.from_chunks([leaf_hash(a) + leaf_hash(b)]).root


def test_odd_node_is_promoted_not_duplicated() -> None:
    chunks = [b"x", b"y", b"z"]
    la, lb, lc = (leaf_hash(c) for c in chunks)
    assert root_of(chunks) == node_hash(node_hash(la, lb), lc)
    # Bitcoin-style duplication of the last leaf would make [x, y, z] and [x, y, z, z] collide
    assert root_of(chunks) != root_of([*chunks, b"z"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=70))
def test_every_leaf_proof_verifies(chunks: list[bytes]) -> None:
    tree = MerkleTree.from_chunks(chunks)
    assert tree.root == rfc6962_root(chunks)
    for i, chunk in enumerate(chunks):
        proof = tree.proof(i)
        assert len(proof.path) <= (len(chunks) - 1).bit_length()
        assert verify_inclusion(tree.root, chunk, proof)
        assert MerkleProof.decode(proof.encode()) == proof


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=24), min_size=1, max_size=40), st.data())
def test_any_flipped_bit_fails(chunks: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree.from_chunks(chunks)
    i = data.draw(st.integers(0, len(chunks) - 1), label="leaf")
    proof = tree.proof(i)
    target = data.draw(st.sampled_from(["chunk", "root", "path"] if proof.path else ["chunk", "root"]))
    chunk, root, path = chunks[i], tree.root, list(proof.path)

    def flip(b: bytes) -> bytes:
        bit = data.draw(st.integers(0, len(b) * 8 - 1), label="bit")
        return bytes(x ^ (1 << (bit % 8)) if j == bit // 8 else x for j, x in enumerate(b))

    if target == "chunk":
        chunk = flip(chunk)
    elif target == "root":
        root = flip(root)
    else:
        k = data.draw(st.integers(0, len(path) - 1), label="sibling")
        path[k] = flip(path[k])
    assert not verify_inclusion(root, chunk, MerkleProof(proof.index, proof.size, tuple(path)))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.data())
def test_proof_for_another_index_or_size_fails(n: int, data: st.DataObject) -> None:
    chunks = [bytes([i]) * 3 for i in range(n)]
    tree = MerkleTree.from_chunks(chunks)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    proof = tree.proof(i)
    assert not verify_inclusion(tree.root, chunks[i], MerkleProof(j, n, proof.path))
    assert not verify_inclusion(tree.root, chunks[j], proof)


def test_root_does_not_commit_to_the_size() -> None:
    # As in RFC 6962, a root alone does not fix the tree size: a path of leaf 0 of 3 is also a valid path
    # of leaf 0 of 4 (its last sibling is opaque). That is why receipts sign output_chunks next to
    # output_root, and spot checks insist on the signed size (tests/core/verify/test_spotcheck.py).
    chunks = [b"a", b"b", b"c"]
    tree = MerkleTree.from_chunks(chunks)
    assert verify_inclusion(tree.root, b"a", MerkleProof(0, 4, tree.proof(0).path))


def test_path_too_long_or_too_short_is_rejected() -> None:
    chunks = [bytes([i]) for i in range(6)]
    tree = MerkleTree.from_chunks(chunks)
    proof = tree.proof(4)
    assert root_from_proof(leaf_hash(chunks[4]), MerkleProof(4, 6, (*proof.path, b"\x00" * 32))) is None
    assert root_from_proof(leaf_hash(chunks[4]), MerkleProof(4, 6, proof.path[:-1])) is None
    assert root_from_proof(leaf_hash(chunks[4]), MerkleProof(4, 6, (b"short", *proof.path[1:]))) is None
    assert root_from_proof(leaf_hash(chunks[0]), MerkleProof(7, 6, proof.path)) is None


def test_single_leaf_tree_has_empty_proof() -> None:
    tree = MerkleTree.from_chunks([b"only"])
    assert tree.proof(0).path == ()
    assert verify_inclusion(tree.root, b"only", tree.proof(0))
    assert not verify_inclusion(tree.root, b"other", tree.proof(0))


def test_check_inclusion_raises_proof_invalid() -> None:
    tree = MerkleTree.from_chunks([b"a", b"b", b"c"])
    check_inclusion(tree.root, b"b", tree.proof(1))
    with pytest.raises(VerificationError) as err:
        check_inclusion(tree.root, b"B", tree.proof(1))
    assert err.value.reason is RejectReason.PROOF_INVALID
    assert "chunk 1 of 3" in str(err.value)


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        MerkleTree.from_chunks([b"a"]).proof(1)
    with pytest.raises(IndexError):
        MerkleTree.from_chunks([]).proof(0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than its header"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x04\x02" + b"\x00" * 32, "announces 2 siblings"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x04\x21" + b"\x00" * 32 * 33, "at most 32"),
        (b"\x00\x00\x00\x05\x00\x00\x00\x04\x00", "outside size"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x00\x00", "outside size"),
    ],
)
def test_malformed_proofs_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message) as err:
        MerkleProof.decode(data)
    assert err.value.reason is RejectReason.MALFORMED


def test_large_tree_matches_reference() -> None:
    chunks = [i.to_bytes(4, "big") for i in range(1000)]
    tree = MerkleTree.from_chunks(chunks)
    assert tree.root == rfc6962_root(chunks)
    for i in (0, 511, 512, 999):
        assert verify_inclusion(tree.root, chunks[i], tree.proof(i))
