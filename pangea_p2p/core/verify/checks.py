"""The single checks every verification is made of, each raising VerificationError with its reason code.

    check_signature   the key is the key inside the signer's peer id (KEY_PEER_MISMATCH), and it signed
                      ``DOMAIN_TAG || body`` (BAD_SIGNATURE)
    check_binding     the receipt is for the task the verifier issued: module and input (CID_MISMATCH), job,
                      task, parent task, issuer, limits, chunk count (BINDING_MISMATCH)
    check_fuel        fuel used within the task's budget (LIMIT_EXCEEDED)
    check_freshness   issued within ``receipt_age_max_s`` (EXPIRED), not after now + ``clock_skew_max_s``
                      (FROM_FUTURE)
    check_result      a result commits to exactly the binding's number of output chunks (BINDING_MISMATCH)
    output_chunks_of  the chunks of a framed output: a framed list (MALFORMED) of the committed number of
                      chunks (PROOF_INVALID), each within the output limit (LIMIT_EXCEEDED)
    check_output      output bytes are what an execution receipt commits to: content id (CID_MISMATCH),
                      chunks as above, Merkle root (PROOF_INVALID)

Replay, the last check of a verification, is the ReplayGuard's (replay.py). The checks are pure functions of
their arguments (``now`` and the config are passed in) and record nothing; execution.py (one receipt) and
tree.py (a whole tree, with delegation.py's rules between a delegation receipt and its children) put them in
the order protocols/receipt.md §5 and §7 fix. Verification keys are cached per public key, since a verifier
sees the same workers again and again.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

import nacl.exceptions
import nacl.signing

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.identity import public_key_from_peer_id
from pangea_p2p.core.verify.format import DOMAIN_TAG, malformed
from pangea_p2p.core.verify.merkle import root_of
from pangea_p2p.errors import RejectReason, RemoteProtocolError, VerificationError

if TYPE_CHECKING:
    from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
    from pangea_p2p.core.verify.config import VerifyConfig
    from pangea_p2p.core.verify.receipts import Receipt


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
