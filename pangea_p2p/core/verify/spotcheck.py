"""Spot checks: re-execute k random chunks instead of the whole task (Sarmenta's spot-checking).

The worker's signed receipt commits to a Merkle root over its output chunks (``output_root``,
``output_chunks``). The checker picks k chunk indexes with an rng the worker cannot predict, obtains from
the worker each chosen chunk with its inclusion proof (or takes it from the full output it already has),
re-executes those chunks itself or on a trusted verifier, and compares. A worker that got a fraction f of
its chunks wrong escapes one check with probability about (1 - f)^k, so errors are caught with a cost
linear in k instead of the factor of the whole task that replication costs.

Theory of operation.
  States: PENDING -> PASSED, or PENDING -> FAILED; both final.
  Events: ``add_claim(index, chunk, proof)`` (the worker's chunk and proof; PROOF_INVALID fails the
  check), or ``add_verified_output(chunks)`` when the checker holds the worker's whole output already verified
  against its receipts (a check made with no root), and ``add_reexecution(index, output)`` (the checker's own
  result; a different chunk, or a guest that failed here where the worker's succeeded, fails with
  SPOT_CHECK_MISMATCH). They may come in either order. The check PASSES when every chosen index has a
  claim whose proof leads to the committed root and a re-execution equal to it.
  Invariants: only chosen indexes are accepted; each index gets one claim and one re-execution; ``error``
  is set exactly when FAILED.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pangea_p2p.core.verify.merkle import MerkleProof, MerkleTree, leaf_hash, root_from_proof
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence


def choose_chunks(chunk_count: int, k: int, rng: random.Random) -> tuple[int, ...]:
    """k distinct chunk indexes (all of them if k >= chunk_count), sorted."""
    if chunk_count < 0 or k < 0:
        raise LocalProtocolError(f"chunk_count and k must be >= 0, got {chunk_count}, {k}")
    return tuple(sorted(rng.sample(range(chunk_count), min(k, chunk_count))))


class SpotState(enum.Enum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


class SpotCheck:
    """One spot check of one worker's chunked output (see the module docstring)."""

    __slots__ = ("_claims", "_reexecuted", "chunk_count", "error", "indexes", "root", "state")

    def __init__(self, root: bytes | None, chunk_count: int, indexes: Sequence[int]) -> None:
        if chunk_count < 1 or (root is not None and len(root) != 32):
            raise LocalProtocolError("a spot check needs a 32-byte root (or none) over at least one chunk")
        if any(not 0 <= i < chunk_count for i in indexes) or len(set(indexes)) != len(indexes) or not indexes:
            raise LocalProtocolError(f"spot-check indexes must be distinct, within 0..{chunk_count - 1}, non-empty")
        self.root = root
        self.chunk_count = chunk_count
        self.indexes = tuple(indexes)
        self.state = SpotState.PENDING
        self.error: VerificationError | None = None
        self._claims: dict[int, bytes] = {}  # index -> leaf hash the worker proved
        self._reexecuted: dict[int, bytes] = {}  # index -> leaf hash of the checker's own output

    @classmethod
    def start(cls, root: bytes | None, chunk_count: int, k: int, rng: random.Random) -> SpotCheck:
        """A spot check of k random chunks (``root`` None: the claims will come from a verified output)."""
        return cls(root, chunk_count, choose_chunks(chunk_count, k, rng))

    def waiting(self, index: int) -> bool:
        """Whether chunk ``index`` is chosen and its re-execution has not come yet."""
        return index in self.indexes and index not in self._reexecuted and self.state is SpotState.PENDING

    def add_verified_output(self, chunks: Sequence[bytes]) -> SpotState:
        """The worker's whole output, which the checker verified against the worker's receipts already (output
        digest and Merkle roots): the chosen chunks are the claims, no proof needed."""
        if len(chunks) != self.chunk_count:
            return self._fail(RejectReason.PROOF_INVALID, f"output has {len(chunks)} chunks, {self.chunk_count} "
                                                          "were checked")
        for index in self.indexes:
            self._check_index(index, self._claims, "claim")
            self._claims[index] = leaf_hash(chunks[index])
            if self._settle(index) is not SpotState.PENDING:
                break
        return self.state

    def add_claim(self, index: int, chunk: bytes, proof: MerkleProof) -> SpotState:
        """The worker's chunk ``index`` with its inclusion proof."""
        if self.root is None:
            raise LocalProtocolError("a spot check made without a root takes the verified output, not proofs")
        self._check_index(index, self._claims, "claim")
        if proof.index != index or proof.size != self.chunk_count:
            return self._fail(RejectReason.PROOF_INVALID, f"the proof for chunk {index} is for leaf {proof.index} of "
                              f"{proof.size}, the commitment has {self.chunk_count}")
        leaf = leaf_hash(chunk)
        if root_from_proof(leaf, proof) != self.root:
            return self._fail(RejectReason.PROOF_INVALID, f"chunk {index} and its proof do not lead to the root")
        self._claims[index] = leaf
        return self._settle(index)

    def add_claims_from_output(self, chunks: Sequence[bytes]) -> SpotState:
        """Use the worker's full output (when the checker has it) instead of per-chunk proofs."""
        if self.root is None:
            raise LocalProtocolError("a spot check made without a root takes add_verified_output")
        if len(chunks) != self.chunk_count:
            return self._fail(
                RejectReason.PROOF_INVALID, f"output has {len(chunks)} chunks, {self.chunk_count} committed"
            )
        tree = MerkleTree.from_chunks(chunks)
        if tree.root != self.root:
            return self._fail(RejectReason.PROOF_INVALID, "the output's Merkle root is not the committed root")
        for index in self.indexes:
            if self.state is not SpotState.PENDING:
                break
            self.add_claim(index, chunks[index], tree.proof(index))
        return self.state

    def add_reexecution(self, index: int, output: bytes | None) -> SpotState:
        """The checker's own result for chunk ``index`` (None: the guest failed here, where the worker says it
        succeeded)."""
        self._check_index(index, self._reexecuted, "re-execution")
        if output is None:
            self._reexecuted[index] = b""
            return self._fail(RejectReason.SPOT_CHECK_MISMATCH, f"chunk {index} failed here, the worker's succeeded")
        self._reexecuted[index] = leaf_hash(output)
        return self._settle(index)

    def _check_index(self, index: int, seen: dict[int, bytes], what: str) -> None:
        if index not in self.indexes:
            raise VerificationError(RejectReason.BINDING_MISMATCH, f"chunk {index} was not chosen for this spot check")
        if index in seen:
            raise VerificationError(RejectReason.DUPLICATE_VOTE, f"a second {what} for chunk {index}")

    def _settle(self, index: int) -> SpotState:
        if self.state is not SpotState.PENDING:
            return self.state
        claimed, mine = self._claims.get(index), self._reexecuted.get(index)
        if claimed is not None and mine is not None and claimed != mine:
            return self._fail(
                RejectReason.SPOT_CHECK_MISMATCH, f"re-executing chunk {index} gave other bytes than the worker's"
            )
        if len(self._claims) == len(self.indexes) == len(self._reexecuted):
            self.state = SpotState.PASSED
        return self.state

    def _fail(self, reason: RejectReason, detail: str) -> SpotState:
        if self.state is SpotState.PENDING:
            self.state = SpotState.FAILED
            self.error = VerificationError(reason, detail)
        return self.state
