"""Signed receipts: what a worker says it did, in bytes anyone can check offline.

A *task binding* is what the issuer asked for: job id, task id, parent task id, module and input content
ids, limits, the number of input chunks (``chunk_count``; a task runs its module once per chunk and outputs
one chunk per input chunk, see pangea_p2p.core.chunks) and the issuer's peer id. An *execution receipt*
adds what happened — the content id of the framed output and the Merkle root over its chunks, or a typed
failure — the fuel used, the worker's peer id and public key, when it was issued, a random nonce, and the
worker's ed25519 signature. Delegation receipts (a peer that split the task signs over its children's
receipts) live in chain.py and share this module's encoding.

Encoding (protocols/receipt.md is normative): a fixed big-endian ``struct`` layout — version byte, kind
byte, fixed-width fields, five length-prefixed ASCII ids — then the 64-byte signature over
``DOMAIN_TAG || body``, body being every byte before the signature. The tag keeps a receipt signature from
being valid for any other message the peer signs, and names the version, so a v2 decoder can never be fed a
v1 signature as its own. Decoding accepts exactly what encoding produces (no trailing bytes, no unknown
values, zeros where the format says zeros): ``encode(decode(b)) == b`` for every accepted ``b``. Content
ids are held as their 32-byte sha2-256 digests (the ``*_cid`` properties give the ``bafkrei...`` strings),
so encoding and decoding never touch base32.

Verification (``verify_receipt``) checks, in order: the key inside the signer's peer id is the key that
signed -> the signature -> the binding (module and input ids, then job, task, parent, issuer, limits, chunk
count) -> the signer is the worker the task was given to -> fuel within its budget -> a result commits to
exactly the binding's number of chunks -> the output bytes, when given: their content id, their framing,
their chunk count, each chunk's size and the Merkle root -> freshness -> replay (replay.py: one accepted
receipt per task and worker). A receipt is recorded in the ReplayGuard only after every other check passed,
so a forged receipt can neither evict nor shadow a real one.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing

from pangea_p2p.core.chunks import CHUNKS_MAX, unframe_chunks
from pangea_p2p.core.cid import DIGEST_BYTES as DIGEST_BYTES
from pangea_p2p.core.cid import cid_from_digest, parse_cid
from pangea_p2p.core.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, public_key_from_peer_id
from pangea_p2p.core.verify.merkle import root_of
from pangea_p2p.core.verify.replay import ReplayGuard as ReplayGuard
from pangea_p2p.errors import (
    FailureKind,
    LocalProtocolError,
    RejectReason,
    RemoteProtocolError,
    VerificationError,
)

if TYPE_CHECKING:
    import random

    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.verify.chain import DelegationReceipt
    from pangea_p2p.core.verify.config import VerifyConfig

VERSION = 1
DOMAIN_TAG = b"pangea/receipt/v1\x00"
REPLAY_TAG = b"pangea/replay/v1\x00"
NONCE_BYTES = 16
ID_BYTES_MAX = 128
ZERO_DIGEST = bytes(DIGEST_BYTES)
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
CHILDREN_WIRE_MAX = 0xFFFF

# version, kind, nonce, issued_at_s, fuel_used, fuel_max, memory_bytes_max, wall_time_s, output_bytes_max,
# chunk_count, module digest, input digest, signer public key
COMMON = struct.Struct(">BB16sdQQQdQI32s32s32s")
# status, output digest, output root, output chunks
_EXEC_TAIL = struct.Struct(">B32s32sI")
_IDS_BYTES_MAX = 5 * (1 + ID_BYTES_MAX)
EXECUTION_BYTES_MAX = COMMON.size + _EXEC_TAIL.size + _IDS_BYTES_MAX + SIGNATURE_BYTES
RECEIPT_BYTES_MAX = COMMON.size + 34 + CHILDREN_WIRE_MAX * DIGEST_BYTES + _IDS_BYTES_MAX + SIGNATURE_BYTES

_ID_RE = re.compile(rb"[!-~]*")  # printable ASCII, no space


class ReceiptKind(enum.IntEnum):
    """The kind byte (second byte) of an encoded receipt."""

    EXECUTION = 1
    DELEGATION = 2


def malformed(what: str) -> VerificationError:
    return VerificationError(RejectReason.MALFORMED, what)


def id_problem(name: str, value: object, *, allow_empty: bool = False) -> str | None:
    """Why ``value`` cannot be an id on the wire (1-128 printable ASCII characters, no spaces), or None."""
    if (
        isinstance(value, str)
        and len(value) <= ID_BYTES_MAX
        and (value or allow_empty)
        and value.isascii()
        and _ID_RE.fullmatch(value.encode("ascii"))
    ):
        return None
    low = 0 if allow_empty else 1
    return f"{name} {str(value)[:40]!r} is not {low}-{ID_BYTES_MAX} printable ASCII characters without spaces"


def _u64_problem(name: str, value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX:
        return None
    return f"{name} {value!r} is not an integer in 0..2^64-1"


def _time_problem(name: str, value: object) -> str | None:
    if isinstance(value, float | int) and math.isfinite(value) and value >= 0.0:
        return None
    return f"{name} {value!r} is not a finite, non-negative number"


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise LocalProtocolError(problem)


@dataclass(frozen=True, slots=True)
class ReceiptLimits:
    """The limits a task ran under; the field names are the sandbox's SandboxLimits field names."""

    fuel_max: int
    memory_bytes_max: int
    wall_time_s: float
    output_bytes_max: int

    def __post_init__(self) -> None:
        for name in ("fuel_max", "memory_bytes_max", "output_bytes_max"):
            _raise_if(_u64_problem(f"limits.{name}", getattr(self, name)))
        _raise_if(_time_problem("limits.wall_time_s", self.wall_time_s))
        object.__setattr__(self, "wall_time_s", float(self.wall_time_s))


@dataclass(frozen=True)
class TaskBinding:
    """What an issuer asked a worker to do; a verifier compares a receipt's binding to its own.

    Build it with :meth:`of` from content-id strings; it stores their digests. ``input_cid`` names the
    *framed* input chunk list and ``chunk_count`` is its number of chunks (1..CHUNKS_MAX), which is also the
    number of output chunks a result must commit to.
    """

    job_id: str
    task_id: str
    parent_task_id: str  # "" for a task the submitter issued itself
    module_digest: bytes
    input_digest: bytes
    limits: ReceiptLimits
    issuer: str  # peer id of the peer that handed out the task
    chunk_count: int  # input chunks = output chunks of the task

    def __post_init__(self) -> None:
        _raise_if(
            id_problem("job_id", self.job_id)
            or id_problem("task_id", self.task_id)
            or id_problem("parent_task_id", self.parent_task_id, allow_empty=True)
            or id_problem("issuer", self.issuer)
        )
        count = self.chunk_count
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= CHUNKS_MAX:
            raise LocalProtocolError(f"chunk_count {count!r} is not an integer in 1..{CHUNKS_MAX}")
        if len(self.module_digest) != DIGEST_BYTES or len(self.input_digest) != DIGEST_BYTES:
            raise LocalProtocolError("module and input digests are 32 bytes (sha2-256)")
        if not isinstance(self.limits, ReceiptLimits):
            raise LocalProtocolError(f"limits must be ReceiptLimits, got {type(self.limits).__name__}")

    @classmethod
    def of(
        cls, *, job_id: str, task_id: str, module_cid: str, input_cid: str, limits: ReceiptLimits, issuer: str,
        chunk_count: int, parent_task_id: str = "",
    ) -> TaskBinding:
        """The binding for a task, from content-id strings (RemoteProtocolError if one is not a sha2-256 CID)."""
        return cls(
            job_id, task_id, parent_task_id, parse_cid(module_cid), parse_cid(input_cid), limits, issuer, chunk_count
        )

    @functools.cached_property
    def module_cid(self) -> str:
        return cid_from_digest(self.module_digest)

    @functools.cached_property
    def input_cid(self) -> str:
        return cid_from_digest(self.input_digest)


def signer_problem(signer: str, issued_at_s: float, nonce: bytes, public_key: bytes, fuel_used: int) -> str | None:
    """Checks shared by both kinds of receipt, or None."""
    return (
        id_problem("signer", signer)
        or _time_problem("issued_at_s", issued_at_s)
        or (None if isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES else f"nonce must be {NONCE_BYTES} bytes")
        or (None if isinstance(public_key, bytes) and len(public_key) == PUBLIC_KEY_BYTES
            else f"public key must be {PUBLIC_KEY_BYTES} bytes")
        or _u64_problem("fuel_used", fuel_used)
    )


@dataclass(frozen=True)
class Receipt:
    """A signed execution receipt. Make one with :func:`issue_receipt`, parse with :func:`decode_receipt`."""

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
        _raise_if(
            signer_problem(self.worker, self.issued_at_s, self.nonce, self.public_key, self.fuel_used)
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
        tail = _EXEC_TAIL.pack(
            0 if self.failure is None else int(self.failure), self.output_digest or ZERO_DIGEST, self.output_root,
            self.output_chunks,
        )
        return (
            encode_common(ReceiptKind.EXECUTION, b, self.nonce, self.issued_at_s, self.fuel_used, self.public_key)
            + tail
            + encode_ids(b, self.worker)
        )

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
        """What the ReplayGuard remembers: one accepted receipt per (task, worker) (replay.py)."""
        return replay_key_of(self.binding, self.worker)


def replay_key_of(binding: TaskBinding, signer: str) -> bytes:
    """SHA-256 over the tag, then job, task, parent task, signer and issuer ids as encoded in a receipt."""
    return hashlib.sha256(REPLAY_TAG + encode_ids(binding, signer)).digest()


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


def encode_common(
    kind: ReceiptKind, b: TaskBinding, nonce: bytes, issued_at_s: float, fuel_used: int, public_key: bytes
) -> bytes:
    lim = b.limits
    return COMMON.pack(
        VERSION, kind, nonce, issued_at_s, fuel_used, lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s,
        lim.output_bytes_max, b.chunk_count, b.module_digest, b.input_digest, public_key,
    )


def encode_ids(b: TaskBinding, signer: str) -> bytes:
    parts = []
    for value in (b.job_id, b.task_id, b.parent_task_id, signer, b.issuer):
        raw = value.encode("ascii")
        parts.append(len(raw).to_bytes(1, "big"))
        parts.append(raw)
    return b"".join(parts)


def issue_receipt(
    identity: Identity,
    binding: TaskBinding,
    *,
    fuel_used: int,
    now: float,
    rng: random.Random,
    output: bytes | bytearray | memoryview | None = None,
    failure: FailureKind | None = None,
    output_cid: str | None = None,
    output_root: bytes | None = None,
    output_chunks: int | None = None,
) -> Receipt:
    """Sign an execution receipt as ``identity``; the node passes ``random.SystemRandom()`` as ``rng``.

    Give exactly one of: ``output``, the framed output chunk list (the content id, the Merkle root and the
    chunk count are computed from it); ``output_cid`` with ``output_root`` and ``output_chunks``, when the
    caller already has them; or ``failure`` for a typed failure. The receipt is signed as given: a result
    whose chunk count is not ``binding.chunk_count`` will not verify. LocalProtocolError if the arguments
    do not describe one outcome or a field cannot be encoded.
    """
    digest, root, count = _outcome(output, failure, output_cid, output_root, output_chunks)
    unsigned = Receipt(
        binding, digest, failure, root, count, fuel_used, identity.peer_id, float(now), rng.randbytes(NONCE_BYTES),
        identity.public_key, b"",
    )
    # The one write to a frozen receipt, before it escapes: the signature is not part of the body, and
    # rebuilding the dataclass (dataclasses.replace) would cost a fifth of the signing time again.
    object.__setattr__(unsigned, "signature", identity.sign(DOMAIN_TAG + unsigned.body))
    return unsigned


def _outcome(
    output: bytes | bytearray | memoryview | None, failure: FailureKind | None, output_cid: str | None,
    output_root: bytes | None, output_chunks: int | None,
) -> tuple[bytes | None, bytes, int]:
    """(output digest, output root, output chunks) for issue_receipt."""
    given = sum(x is not None for x in (output, failure, output_cid))
    if given != 1:
        raise LocalProtocolError("a receipt reports exactly one of: output bytes, an output_cid, a failure")
    if output is not None:
        if output_root is not None or output_chunks is not None:
            raise LocalProtocolError("output_root and output_chunks are computed from the output bytes")
        try:
            chunks = unframe_chunks(output)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"the output is not a framed chunk list: {exc}") from None
        return hashlib.sha256(output).digest(), root_of(chunks), len(chunks)
    if output_cid is not None:
        if output_root is None or output_chunks is None:
            raise LocalProtocolError("a receipt with an output_cid needs output_root and output_chunks too")
        try:
            return parse_cid(output_cid), output_root, output_chunks
        except RemoteProtocolError as exc:  # the caller's own id: misuse, not a peer's fault
            raise LocalProtocolError(f"output_cid: {exc}") from None
    return None, ZERO_DIGEST if output_root is None else output_root, output_chunks or 0


class Reader:
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


def check_header(data: bytes, what: str = "receipt") -> ReceiptKind:
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


class Common:
    """The fixed fields every receipt starts with, as decoded (see :func:`decode_common`)."""

    __slots__ = ("chunk_count", "fuel_used", "input_digest", "issued_at_s", "limits", "module_digest", "nonce",
                 "public_key")

    def __init__(self, rd: Reader) -> None:
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


def decode_common(rd: Reader) -> Common:
    """The fixed fields at the reader's position."""
    return Common(rd)


def decode_receipt(data: bytes | bytearray | memoryview, what: str = "receipt") -> Receipt:
    """Parse an execution receipt from a peer; VerificationError(MALFORMED) says which field is wrong.

    Decoding checks the format only; :func:`verify_receipt` checks what the receipt claims.
    """
    data = bytes(data)
    if check_header(data, what) is not ReceiptKind.EXECUTION:
        raise malformed(f"{what} is a {ReceiptKind(data[1]).name.lower()} receipt, expected an execution receipt")
    if len(data) > EXECUTION_BYTES_MAX:
        raise malformed(f"{what} is {len(data)} bytes, more than an execution receipt ({EXECUTION_BYTES_MAX})")
    rd = Reader(data, what)
    common = decode_common(rd)
    status, output_d, output_root, output_chunks = rd.unpack(_EXEC_TAIL, "outcome")
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


# --- checks shared by execution and delegation receipts ------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public_key)


def check_signature(signer: str, public_key: bytes, body: bytes, signature: bytes, what: str = "receipt") -> None:
    """KEY_PEER_MISMATCH unless ``public_key`` is the key inside ``signer``; BAD_SIGNATURE unless it signed."""
    try:
        expected_key = public_key_from_peer_id(signer)
    except RemoteProtocolError:
        raise VerificationError(
            RejectReason.KEY_PEER_MISMATCH, f"{what} signer {signer[:60]!r} is not an ed25519 peer id"
        ) from None
    if expected_key != public_key:
        raise VerificationError(
            RejectReason.KEY_PEER_MISMATCH, f"{what} is signed with a key that is not the key of {signer}"
        )
    try:
        _verify_key(public_key).verify(DOMAIN_TAG + body, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        raise VerificationError(RejectReason.BAD_SIGNATURE, f"{what} signature by {signer} does not verify") from None


def check_binding(actual: TaskBinding, expected: TaskBinding, what: str = "receipt") -> None:
    """CID_MISMATCH for another module or input; BINDING_MISMATCH for any other field that differs."""
    if actual == expected:
        return
    for name in ("module_digest", "input_digest"):
        if getattr(actual, name) != getattr(expected, name):
            cid_name = name.replace("_digest", "_cid")
            raise VerificationError(
                RejectReason.CID_MISMATCH,
                f"{what} names {cid_name} {getattr(actual, cid_name)}, expected {getattr(expected, cid_name)}",
            )
    for name in ("job_id", "task_id", "parent_task_id", "issuer", "limits", "chunk_count"):
        if getattr(actual, name) != getattr(expected, name):
            raise VerificationError(
                RejectReason.BINDING_MISMATCH,
                f"{what} is for {name} {getattr(actual, name)!r}, expected {getattr(expected, name)!r}",
            )


def check_fuel(fuel_used: int, limits: ReceiptLimits, what: str = "receipt") -> None:
    """LIMIT_EXCEEDED if ``fuel_used`` is above the budget the task was given."""
    if fuel_used > limits.fuel_max:
        raise VerificationError(
            RejectReason.LIMIT_EXCEEDED, f"{what} claims {fuel_used} fuel used, above its budget of {limits.fuel_max}"
        )


def check_freshness(issued_at_s: float, now: float, config: VerifyConfig, what: str = "receipt") -> None:
    """EXPIRED if issued over ``receipt_age_max_s`` ago; FROM_FUTURE if after ``now + clock_skew_max_s``."""
    if issued_at_s < now - config.receipt_age_max_s:
        raise VerificationError(
            RejectReason.EXPIRED,
            f"{what} was issued {now - issued_at_s:.0f} s ago, the limit is {config.receipt_age_max_s:.0f} s",
        )
    if issued_at_s > now + config.clock_skew_max_s:
        raise VerificationError(
            RejectReason.FROM_FUTURE,
            f"{what} is dated {issued_at_s - now:.1f} s ahead, the allowed clock skew is "
            f"{config.clock_skew_max_s:.0f} s",
        )



def check_result(r: Receipt, what: str = "receipt") -> None:
    """BINDING_MISMATCH unless a result commits to exactly the binding's number of output chunks."""
    if r.failure is None and r.output_chunks != r.binding.chunk_count:
        raise VerificationError(
            RejectReason.BINDING_MISMATCH,
            f"{what} commits to {r.output_chunks} output chunks, the task has {r.binding.chunk_count} input chunks",
        )


def output_chunks_of(
    output: bytes | bytearray | memoryview, chunk_count: int, limits: ReceiptLimits, what: str
) -> list[bytes]:
    """The chunks of a framed output that must hold ``chunk_count`` chunks, each within the output limit.

    MALFORMED if it is not a framed list, PROOF_INVALID for another number of chunks, LIMIT_EXCEEDED for a
    chunk larger than ``limits.output_bytes_max`` (the limit of one guest run, i.e. of one chunk).
    """
    try:
        chunks = unframe_chunks(output)
    except RemoteProtocolError as exc:
        raise malformed(f"output of {what} is not a framed chunk list: {exc}") from None
    if len(chunks) != chunk_count:
        raise VerificationError(
            RejectReason.PROOF_INVALID, f"output of {what} has {len(chunks)} chunks, it commits to {chunk_count}"
        )
    for i, chunk in enumerate(chunks):
        if len(chunk) > limits.output_bytes_max:
            raise VerificationError(
                RejectReason.LIMIT_EXCEEDED,
                f"output chunk {i} of {what} is {len(chunk)} bytes, the limit is {limits.output_bytes_max}",
            )
    return chunks


def check_output(r: Receipt, output: bytes | bytearray | memoryview, what: str = "receipt") -> None:
    """The output bytes are what ``r`` commits to: its content id, then its chunks and their Merkle root."""
    if r.output_digest is None:
        raise VerificationError(RejectReason.CID_MISMATCH, f"{what} reports a failure, yet output bytes came")
    if hashlib.sha256(output).digest() != r.output_digest:
        raise VerificationError(
            RejectReason.CID_MISMATCH, f"the {len(output)} output bytes do not hash to {what}'s {r.output_cid}"
        )
    chunks = output_chunks_of(output, r.output_chunks, r.binding.limits, what)
    if root_of(chunks) != r.output_root:
        raise VerificationError(
            RejectReason.PROOF_INVALID, f"the Merkle root of the output's chunks is not the root {what} commits to"
        )


@dataclass(frozen=True)
class VerifiedTree:
    """What a verified receipt or receipt tree proves: returned by :func:`verify_receipt` (a one-receipt
    tree) and ``chain.verify_tree``; votes (voting.py) and reveals (commit_reveal.py) are made of these."""

    root: Receipt | DelegationReceipt
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


def verify_receipt(
    receipt: Receipt,
    expected: TaskBinding,
    now: float,
    config: VerifyConfig,
    *,
    worker: str,
    guard: ReplayGuard | None = None,
    output: bytes | bytearray | memoryview | None = None,
) -> VerifiedTree:
    """Accept ``receipt`` for the task ``expected`` given to ``worker``, or raise VerificationError.

    ``worker``: the peer the task was given to; the receipt must be signed by it (NOT_ASSIGNED).
    ``output``: the framed output, when the caller has it, checked against the output id, the chunk count
    and the Merkle root. ``guard``: records the receipt (one per task and worker), only when every check
    passed. Returns what the receipt proves, ready for a VoteTally or a CommitReveal.
    """
    what = "receipt"
    check_signature(receipt.worker, receipt.public_key, receipt.body, receipt.signature)
    check_binding(receipt.binding, expected)
    if receipt.worker != worker:
        raise VerificationError(
            RejectReason.NOT_ASSIGNED, f"receipt is signed by {receipt.worker}, the task was given to {worker}"
        )
    check_fuel(receipt.fuel_used, receipt.binding.limits)
    check_result(receipt)
    if output is not None:
        check_output(receipt, output, what)
    check_freshness(receipt.issued_at_s, now, config)
    if guard is not None:
        guard.check_and_record(receipt.replay_key, receipt.issued_at_s, now)
    return VerifiedTree.of_receipt(receipt)
