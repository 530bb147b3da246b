"""Offline verification of a whole receipt tree, from the receipts alone (protocols/receipt.md §7).

A task may come back as a tree of signed receipts: a delegation receipt over its children's trees, down to
execution receipts (receipts.py has the types and the wire form, delegation.py the rules between a
delegation receipt and its children). ``verify_tree`` holds the binding the verifier issued for the root
task and the peer it gave the task to, and walks the tree once, depth first:

  the root    signed by that peer (NOT_ASSIGNED, before anything else), carrying the issued binding and fresh
              against the verifier's clock (checks.py);
  every node  within the bounds of VerifyConfig (depth and receipt count: LIMIT_EXCEEDED); its signer not
              already on the path from the root task's issuer down to it (DELEGATION_CYCLE) — except that an
              issuer may run its own task: a root execution receipt signed by the issuer itself; its key and
              signature; a child against the delegation receipt over it (delegation.check_child); fuel within
              its budget; no (task, signer) twice in the tree (REPLAYED);
  a leaf      an execution receipt that reports a result when it stands under a delegation
              (BINDING_MISMATCH), committing to its binding's chunk count;
  a delegation its children (delegation.check_children), then each child in turn.

Given the task's framed output, it then cuts it into the leaves' chunk counts and checks every part against
its leaf's output id and Merkle root (naming the leaf by index and task id), which makes the output's digest
a proven claim for a vote. The walk keeps its own replay keys; only the root is recorded in the ReplayGuard
(replay.py), and only once the whole tree, output included, passed: every child is bound to its parent's
task, so a second tree for the same task, or a subtree offered again, is caught at the root, and a tree
cannot fill the guard or move its clock, however many children it has or how they are dated.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pangea_p2p.core.verify.binding import TaskBinding
from pangea_p2p.core.verify.checks import (
    check_binding,
    check_freshness,
    check_fuel,
    check_output,
    check_result,
    check_signature,
    output_chunks_of,
)
from pangea_p2p.core.verify.delegation import check_child, check_children
from pangea_p2p.core.verify.merkle import root_of
from pangea_p2p.core.verify.receipts import DelegationReceipt, Receipt, VerifiedTree
from pangea_p2p.errors import RejectReason, VerificationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pangea_p2p.core.verify.config import VerifyConfig
    from pangea_p2p.core.verify.receipts import AnyReceipt, ReceiptTree
    from pangea_p2p.core.verify.replay import ReplayGuard

_U32_LE = struct.Struct("<I")  # the chunk-list framing of pangea_p2p.core.chunks


@dataclass
class _Walk:
    config: VerifyConfig
    now: float
    seen: dict[bytes, str] = field(default_factory=dict)  # replay key -> where in the tree
    leaves: list[Receipt] = field(default_factory=list)
    signers: set[str] = field(default_factory=set)
    count: int = 0


def verify_tree(
    tree: ReceiptTree,
    expected: TaskBinding,
    now: float,
    config: VerifyConfig,
    *,
    worker: str,
    guard: ReplayGuard | None = None,
    output: bytes | bytearray | memoryview | None = None,
) -> VerifiedTree:
    """Verify a whole receipt tree offline against the binding of the root task, which was given to
    ``worker``; VerificationError names the failing receipt by its path ("receipt root/1/0") and the reason.

    ``output``: the task's framed output, when the caller has it: cut into the leaves' chunk counts, every
    part must be its leaf's output (content id and Merkle root); the result's ``output_digest`` is then its
    digest. ``guard`` records the root receipt (one per task and worker), only when the whole tree passed.
    """
    root = tree.receipt
    if root.signer != worker:
        raise VerificationError(
            RejectReason.NOT_ASSIGNED, f"receipt root is signed by {root.signer}, the task was given to {worker}"
        )
    walk = _Walk(config, now)
    # An issuer may run its own task (a submitter's local run): one execution receipt it signed itself.
    own_run = isinstance(root, Receipt) and root.signer == expected.issuer
    _verify_node(walk, tree, expected, () if own_run else (expected.issuer,), "root", 0)
    output_digest = root.output_digest if isinstance(root, Receipt) else None
    if output is not None:
        output_digest = _check_tree_output(root, walk.leaves, output)
    if guard is not None:
        guard.check_and_record(root.replay_key, root.issued_at_s, now, "receipt root")
    return VerifiedTree(root, tuple(walk.leaves), root.fuel_used, frozenset(walk.signers), walk.count, output_digest)


def _check_tree_output(root: AnyReceipt, leaves: Sequence[Receipt], output: bytes | bytearray | memoryview) -> bytes:
    """The digest of ``output`` once every leaf's part of it checked out (see verify_tree)."""
    if isinstance(root, Receipt):
        check_output(root, output, "receipt root")
        assert root.output_digest is not None  # check_output refuses a failure's receipt
        return root.output_digest  # which check_output found to be the output's digest
    chunks = output_chunks_of(output, root.binding.chunk_count, root.binding.limits, "receipt root")
    start = 0
    for i, r in enumerate(leaves):
        part = chunks[start : start + r.output_chunks]
        start += r.output_chunks
        h = hashlib.sha256(_U32_LE.pack(len(part)))
        for chunk in part:
            if len(chunk) > r.binding.limits.output_bytes_max:
                raise VerificationError(
                    RejectReason.LIMIT_EXCEEDED,
                    f"an output chunk of leaf {i} ({r.binding.task_id}) is {len(chunk)} bytes, the limit is "
                    f"{r.binding.limits.output_bytes_max}",
                )
            h.update(_U32_LE.pack(len(chunk)))
            h.update(chunk)
        if h.digest() != r.output_digest:
            raise VerificationError(
                RejectReason.CID_MISMATCH, f"output chunks of leaf {i} ({r.binding.task_id}) are not its output"
            )
        if root_of(part) != r.output_root:
            raise VerificationError(
                RejectReason.PROOF_INVALID, f"output chunks of leaf {i} ({r.binding.task_id}) do not lead to its root"
            )
    return hashlib.sha256(output).digest()


def _verify_node(
    walk: _Walk, node: ReceiptTree, parent: DelegationReceipt | TaskBinding, path: tuple[str, ...], where: str,
    depth: int,
) -> None:
    """``parent``: the delegation receipt over this node, or for the root the binding the submitter issued."""
    r = node.receipt
    what = f"receipt {where}"
    config = walk.config
    walk.count += 1
    if walk.count > config.tree_receipts_max or depth > config.tree_depth_max:
        raise VerificationError(
            RejectReason.LIMIT_EXCEEDED,
            f"{what}: the tree is deeper than {config.tree_depth_max} or larger than {config.tree_receipts_max}",
        )
    if r.signer in path:
        raise VerificationError(
            RejectReason.DELEGATION_CYCLE, f"{what} is signed by {r.signer}, who is already on its delegation path"
        )
    check_signature(r.signer, r.public_key, r.body, r.signature, what)
    if isinstance(parent, TaskBinding):
        check_binding(r.binding, parent, what)
        check_freshness(r.issued_at_s, walk.now, config, what)
    else:
        check_child(r, parent, walk.now, config, what)
    check_fuel(r.fuel_used, r.binding.limits, what)
    if r.replay_key in walk.seen:
        raise VerificationError(
            RejectReason.REPLAYED,
            f"{what}: {r.signer} signed for task {r.binding.task_id!r} twice in the tree "
            f"(also at {walk.seen[r.replay_key]})",
        )
    walk.seen[r.replay_key] = where
    walk.signers.add(r.signer)
    if isinstance(r, Receipt):
        if isinstance(parent, DelegationReceipt) and r.failure is not None:
            raise VerificationError(
                RejectReason.BINDING_MISMATCH, f"{what} reports {r.failure.name}; a delegation may only include results"
            )
        check_result(r, what)
        walk.leaves.append(r)
        return
    check_children(node, r, config, what)
    for i, child in enumerate(node.children):
        _verify_node(walk, child, r, (*path, r.signer), f"{where}/{i}", depth + 1)
