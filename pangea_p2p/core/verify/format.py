"""The byte format of receipts, version 1: constants, layouts, and the rules every single field follows.

This is the bottom layer of the package: it knows bytes and numbers, not receipts. protocols/receipt.md is
normative; the layouts here are its tables.

    every receipt   COMMON (166 bytes: version, kind, nonce, issued_at_s, fuel_used, the four limits,
                    chunk_count, module digest, input digest, public key), then a tail by kind, then five
                    ids (job, task, parent task, signer, issuer), then the 64-byte signature
    execution tail  EXECUTION_TAIL: status, output digest, output root, output chunks
    delegation tail DELEGATION_TAIL: children root, child count; then 32 bytes per child
    receipt tree    pre-order records ``TREE_RECORD_LENGTH (u32) || receipt bytes``

Integers are unsigned big-endian, times f64 big-endian. An *id* on the wire is a u8 length and 1-128 bytes
of printable ASCII without space (``encode_id``, ``id_problem``; a parent task id may be empty). A receipt is
signed over ``DOMAIN_TAG || body``; the tag names the version, so no signature can be read as a signature of
another version or of another message a peer signs. The replay key (binding.py) hashes ``REPLAY_TAG`` and the
five ids. The ``*_problem`` functions say why a value cannot go on the wire (or None); the layers above turn
that into a LocalProtocolError for our own misuse (``raise_if``) or a MALFORMED rejection for a peer's bytes
(``malformed``).
"""

from __future__ import annotations

import enum
import math
import re
import struct

from pangea_p2p.core.cid import DIGEST_BYTES
from pangea_p2p.core.identity import SIGNATURE_BYTES
from pangea_p2p.errors import LocalProtocolError, RejectReason, VerificationError

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
EXECUTION_TAIL = struct.Struct(">B32s32sI")
# children root, child count
DELEGATION_TAIL = struct.Struct(">32sH")
# the length before each receipt of an encoded receipt tree
TREE_RECORD_LENGTH = struct.Struct(">I")

IDS_BYTES_MAX = 5 * (1 + ID_BYTES_MAX)
EXECUTION_BYTES_MAX = COMMON.size + EXECUTION_TAIL.size + IDS_BYTES_MAX + SIGNATURE_BYTES
RECEIPT_BYTES_MAX = (
    COMMON.size + DELEGATION_TAIL.size + CHILDREN_WIRE_MAX * DIGEST_BYTES + IDS_BYTES_MAX + SIGNATURE_BYTES
)

_ID_RE = re.compile(rb"[!-~]*")  # printable ASCII, no space


class ReceiptKind(enum.IntEnum):
    """The kind byte (second byte) of an encoded receipt."""

    EXECUTION = 1
    DELEGATION = 2


def malformed(what: str) -> VerificationError:
    """The rejection of bytes the format forbids."""
    return VerificationError(RejectReason.MALFORMED, what)


def raise_if(problem: str | None) -> None:
    """LocalProtocolError for a value of our own that cannot go on the wire."""
    if problem is not None:
        raise LocalProtocolError(problem)


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


def u64_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be a u64 field, or None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX:
        return None
    return f"{name} {value!r} is not an integer in 0..2^64-1"


def time_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be a time field (f64 seconds, finite, >= 0), or None."""
    if isinstance(value, float | int) and math.isfinite(value) and value >= 0.0:
        return None
    return f"{name} {value!r} is not a finite, non-negative number"


def encode_id(value: str) -> bytes:
    """An id as it goes on the wire: u8 length, then its ASCII bytes (checked with ``id_problem`` first)."""
    raw = value.encode("ascii")
    return len(raw).to_bytes(1, "big") + raw
