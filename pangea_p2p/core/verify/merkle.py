"""Merkle commitments over a task's output chunks: RFC 6962 (Certificate Transparency) trees.

    leaf hash   = SHA-256(0x00 || chunk)
    node hash   = SHA-256(0x01 || left || right)
    empty tree  = SHA-256()                       (only a root; it has no proofs)

The prefixes keep a leaf from ever being read as an inner node (the second-preimage attack on plain Merkle
trees). The odd-leaf rule is RFC 6962's: the tree over n leaves splits at the largest power of two k < n,
so a node without a right sibling is *promoted* unchanged to the next level — never hashed with itself (that
duplication is Bitcoin's CVE-2012-2459). Built bottom-up, level by level, that is exactly: pair neighbours,
carry a last odd node up as it is. Proofs are RFC 6962 audit paths (siblings from the leaf upwards, promoted
levels contribute nothing) and are checked with the RFC 9162 §2.1.3.2 algorithm, which rejects a path that
is too long or too short for (index, size). protocols/receipt.md has the spec and worked examples;
tests/core/verify/test_merkle.py checks the Certificate Transparency reference roots and proofs.

Speed: hashlib's SHA-256 costs ~0.33 µs a call on these machines and Python overhead dominates, so the build
is a tight loop per level that copies a hasher which already absorbed the prefix (see
benchmarks/bench_verify.py).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pangea_p2p.errors import RejectReason, VerificationError

if TYPE_CHECKING:
    from collections.abc import Sequence

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAVES_MAX = 0xFFFF_FFFF  # indexes and sizes travel as u32, so a path has at most 32 siblings
PATH_LEN_MAX = 32

_sha256 = hashlib.sha256
_LEAF_HASHER = hashlib.sha256(LEAF_PREFIX)
_NODE_HASHER = hashlib.sha256(NODE_PREFIX)
_PROOF_HEADER = struct.Struct(">IIB")


def leaf_hash(chunk: bytes | bytearray | memoryview) -> bytes:
    """The RFC 6962 leaf hash of one chunk."""
    h = _LEAF_HASHER.copy()
    h.update(chunk)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an inner node."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _leaf_level(chunks: Sequence[bytes | bytearray | memoryview]) -> list[bytes]:
    # copying a hasher that already absorbed the prefix beats concatenating the prefix (~10 %)
    h0 = _LEAF_HASHER
    level: list[bytes] = []
    append = level.append
    for chunk in chunks:
        h = h0.copy()
        h.update(chunk)
        append(h.digest())
    return level


def _next_level(level: list[bytes]) -> list[bytes]:
    h0 = _NODE_HASHER
    up: list[bytes] = []
    append = up.append
    it = iter(level)
    for a, b in zip(it, it, strict=False):
        h = h0.copy()
        h.update(a)
        h.update(b)
        append(h.digest())
    if len(level) & 1:
        up.append(level[-1])  # promoted, not hashed with itself
    return up


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """An inclusion proof: the audit path of leaf ``index`` in a tree of ``size`` leaves."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def encode(self) -> bytes:
        """``u32 index | u32 size | u8 path length | 32-byte hashes``, big-endian (protocols/receipt.md)."""
        return _PROOF_HEADER.pack(self.index, self.size, len(self.path)) + b"".join(self.path)

    @classmethod
    def decode(cls, data: bytes) -> MerkleProof:
        """Parse a proof received from a peer; VerificationError(MALFORMED) names what is wrong."""
        if len(data) < _PROOF_HEADER.size:
            raise VerificationError(
                RejectReason.MALFORMED, f"merkle proof is {len(data)} bytes, shorter than its header"
            )
        index, size, count = _PROOF_HEADER.unpack_from(data)
        if count > PATH_LEN_MAX:
            raise VerificationError(RejectReason.MALFORMED, f"merkle proof has {count} siblings, at most 32 allowed")
        if len(data) != _PROOF_HEADER.size + count * HASH_BYTES:
            raise VerificationError(
                RejectReason.MALFORMED, f"merkle proof is {len(data)} bytes, its header announces {count} siblings"
            )
        if not 0 <= index < size:
            raise VerificationError(RejectReason.MALFORMED, f"merkle proof index {index} is outside size {size}")
        base = _PROOF_HEADER.size
        path = tuple(data[base + i * HASH_BYTES : base + (i + 1) * HASH_BYTES] for i in range(count))
        return cls(index, size, path)


class MerkleTree:
    """The full tree over a list of chunks, kept level by level so proofs cost a few list lookups."""

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        """Build from leaf hashes; most callers want :meth:`from_chunks`."""
        if len(leaf_hashes) > LEAVES_MAX:
            raise ValueError(f"a Merkle tree has at most {LEAVES_MAX} leaves, got {len(leaf_hashes)}")
        levels = [leaf_hashes]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        self._levels = levels

    @classmethod
    def from_chunks(cls, chunks: Sequence[bytes | bytearray | memoryview]) -> MerkleTree:
        """The tree whose leaves are ``chunks`` (each hashed with the leaf prefix)."""
        return cls(_leaf_level(chunks))

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The 32-byte root; SHA-256 of nothing for an empty tree (RFC 6962)."""
        top = self._levels[-1]
        return top[0] if top else EMPTY_ROOT

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index]

    def proof(self, index: int) -> MerkleProof:
        """The audit path of leaf ``index``: sibling hashes from the leaf level upwards."""
        size = self.size
        if not 0 <= index < size:
            raise IndexError(f"leaf {index} is outside a tree of {size} leaves")
        path = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return MerkleProof(index, size, tuple(path))


def root_of(chunks: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """The Merkle root over ``chunks`` without keeping the tree."""
    level = _leaf_level(chunks)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def root_from_proof(leaf: bytes, proof: MerkleProof) -> bytes | None:
    """The root that ``proof`` leads to from leaf hash ``leaf``; None if the path has the wrong shape.

    RFC 9162 §2.1.3.2: walk up with fn (index) and sn (last index); a level where the node is the last one
    and a left child was promoted, so the walk shifts past it without consuming a sibling.
    """
    index, size = proof.index, proof.size
    if not 0 <= index < size or len(proof.path) > PATH_LEN_MAX:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof.path:
        if sn == 0 or len(p) != HASH_BYTES:
            return None
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(root: bytes, chunk: bytes | bytearray | memoryview, proof: MerkleProof) -> bool:
    """True when ``chunk`` is leaf ``proof.index`` of the tree with ``root``. Never raises."""
    return root_from_proof(leaf_hash(chunk), proof) == root


def check_inclusion(root: bytes, chunk: bytes | bytearray | memoryview, proof: MerkleProof) -> None:
    """Like :func:`verify_inclusion` but raises VerificationError(PROOF_INVALID) naming the leaf."""
    if not verify_inclusion(root, chunk, proof):
        raise VerificationError(
            RejectReason.PROOF_INVALID, f"chunk {proof.index} of {proof.size} does not lead to root {root.hex()[:16]}"
        )
