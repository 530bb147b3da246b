"""Receipts as data: the two kinds, receipt trees, and their canonical encoding and decoding.

An *execution receipt* (``Receipt``) is a worker's signed statement about a task it ran: the task's binding
(binding.py), what happened — the content id of the framed output and the Merkle root over its chunks, or a
typed failure — the fuel used, the worker's peer id and public key, when it was issued, a random nonce, and
the ed25519 signature. A *delegation receipt* (``DelegationReceipt``) is signed by a peer that split the
task and delegated the parts instead: it names its children's receipts by digest and commits to their
outputs with a Merkle root. A *receipt tree* (``ReceiptTree``) is a receipt with, for a delegation receipt,
its children's trees in order. ``VerifiedTree`` is what a verified receipt or tree proves (execution.py and
tree.py make them; votes are made of them). Issuing and verifying are the layers above; this module only
says what the bytes are.

Encoding (protocols/receipt.md is normative; the layouts are in format.py): the fixed fields, the tail of
the kind, the five ids, then the 64-byte signature over ``DOMAIN_TAG || body``, body being every byte before
the signature. A tree travels in pre-order, each receipt as ``u32 length || receipt bytes``. Decoding
accepts exactly what encoding produces — no trailing bytes, no unknown version, kind or status, zeros where
the format says zeros, every field valid — so ``encode(decode(b)) == b`` for every accepted ``b`` and a
receipt's digest is well defined. A decoded receipt keeps the bytes it came from as its ``body`` and
``wire``; an issued one computes them once. A tree is decoded within VerifyConfig's bounds on size, depth,
receipt count and children per node, checked before anything below them is parsed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pangea_p2p.core.cid import DIGEST_BYTES, cid_from_digest
from pangea_p2p.core.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding, encode_ids, replay_key_of
from pangea_p2p.core.verify.format import (
    CHILDREN_WIRE_MAX,
    COMMON,
    DELEGATION_TAIL,
    EXECUTION_BYTES_MAX,
    EXECUTION_TAIL,
    NONCE_BYTES,
    RECEIPT_BYTES_MAX,
    TREE_RECORD_LENGTH,
    U32_MAX,
    VERSION,
    ZERO_DIGEST,
    ReceiptKind,
    id_problem,
    malformed,
    raise_if,
    time_problem,
    u64_problem,
)
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

if TYPE_CHECKING:
    import struct

    from pangea_p2p.core.verify.config import VerifyConfig


def _signer_problem(signer: str, issued_at_s: float, nonce: bytes, public_key: bytes, fuel_used: int) -> str | None:
    """Checks shared by both kinds of receipt, or None."""
    return (
        id_problem("signer", signer)
        or time_problem("issued_at_s", issued_at_s)
        or (None if isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES else f"nonce must be {NONCE_BYTES} bytes")
        or (None if isinstance(public_key, bytes) and len(public_key) == PUBLIC_KEY_BYTES
            else f"public key must be {PUBLIC_KEY_BYTES} bytes")
        or u64_problem("fuel_used", fuel_used)
    )


def _encode_common(
    kind: ReceiptKind, b: TaskBinding, nonce: bytes, issued_at_s: float, fuel_used: int, public_key: bytes
) -> bytes:
    lim = b.limits
    return COMMON.pack(
        VERSION, kind, nonce, issued_at_s, fuel_used, lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s,
        lim.output_bytes_max, b.chunk_count, b.module_digest, b.input_digest, public_key,
    )


class _Signed:
    """What a receipt of either kind derives from its bytes; a kind gives ``binding``, ``signer``, ``body``
    (the signed bytes, without the domain tag) and ``signature``."""

    binding: TaskBinding
    signature: bytes

    @property
    def signer(self) -> str:
        raise NotImplementedError

    @functools.cached_property
    def body(self) -> bytes:
        raise NotImplementedError

    @functools.cached_property
    def wire(self) -> bytes:
        """The full canonical encoding: body then signature."""
        return self.body + self.signature

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of :attr:`wire`: how a delegation receipt names this receipt."""
        return hashlib.sha256(self.wire).digest()

    @functools.cached_property
    def replay_key(self) -> bytes:
        """What the ReplayGuard remembers: one accepted receipt per (task, signer) (replay.py)."""
        return replay_key_of(self.binding, self.signer)


@dataclass(frozen=True)
class Receipt(_Signed):
    """A signed execution receipt. Make one with ``execution.issue_receipt``, parse with :func:`decode_receipt`."""

    binding: TaskBinding
    output_digest: bytes | None  # sha2-256 of the output; None exactly when ``failure`` is set
    failure: FailureKind | None
    output_root: bytes  # Merkle root over the output chunks (merkle.py); zeros for a failure
    output_chunks: int  # number of output chunks: >= 1 for a result (== binding.chunk_count), 0 for a failure
    fuel_used: int
    worker: str  # peer id of the signer
    issued_at_s: float
    nonce: bytes
    public_key: bytes
    signature: bytes = dataclasses.field(repr=False)

    kind = ReceiptKind.EXECUTION

    def __post_init__(self) -> None:
        raise_if(
            _signer_problem(self.worker, self.issued_at_s, self.nonce, self.public_key, self.fuel_used)
            or _outcome_problem(self)
        )

    @property
    def signer(self) -> str:
        return self.worker

    @property
    def ok(self) -> bool:
        return self.failure is None

    @functools.cached_property
    def output_cid(self) -> str | None:
        return None if self.output_digest is None else cid_from_digest(self.output_digest)

    @property
    def commitment(self) -> bytes:
        """The 32 bytes a parent delegation's Merkle tree commits to for this child: the output digest."""
        return self.output_digest or ZERO_DIGEST

    @functools.cached_property
    def body(self) -> bytes:
        """The signed bytes (without the domain tag)."""
        b = self.binding
        tail = EXECUTION_TAIL.pack(
            0 if self.failure is None else int(self.failure), self.output_digest or ZERO_DIGEST, self.output_root,
            self.output_chunks,
        )
        return (
            _encode_common(ReceiptKind.EXECUTION, b, self.nonce, self.issued_at_s, self.fuel_used, self.public_key)
            + tail
            + encode_ids(b, self.worker)
        )


def _outcome_problem(r: Receipt) -> str | None:
    if (r.output_digest is None) == (r.failure is None):
        return "exactly one of the output and the failure must be set"
    if r.output_digest is not None and len(r.output_digest) != DIGEST_BYTES:
        return "the output digest is 32 bytes (sha2-256)"
    if not isinstance(r.output_chunks, int) or isinstance(r.output_chunks, bool) or not 0 <= r.output_chunks <= U32_MAX:
        return f"output_chunks {r.output_chunks!r} is not an integer in 0..2^32-1"
    if not isinstance(r.output_root, bytes) or len(r.output_root) != DIGEST_BYTES:
        return "output_root must be 32 bytes"
    if r.failure is None and r.output_chunks == 0:
        return "output_chunks must be at least 1 for a result (every output has one chunk per input chunk)"
    if r.failure is not None and (r.output_chunks or r.output_root != ZERO_DIGEST):
        return "a failure receipt commits to no output chunks: output_chunks 0, output_root all zero"
    return None


@dataclass(frozen=True)
class DelegationReceipt(_Signed):
    """A delegator's signed statement: 'this task was done by these children, with these outputs'."""

    binding: TaskBinding
    children_root: bytes  # Merkle root over the children's commitments, in child order
    children: tuple[bytes, ...]  # SHA-256 of each child's encoded receipt, in child order
    fuel_used: int  # the sum of the children's fuel_used
    delegator: str  # peer id of the signer
    issued_at_s: float
    nonce: bytes
    public_key: bytes
    signature: bytes = dataclasses.field(repr=False)

    kind = ReceiptKind.DELEGATION

    def __post_init__(self) -> None:
        problem = _signer_problem(self.delegator, self.issued_at_s, self.nonce, self.public_key, self.fuel_used)
        if problem is None and len(self.children_root) != DIGEST_BYTES:
            problem = "children_root is 32 bytes"
        if problem is None and not 1 <= len(self.children) <= CHILDREN_WIRE_MAX:
            problem = f"a delegation has 1-{CHILDREN_WIRE_MAX} children, got {len(self.children)}"
        if problem is None and any(len(d) != DIGEST_BYTES for d in self.children):
            problem = "child digests are 32 bytes"
        raise_if(problem)

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
        """The signed bytes (without the domain tag)."""
        b = self.binding
        return (
            _encode_common(ReceiptKind.DELEGATION, b, self.nonce, self.issued_at_s, self.fuel_used, self.public_key)
            + DELEGATION_TAIL.pack(self.children_root, len(self.children))
            + b"".join(self.children)
            + encode_ids(b, self.delegator)
        )


AnyReceipt = Receipt | DelegationReceipt


# --- decoding -------------------------------------------------------------------------------------------


class _Reader:
    """A cursor over bytes from a peer; a short read is a MALFORMED error naming the field."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise malformed(f"{self.what} ends inside {field_name}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct, field_name: str) -> tuple[Any, ...]:
        if self.pos + st.size > len(self.data):
            raise malformed(f"{self.what} ends inside {field_name}")
        out = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return out

    def ids(self) -> tuple[str, str, str, str, str]:
        """job_id, task_id, parent_task_id, signer, issuer (checked when the dataclasses are built)."""
        out = []
        for name in ("job_id", "task_id", "parent_task_id", "signer", "issuer"):
            n = self.take(1, name)[0]
            raw = self.take(n, name)
            if not raw.isascii():
                raise malformed(f"{self.what} {name} is not ASCII")
            out.append(raw.decode("ascii"))
        return out[0], out[1], out[2], out[3], out[4]

    def signature(self) -> tuple[bytes, bytes]:
        """(body, signature): the signature must be exactly the remaining 64 bytes."""
        rest = len(self.data) - self.pos
        if rest != SIGNATURE_BYTES:
            raise malformed(f"{self.what} has {rest} bytes after its ids, expected exactly a 64-byte signature")
        return self.data[: self.pos], self.data[self.pos :]


def _check_header(data: bytes, what: str) -> ReceiptKind:
    """The kind of an encoded receipt; MALFORMED for a wrong size, version or kind."""
    if len(data) > RECEIPT_BYTES_MAX:
        raise malformed(f"{what} is {len(data)} bytes, more than any receipt ({RECEIPT_BYTES_MAX})")
    if len(data) < COMMON.size + SIGNATURE_BYTES:
        raise malformed(f"{what} is {len(data)} bytes, shorter than any receipt")
    if data[0] != VERSION:
        raise malformed(f"{what} has version {data[0]}, this peer understands version {VERSION}")
    try:
        return ReceiptKind(data[1])
    except ValueError:
        raise malformed(f"{what} has unknown kind {data[1]}") from None


class _Common:
    """The fixed fields every receipt starts with, as decoded from the reader's position."""

    __slots__ = ("chunk_count", "fuel_used", "input_digest", "issued_at_s", "limits", "module_digest", "nonce",
                 "public_key")

    def __init__(self, rd: _Reader) -> None:
        (_, _, self.nonce, self.issued_at_s, self.fuel_used, fuel_max, memory_bytes_max, wall_time_s,
         output_bytes_max, self.chunk_count, self.module_digest, self.input_digest,
         self.public_key) = rd.unpack(COMMON, "fixed fields")
        if not (math.isfinite(wall_time_s) and wall_time_s >= 0.0):
            raise malformed(f"{rd.what} wall_time_s {wall_time_s!r} is not a finite, non-negative number")
        self.limits = ReceiptLimits(fuel_max, memory_bytes_max, wall_time_s, output_bytes_max)

    def binding(self, ids: tuple[str, str, str, str, str]) -> TaskBinding:
        """The binding from these fields and the ids (job, task, parent, signer, issuer); LocalProtocolError
        if a field is invalid."""
        job_id, task_id, parent_task_id, _, issuer = ids
        return TaskBinding(job_id, task_id, parent_task_id, self.module_digest, self.input_digest, self.limits, issuer,
                           self.chunk_count)


def decode_receipt(data: bytes | bytearray | memoryview, what: str = "receipt") -> Receipt:
    """Parse an execution receipt from a peer; VerificationError(MALFORMED) says which field is wrong.

    Decoding checks the format only; ``execution.verify_receipt`` checks what the receipt claims.
    """
    data = bytes(data)
    if _check_header(data, what) is not ReceiptKind.EXECUTION:
        raise malformed(f"{what} is a {ReceiptKind(data[1]).name.lower()} receipt, expected an execution receipt")
    if len(data) > EXECUTION_BYTES_MAX:
        raise malformed(f"{what} is {len(data)} bytes, more than an execution receipt ({EXECUTION_BYTES_MAX})")
    rd = _Reader(data, what)
    common = _Common(rd)
    status, output_d, output_root, output_chunks = rd.unpack(EXECUTION_TAIL, "outcome")
    failure: FailureKind | None = None
    if status:
        try:
            failure = FailureKind(status)
        except ValueError:
            raise malformed(f"{what} has unknown status {status}") from None
        if output_d != ZERO_DIGEST:
            raise malformed(f"{what} reports failure {failure.name} but names an output")
    ids = rd.ids()
    body, signature = rd.signature()
    try:
        receipt = Receipt(
            common.binding(ids), None if failure else output_d, failure, output_root, output_chunks, common.fuel_used,
            ids[3], common.issued_at_s, common.nonce, common.public_key, signature,
        )
    except LocalProtocolError as exc:
        raise malformed(f"{what}: {exc}") from None
    receipt.__dict__["body"] = body
    receipt.__dict__["wire"] = data
    return receipt


def decode_delegation(data: bytes, what: str = "receipt") -> DelegationReceipt:
    """Parse a delegation receipt from a peer; VerificationError(MALFORMED) names the wrong field."""
    if _check_header(data, what) is not ReceiptKind.DELEGATION:
        raise malformed(f"{what} is an execution receipt, expected a delegation receipt")
    rd = _Reader(data, what)
    common = _Common(rd)
    children_root, count = rd.unpack(DELEGATION_TAIL, "children")
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
    if _check_header(data, what) is ReceiptKind.EXECUTION:
        return decode_receipt(data, what)
    return decode_delegation(data, what)


# --- receipt trees --------------------------------------------------------------------------------------


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
            parts.append(TREE_RECORD_LENGTH.pack(len(wire)))
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
        if self.pos + TREE_RECORD_LENGTH.size > len(self.data):
            raise malformed(f"receipt tree ends before {what}")
        (length,) = TREE_RECORD_LENGTH.unpack_from(self.data, self.pos)
        start = self.pos + TREE_RECORD_LENGTH.size
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


# --- what a verification proves -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedTree:
    """What a verified receipt or receipt tree proves: returned by ``execution.verify_receipt`` (a
    one-receipt tree) and ``tree.verify_tree``; votes (voting.py) and reveals (commit_reveal.py) are made of
    these."""

    root: AnyReceipt
    leaves: tuple[Receipt, ...]  # the execution receipts, in output order (the root itself if it is one)
    fuel_used: int
    signers: frozenset[str]  # every peer that signed a receipt of the tree
    receipts: int
    # sha2-256 of the task's framed output: the root's own signed output digest for an execution receipt,
    # the digest of the output checked against every leaf for a delegation tree verified with its output;
    # None for a failure, or for a delegation tree verified without its output
    output_digest: bytes | None

    @classmethod
    def of_receipt(cls, receipt: Receipt) -> VerifiedTree:
        """What one execution receipt, checked by the caller, proves."""
        return cls(receipt, (receipt,), receipt.fuel_used, frozenset((receipt.worker,)), 1, receipt.output_digest)

    @property
    def worker(self) -> str:
        """The peer the task was given to: the root's signer."""
        return self.root.signer

    @property
    def binding(self) -> TaskBinding:
        return self.root.binding

    @property
    def failure(self) -> FailureKind | None:
        return self.root.failure if isinstance(self.root, Receipt) else None
