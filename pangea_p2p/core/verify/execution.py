"""Execution receipts: a worker issues one for a task it ran; the peer that gave it the task verifies it.

``issue_receipt`` signs, as the worker's identity, the task's binding with the outcome — the framed output
(its content id, Merkle root and chunk count are computed from it), an output already summarised by its
content id, root and count, or a typed failure — the fuel used, the worker's clock and a nonce from the rng
it is given. The receipt is signed as given: one whose chunk count is not the binding's will not verify.

``verify_receipt`` accepts a receipt for the task the verifier issued and gave to one worker. It checks, in
the order of protocols/receipt.md §5, reporting the first failure: the key inside the signer's peer id is
the key that signed -> the signature -> the binding (module and input ids, then job, task, parent, issuer,
limits, chunk count) -> the signer is the worker the task was given to -> fuel within its budget -> a
result commits to exactly the binding's number of chunks -> the output bytes, when given: their content id,
their framing, their chunk count, each chunk's size and the Merkle root -> freshness -> replay. The receipt
is recorded in the ReplayGuard (replay.py: one accepted receipt per task and worker) only after every other
check passed, so a forged receipt can neither evict nor shadow a real one. It returns what the receipt
proves, a one-receipt VerifiedTree, ready for a vote.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import parse_cid
from pangea_p2p.core.verify.checks import (
    check_binding,
    check_freshness,
    check_fuel,
    check_output,
    check_result,
    check_signature,
)
from pangea_p2p.core.verify.format import DOMAIN_TAG, NONCE_BYTES, ZERO_DIGEST
from pangea_p2p.core.verify.merkle import root_of
from pangea_p2p.core.verify.receipts import Receipt, VerifiedTree
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, RemoteProtocolError, VerificationError

if TYPE_CHECKING:
    import random

    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.verify.binding import TaskBinding
    from pangea_p2p.core.verify.config import VerifyConfig
    from pangea_p2p.core.verify.replay import ReplayGuard


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
