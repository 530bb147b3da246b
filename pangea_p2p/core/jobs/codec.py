"""Codec of the compute and block protocols (protocols/compute.md, block.md): messages <-> bytes.

Decoding is for untrusted bytes: every field is checked (ids, sizes, counts, ranges) and anything wrong is a
RemoteProtocolError naming the field. The node and the simulator both use these functions, so the simulator
counts real message sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from pangea_p2p.core.cid import canonical_cid
from pangea_p2p.core.jobs.model import DEPTH_MAX, TaskRef
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.format import id_problem
from pangea_p2p.errors import RemoteProtocolError
from pangea_p2p.wire import block_pb2, compute_pb2

MESSAGE_BYTES_MAX = 2 << 20
INPUT_INLINE_MAX = 64 << 10
OUTPUT_INLINE_MAX = 256 << 10
LOG_BYTES_MAX = 72 << 10
REASON_CHARS_MAX = 256
PATH_MAX = DEPTH_MAX + 2
BLOCK_FRAME_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Offer:
    ref: TaskRef
    input_inline: bytes = b""


@dataclass(frozen=True, slots=True)
class Accepted:
    task_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Commitment:
    task_id: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class RevealRequest:
    task_id: str


@dataclass(frozen=True, slots=True)
class Result:
    task_id: str
    receipt_tree: bytes
    output_inline: bytes = b""
    output_cid: str = ""
    output_bytes: int = 0
    nonce: bytes = b""
    log: bytes = b""  # what the task printed; unsigned, for the submitter's eyes (compute.md, "Log")


@dataclass(frozen=True, slots=True)
class Cancel:
    task_id: str


Message = Offer | Accepted | Rejected | Commitment | RevealRequest | Result | Cancel


def clip_log(log: bytes) -> bytes:
    """``log`` within LOG_BYTES_MAX: a longer one keeps its beginning and its end (where a traceback is)."""
    if len(log) <= LOG_BYTES_MAX:
        return log
    half = (LOG_BYTES_MAX - 100) // 2
    note = f"\n[pangea: {len(log) - 2 * half} bytes of log cut here]\n".encode()
    return log[:half] + note + log[-half:]


def _limits_pb(lim: ReceiptLimits) -> compute_pb2.Limits:
    return compute_pb2.Limits(fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max,
                              wall_time_s=lim.wall_time_s, output_bytes_max=lim.output_bytes_max)


def encode(msg: Message) -> bytes:
    m = compute_pb2.ComputeMessage()
    if isinstance(msg, Offer):
        r = msg.ref
        m.offer.CopyFrom(compute_pb2.TaskOffer(
            job_id=r.job_id, task_id=r.task_id, parent_task_id=r.parent_task_id, module_cid=r.module_cid,
            input_cid=r.input_cid, input_bytes=r.input_bytes, chunk_count=r.chunk_count, limits=_limits_pb(r.limits),
            issuer=r.issuer, depth=r.depth, depth_max=r.depth_max, path=list(r.path),
            partition_index=r.partition_index, partition_count=r.partition_count,
            deadline_s=r.deadline_s if math.isfinite(r.deadline_s) else 0.0, commit_reveal=r.commit_reveal,
            fuel_per_chunk_estimate=r.fuel_per_chunk_estimate, input_inline=msg.input_inline,
        ))
    elif isinstance(msg, Accepted):
        m.accepted.task_id = msg.task_id
    elif isinstance(msg, Rejected):
        m.rejected.CopyFrom(compute_pb2.TaskRejected(task_id=msg.task_id, reason=msg.reason[:REASON_CHARS_MAX]))
    elif isinstance(msg, Commitment):
        m.commitment.CopyFrom(compute_pb2.TaskCommitment(task_id=msg.task_id, digest=msg.digest))
    elif isinstance(msg, RevealRequest):
        m.reveal_request.task_id = msg.task_id
    elif isinstance(msg, Result):
        m.result.CopyFrom(compute_pb2.TaskResult(
            task_id=msg.task_id, receipt_tree=msg.receipt_tree, output_inline=msg.output_inline,
            output_cid=msg.output_cid, output_bytes=msg.output_bytes, nonce=msg.nonce, log=clip_log(msg.log),
        ))
    else:
        m.cancel.task_id = msg.task_id
    return m.SerializeToString()


def decode(data: bytes) -> Message:
    """A message from a peer; RemoteProtocolError naming what is wrong."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise RemoteProtocolError(f"compute message of {len(data)} bytes, at most {MESSAGE_BYTES_MAX}")
    try:
        m = compute_pb2.ComputeMessage.FromString(data)
    except DecodeError as exc:
        raise RemoteProtocolError(f"malformed compute message: {exc}") from None
    kind = m.WhichOneof("kind")
    if kind == "offer":
        return _decode_offer(m.offer)
    if kind == "result":
        r = m.result
        _check_id("task_id", r.task_id)
        if len(r.output_inline) > OUTPUT_INLINE_MAX:
            raise RemoteProtocolError(f"inline output of {len(r.output_inline)} bytes, at most {OUTPUT_INLINE_MAX}")
        output_cid = _cid("output_cid", r.output_cid) if r.output_cid else ""
        if len(r.nonce) > 64:
            raise RemoteProtocolError("nonce longer than 64 bytes")
        if len(r.log) > LOG_BYTES_MAX:
            raise RemoteProtocolError(f"log of {len(r.log)} bytes, at most {LOG_BYTES_MAX}")
        return Result(r.task_id, bytes(r.receipt_tree), bytes(r.output_inline), output_cid, r.output_bytes,
                      bytes(r.nonce), bytes(r.log))
    if kind == "commitment":
        _check_id("task_id", m.commitment.task_id)
        if len(m.commitment.digest) != 32:
            raise RemoteProtocolError("commitment digest must be 32 bytes")
        return Commitment(m.commitment.task_id, bytes(m.commitment.digest))
    simple = {"accepted": m.accepted.task_id, "reveal_request": m.reveal_request.task_id, "cancel": m.cancel.task_id,
              "rejected": m.rejected.task_id}
    if kind in simple:
        _check_id("task_id", simple[kind])
        if kind == "accepted":
            return Accepted(m.accepted.task_id)
        if kind == "reveal_request":
            return RevealRequest(m.reveal_request.task_id)
        if kind == "cancel":
            return Cancel(m.cancel.task_id)
        return Rejected(m.rejected.task_id, m.rejected.reason[:REASON_CHARS_MAX])
    raise RemoteProtocolError("compute message of no known kind")


def _check_id(name: str, value: str, allow_empty: bool = False) -> None:
    problem = id_problem(name, value, allow_empty=allow_empty)
    if problem:
        raise RemoteProtocolError(problem)


def _cid(name: str, value: str) -> str:
    try:
        return canonical_cid(value)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{name}: {exc}") from None


def _decode_offer(o: compute_pb2.TaskOffer) -> Offer:
    for name in ("job_id", "task_id", "issuer"):
        _check_id(name, getattr(o, name))
    _check_id("parent_task_id", o.parent_task_id, allow_empty=True)
    if not o.HasField("limits"):
        raise RemoteProtocolError("offer without limits")
    if len(o.path) > PATH_MAX or any(id_problem("path", p) for p in o.path):
        raise RemoteProtocolError(f"offer path of {len(o.path)} peers, at most {PATH_MAX}, each a peer id")
    if not 1 <= o.chunk_count <= 1 << 20:
        raise RemoteProtocolError(f"chunk_count {o.chunk_count} not in 1..2^20")
    if o.depth > DEPTH_MAX or o.depth_max > DEPTH_MAX or o.partition_index >= max(1, o.partition_count):
        raise RemoteProtocolError("offer depth or partition out of range")
    if len(o.input_inline) > INPUT_INLINE_MAX:
        raise RemoteProtocolError(f"inline input of {len(o.input_inline)} bytes, at most {INPUT_INLINE_MAX}")
    if not math.isfinite(o.deadline_s) or o.deadline_s < 0:
        raise RemoteProtocolError("offer deadline is not a time")
    lim = o.limits
    try:
        limits = ReceiptLimits(lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max)
    except Exception as exc:  # LocalProtocolError from the receipt checks: here it is the peer's fault
        raise RemoteProtocolError(f"offer limits: {exc}") from None
    if limits.fuel_max < 1 or limits.wall_time_s <= 0 or limits.memory_bytes_max < 65536:
        raise RemoteProtocolError("offer limits must be positive (memory at least one wasm page)")
    ref = TaskRef(
        job_id=o.job_id, task_id=o.task_id, parent_task_id=o.parent_task_id,
        module_cid=_cid("module_cid", o.module_cid), input_cid=_cid("input_cid", o.input_cid),
        input_bytes=o.input_bytes, chunk_count=o.chunk_count, limits=limits, issuer=o.issuer, depth=o.depth,
        depth_max=o.depth_max, path=tuple(o.path), partition_index=o.partition_index,
        partition_count=max(1, o.partition_count), deadline_s=o.deadline_s or math.inf,
        commit_reveal=o.commit_reveal, fuel_per_chunk_estimate=o.fuel_per_chunk_estimate,
    )
    return Offer(ref, bytes(o.input_inline))


def encode_block_request(cid: str) -> bytes:
    return block_pb2.BlockRequest(cid=cid).SerializeToString()


def decode_block_request(data: bytes) -> str:
    try:
        cid = block_pb2.BlockRequest.FromString(data).cid
    except DecodeError as exc:
        raise RemoteProtocolError(f"malformed block request: {exc}") from None
    return _cid("cid", cid)


def encode_block_response(found: bool, size: int = 0, error: str = "") -> bytes:
    return block_pb2.BlockResponse(found=found, size=size, error=error[:REASON_CHARS_MAX]).SerializeToString()


def decode_block_response(data: bytes, size_max: int) -> tuple[bool, int, str]:
    try:
        r = block_pb2.BlockResponse.FromString(data)
    except DecodeError as exc:
        raise RemoteProtocolError(f"malformed block response: {exc}") from None
    if r.size > size_max:
        raise RemoteProtocolError(f"block of {r.size} bytes announced, at most {size_max}")
    return r.found, r.size, r.error[:REASON_CHARS_MAX]
