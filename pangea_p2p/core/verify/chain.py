"""Receipt chains for hierarchical delegation, verified offline from the receipts alone.

A peer that splits a task and delegates the parts does not run anything itself; when the parts come back it
signs a *delegation receipt* over (a) the digests (SHA-256 of the encoded bytes) of its children's receipts,
in order, and (b) the Merkle root over its children's *output commitments* — an execution receipt commits to
its output's sha2-256 digest, a delegation receipt to its own children root — plus the fuel used, which must
be the sum of its children's. The parts are consecutive runs of the task's input chunks: the children's
chunk counts add up to the parent's, and the task's output is the children's output chunks in child order.
A *receipt tree* is that receipt with its children's trees; its wire form is pre-order:
``u32 length | receipt bytes`` for each node, a delegation node's children right after it.

``verify_tree`` walks the tree once and checks every node: signature and key; freshness — the root against
``now`` (a part that finished hours before the rest is still good, so a child is only checked for
causality: not dated after ``min(its parent's date, now)`` plus the allowed skew); binding to its parent
(same job and module, parent task id = the parent's task id, issuer = the parent's signer, distinct task
ids among siblings, memory, wall-time and output limits no larger than the parent's, fuel budgets and chunk
counts that add up to at most / exactly the parent's); child digests; the children root; the fuel sum; a
result committing to its binding's chunk count; and that no (task, signer) appears twice in the tree
(REPLAYED). A peer appearing twice on one path from the submitter (who issued the root task) down to a leaf
is a DELEGATION_CYCLE, except that an issuer may run its own task (a root execution receipt signed by the
issuer; a split task's parts never run at their delegator). Depth, node count, children per node and encoded
size are bounded by VerifyConfig. The root must match the binding the submitter issued and be signed by the
peer it was given to. Given the task's framed output, the verifier cuts it into the leaves' chunk counts and
checks every part against its leaf's output id and Merkle root, which makes the output's digest a proven
claim for a vote.

Only the root is recorded in the ReplayGuard (replay.py): every child is bound to its parent's task, so a
second tree for the same task, or a subtree offered again, is caught at the root; and a tree cannot fill
the guard or move its clock, however many children it has or how they are dated.

What a tree cannot prove: that the split of the input into the children's inputs is right (the submitter
checks the merged output, or spot-checks; see spotcheck.py).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pangea_p2p.core.verify.merkle import MerkleTree, root_of
from pangea_p2p.core.verify.receipts import (
    CHILDREN_WIRE_MAX,
    DIGEST_BYTES,
    DOMAIN_TAG,
    NONCE_BYTES,
    Reader,
    Receipt,
    ReceiptKind,
    ReplayGuard,
    TaskBinding,
    check_binding,
    check_freshness,
    check_fuel,
    check_header,
    check_output,
    check_result,
    check_signature,
    decode_common,
    decode_receipt,
    encode_common,
    encode_ids,
    malformed,
    output_chunks_of,
    replay_key_of,
    signer_problem,
)
from pangea_p2p.core.verify.receipts import (
    VerifiedTree as VerifiedTree,
)
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    import random

    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.verify.config import VerifyConfig

_DELEGATION_TAIL = struct.Struct(">32sH")  # children root, child count
_LENGTH = struct.Struct(">I")
_U32_LE = struct.Struct("<I")  # the chunk-list framing of pangea_p2p.core.chunks


@dataclass(frozen=True)
class DelegationReceipt:
    """A delegator's signed statement: 'this task was done by these children, with these outputs'."""

    binding: TaskBinding
    children_root: bytes  # Merkle root over the children's commitments, in child order
    children: tuple[bytes, ...]  # SHA-256 of each child's encoded receipt, in child order
    fuel_used: int  # the sum of the children's fuel_used
    delegator: str  # peer id of the signer
    issued_at_s: float
    nonce: bytes
    public_key: bytes
    signature: bytes = field(repr=False)

    kind = ReceiptKind.DELEGATION

    def __post_init__(self) -> None:
        problem = signer_problem(self.delegator, self.issued_at_s, self.nonce, self.public_key, self.fuel_used)
        if problem is None and len(self.children_root) != DIGEST_BYTES:
            problem = "children_root is 32 bytes"
        if problem is None and not 1 <= len(self.children) <= CHILDREN_WIRE_MAX:
            problem = f"a delegation has 1-{CHILDREN_WIRE_MAX} children, got {len(self.children)}"
        if problem is None and any(len(d) != DIGEST_BYTES for d in self.children):
            problem = "child digests are 32 bytes"
        if problem is not None:
            raise LocalProtocolError(problem)

    @property
    def signer(self) -> str:
        return self.delegator

    @property
    def ok(self) -> bool:
        return True

    @property
    def commitment(self) -> bytes:
        """What a parent delegation's Merkle tree commits to for this child: the children root."""
        return self.children_root

    @functools.cached_property
    def body(self) -> bytes:
        b = self.binding
        return (
            encode_common(ReceiptKind.DELEGATION, b, self.nonce, self.issued_at_s, self.fuel_used, self.public_key)
            + _DELEGATION_TAIL.pack(self.children_root, len(self.children))
            + b"".join(self.children)
            + encode_ids(b, self.delegator)
        )

    @functools.cached_property
    def wire(self) -> bytes:
        return self.body + self.signature

    @functools.cached_property
    def digest(self) -> bytes:
        return hashlib.sha256(self.wire).digest()

    @functools.cached_property
    def replay_key(self) -> bytes:
        """One accepted receipt per (task, signer), as for execution receipts (replay.py)."""
        return replay_key_of(self.binding, self.delegator)


AnyReceipt = Receipt | DelegationReceipt


def decode_delegation(data: bytes, what: str = "receipt") -> DelegationReceipt:
    """Parse a delegation receipt from a peer; VerificationError(MALFORMED) names the wrong field."""
    if check_header(data, what) is not ReceiptKind.DELEGATION:
        raise malformed(f"{what} is an execution receipt, expected a delegation receipt")
    rd = Reader(data, what)
    common = decode_common(rd)
    children_root, count = rd.unpack(_DELEGATION_TAIL, "children")
    if count == 0:
        raise malformed(f"{what} delegates to no children")
    raw = rd.take(count * DIGEST_BYTES, "child digests")
    children = tuple(raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES))
    ids = rd.ids()
    body, signature = rd.signature()
    try:
        receipt = DelegationReceipt(
            common.binding(ids), children_root, children, common.fuel_used, ids[3], common.issued_at_s, common.nonce,
            common.public_key, signature,
        )
    except LocalProtocolError as exc:
        raise malformed(f"{what}: {exc}") from None
    receipt.__dict__["body"] = body
    receipt.__dict__["wire"] = data
    return receipt


def decode_any(data: bytes | bytearray | memoryview, what: str = "receipt") -> AnyReceipt:
    """Parse a receipt of either kind."""
    data = bytes(data)
    if check_header(data, what) is ReceiptKind.EXECUTION:
        return decode_receipt(data, what)
    return decode_delegation(data, what)


@dataclass(frozen=True)
class ReceiptTree:
    """A receipt and, for a delegation receipt, its children's trees in order."""

    receipt: AnyReceipt
    children: tuple[ReceiptTree, ...] = ()

    def encode(self) -> bytes:
        """Pre-order ``u32 length | receipt`` records (protocols/receipt.md §7)."""
        parts: list[bytes] = []
        stack: list[ReceiptTree] = [self]
        while stack:
            node = stack.pop()
            wire = node.receipt.wire
            parts.append(_LENGTH.pack(len(wire)))
            parts.append(wire)
            stack.extend(reversed(node.children))
        return b"".join(parts)

    @staticmethod
    def decode(data: bytes | bytearray | memoryview, config: VerifyConfig) -> ReceiptTree:
        """Parse a tree from a peer, within the config's bounds (MALFORMED or LIMIT_EXCEEDED)."""
        data = bytes(data)
        if len(data) > config.tree_bytes_max:
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED, f"receipt tree is {len(data)} bytes, the limit is {config.tree_bytes_max}"
            )
        parser = _TreeParser(data, config)
        tree = parser.node("root", 0)
        if parser.pos != len(data):
            raise malformed(f"receipt tree has {len(data) - parser.pos} bytes after its last receipt")
        return tree

    def receipts(self) -> int:
        return 1 + sum(c.receipts() for c in self.children)


class _TreeParser:
    __slots__ = ("config", "count", "data", "pos")

    def __init__(self, data: bytes, config: VerifyConfig) -> None:
        self.data = data
        self.config = config
        self.pos = 0
        self.count = 0

    def node(self, where: str, depth: int) -> ReceiptTree:
        what = f"receipt {where}"
        if depth > self.config.tree_depth_max:
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED, f"{what} is {depth} levels deep, the limit is {self.config.tree_depth_max}"
            )
        self.count += 1
        if self.count > self.config.tree_receipts_max:
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED, f"receipt tree has more than {self.config.tree_receipts_max} receipts"
            )
        if self.pos + _LENGTH.size > len(self.data):
            raise malformed(f"receipt tree ends before {what}")
        (length,) = _LENGTH.unpack_from(self.data, self.pos)
        start = self.pos + _LENGTH.size
        if start + length > len(self.data):
            raise malformed(f"{what} announces {length} bytes, only {len(self.data) - start} remain")
        self.pos = start + length
        receipt = decode_any(self.data[start : self.pos], what)
        if isinstance(receipt, Receipt):
            return ReceiptTree(receipt)
        if len(receipt.children) > self.config.children_max:
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED,
                f"{what} has {len(receipt.children)} children, the limit is {self.config.children_max}",
            )
        kids = tuple(self.node(f"{where}/{i}", depth + 1) for i in range(len(receipt.children)))
        return ReceiptTree(receipt, kids)


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


def _check_tree_output(
    root: Receipt | DelegationReceipt, leaves: Sequence[Receipt], output: bytes | bytearray | memoryview
) -> bytes:
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
        _check_child_binding(r, parent, what)
        if r.issued_at_s > min(parent.issued_at_s, walk.now) + config.clock_skew_max_s:
            raise VerificationError(
                RejectReason.FROM_FUTURE, f"{what} is dated after the delegation receipt over it, or after now"
            )
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
    _check_children(node, r, what, config)
    for i, child in enumerate(node.children):
        _verify_node(walk, child, r, (*path, r.signer), f"{where}/{i}", depth + 1)


def _check_child_binding(r: AnyReceipt, parent: DelegationReceipt, what: str) -> None:
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


def _check_children(node: ReceiptTree, r: DelegationReceipt, what: str, config: VerifyConfig) -> None:
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
