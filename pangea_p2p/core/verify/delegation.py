"""Delegation receipts: a peer that split a task signs one over its children; a verifier checks it against them.

A peer that splits a task and delegates the parts does not run anything itself; when the parts come back,
each verified against the binding it issued, it signs (``delegate``) a delegation receipt over (a) the
digests (SHA-256 of the encoded bytes) of its children's receipts, in order, and (b) the Merkle root over
its children's *commitments* (``children_root``) — an execution receipt commits to its output's sha2-256
digest, a delegation receipt to its own children root — plus the fuel used, the sum of its children's. The
parts are consecutive runs of the task's input chunks: the children's chunk counts add up to the parent's,
and the task's output is the children's output chunks in child order.

A verifier checks each delegation receipt of a tree against the receipts right below it, in the order of
protocols/receipt.md §7 (the walk over the whole tree, and the checks of every node, are tree.py's):

    check_child     a child against the delegation receipt over it: the same module (CID_MISMATCH), job,
                    parent task id = the parent's task id, issuer = the parent's delegator (BINDING_MISMATCH),
                    memory, wall-time and output limits no larger than the parent's (LIMIT_EXCEEDED), and
                    not dated after min(the parent's date, now) + the allowed skew (FROM_FUTURE): a part that
                    finished hours before the rest is still good, but never in the verifier's future
    check_children  a delegation receipt against its children: as many as it names (MALFORMED), within
                    ``children_max`` (LIMIT_EXCEEDED), no child named twice (REPLAYED), each digest its
                    child's (CID_MISMATCH), distinct task ids (BINDING_MISMATCH), the children root
                    (PROOF_INVALID), the fuel sum (BINDING_MISMATCH), fuel budgets adding up to at most its
                    own (LIMIT_EXCEEDED), chunk counts adding up to exactly its own (BINDING_MISMATCH)

What a delegation cannot prove: that the split of the input into the children's inputs is right (the
submitter checks the merged output, or spot-checks; see spotcheck.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pangea_p2p.core.verify.format import DOMAIN_TAG, NONCE_BYTES, malformed
from pangea_p2p.core.verify.merkle import MerkleTree
from pangea_p2p.core.verify.receipts import DelegationReceipt, ReceiptTree
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.verify.binding import TaskBinding
    from pangea_p2p.core.verify.config import VerifyConfig
    from pangea_p2p.core.verify.receipts import AnyReceipt


def children_root(children: Sequence[ReceiptTree]) -> bytes:
    """The Merkle root over the children's commitments, in order."""
    return MerkleTree.from_chunks([c.receipt.commitment for c in children]).root


def delegate(
    identity: Identity, binding: TaskBinding, children: Sequence[ReceiptTree], *, now: float, rng: random.Random
) -> ReceiptTree:
    """Sign a delegation receipt over ``children`` (each already verified by the caller with verify_tree
    against the binding it issued) and return the tree the parent will verify. LocalProtocolError unless
    the children's chunk counts add up to ``binding.chunk_count``."""
    if not children:
        raise LocalProtocolError("a delegation receipt needs at least one child")
    chunks = sum(c.receipt.binding.chunk_count for c in children)
    if chunks != binding.chunk_count:
        raise LocalProtocolError(f"the children hold {chunks} chunks, the task has {binding.chunk_count}")
    receipt = DelegationReceipt(
        binding, children_root(children), tuple(c.receipt.digest for c in children),
        sum(c.receipt.fuel_used for c in children), identity.peer_id, float(now), rng.randbytes(NONCE_BYTES),
        identity.public_key, b"",
    )
    object.__setattr__(receipt, "signature", identity.sign(DOMAIN_TAG + receipt.body))  # before it escapes
    return ReceiptTree(receipt, tuple(children))


def check_child(r: AnyReceipt, parent: DelegationReceipt, now: float, config: VerifyConfig, what: str) -> None:
    """``r`` may stand under the delegation receipt ``parent`` (module docstring)."""
    b, pb = r.binding, parent.binding
    if b.module_digest != pb.module_digest:
        raise VerificationError(
            RejectReason.CID_MISMATCH, f"{what} ran module {b.module_cid}, its parent delegated {pb.module_cid}"
        )
    for mine, theirs, name in (
        (b.job_id, pb.job_id, "job_id"),
        (b.parent_task_id, pb.task_id, "parent_task_id"),
        (b.issuer, parent.delegator, "issuer"),
    ):
        if mine != theirs:
            raise VerificationError(RejectReason.BINDING_MISMATCH, f"{what} has {name} {mine!r}, expected {theirs!r}")
    lim, plim = b.limits, pb.limits
    for name in ("memory_bytes_max", "wall_time_s", "output_bytes_max"):
        if getattr(lim, name) > getattr(plim, name):
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED,
                f"{what} ran with {name} {getattr(lim, name)}, above its parent's {getattr(plim, name)}",
            )
    if r.issued_at_s > min(parent.issued_at_s, now) + config.clock_skew_max_s:
        raise VerificationError(
            RejectReason.FROM_FUTURE, f"{what} is dated after the delegation receipt over it, or after now"
        )


def check_children(node: ReceiptTree, r: DelegationReceipt, config: VerifyConfig, what: str) -> None:
    """The delegation receipt ``r`` of ``node`` is the one its children call for (module docstring)."""
    kids = node.children
    if len(kids) != len(r.children):
        raise malformed(f"{what} names {len(r.children)} children, the tree holds {len(kids)}")
    if len(kids) > config.children_max:
        raise VerificationError(
            RejectReason.LIMIT_EXCEEDED, f"{what} has {len(kids)} children, the limit is {config.children_max}"
        )
    if len(set(r.children)) != len(r.children):
        raise VerificationError(RejectReason.REPLAYED, f"{what} names the same child receipt twice")
    task_ids: set[str] = set()
    for i, (kid, digest) in enumerate(zip(kids, r.children, strict=True)):
        if kid.receipt.digest != digest:
            raise VerificationError(
                RejectReason.CID_MISMATCH, f"{what}: child {i} is not the receipt the delegator signed over"
            )
        if kid.receipt.binding.task_id in task_ids:
            raise VerificationError(
                RejectReason.BINDING_MISMATCH, f"{what}: two children have task id {kid.receipt.binding.task_id!r}"
            )
        task_ids.add(kid.receipt.binding.task_id)
    if children_root(kids) != r.children_root:
        raise VerificationError(RejectReason.PROOF_INVALID, f"{what}: children root does not match its children")
    fuel = sum(k.receipt.fuel_used for k in kids)
    if fuel != r.fuel_used:
        raise VerificationError(
            RejectReason.BINDING_MISMATCH, f"{what} claims {r.fuel_used} fuel, its children used {fuel}"
        )
    budget = sum(k.receipt.binding.limits.fuel_max for k in kids)
    if budget > r.binding.limits.fuel_max:
        raise VerificationError(
            RejectReason.LIMIT_EXCEEDED,
            f"{what} gave its children {budget} fuel in total, more than its own budget {r.binding.limits.fuel_max}",
        )
    chunks = sum(k.receipt.binding.chunk_count for k in kids)
    if chunks != r.binding.chunk_count:
        raise VerificationError(
            RejectReason.BINDING_MISMATCH,
            f"{what} split its {r.binding.chunk_count} chunks into children holding {chunks} chunks in total",
        )
