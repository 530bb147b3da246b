"""The task binding: what an issuer asked a worker to do, which every receipt for the task repeats.

A *task binding* is job id, task id, parent task id (empty for a task the submitter issued itself), module
and input content ids, the four limits the task runs under (``ReceiptLimits``), the number of input chunks
(``chunk_count``; a task runs its module once per chunk and outputs one chunk per input chunk, see
pangea_p2p.core.chunks) and the issuer's peer id. A verifier compares the binding a receipt carries with the
one it issued (checks.py). Content ids are held as their 32-byte sha2-256 digests, the form they take on the
wire (the ``*_cid`` properties give the ``bafkrei...`` strings), so encoding and decoding never touch base32.

Every field is validated when a binding is built (LocalProtocolError), so a binding that exists can be
encoded. A receipt ends with the binding's ids and its signer's (``encode_ids``), and those five ids, hashed
under ``REPLAY_TAG``, are the receipt's *replay key* (``replay_key_of``): one accepted receipt per task and
signer, whatever nonce, date or outcome it carries (replay.py, protocols/receipt.md §6).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from pangea_p2p.core.chunks import CHUNKS_MAX
from pangea_p2p.core.cid import DIGEST_BYTES, cid_from_digest, parse_cid
from pangea_p2p.core.verify.format import REPLAY_TAG, id_problem, raise_if, time_problem, u64_problem
from pangea_p2p.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class ReceiptLimits:
    """The limits a task ran under; the field names are the sandbox's SandboxLimits field names."""

    fuel_max: int
    memory_bytes_max: int
    wall_time_s: float
    output_bytes_max: int

    def __post_init__(self) -> None:
        for name in ("fuel_max", "memory_bytes_max", "output_bytes_max"):
            raise_if(u64_problem(f"limits.{name}", getattr(self, name)))
        raise_if(time_problem("limits.wall_time_s", self.wall_time_s))
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
        raise_if(
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


def encode_ids(b: TaskBinding, signer: str) -> bytes:
    """The ids that end a receipt, each as ``format.encode_id`` writes one: job, task, parent task, ``signer``,
    issuer. (Inlined here: this runs for every receipt signed and verified.)"""
    parts = []
    for value in (b.job_id, b.task_id, b.parent_task_id, signer, b.issuer):
        raw = value.encode("ascii")
        parts.append(len(raw).to_bytes(1, "big"))
        parts.append(raw)
    return b"".join(parts)


def replay_key_of(binding: TaskBinding, signer: str) -> bytes:
    """SHA-256 over the tag, then job, task, parent task, signer and issuer ids as encoded in a receipt."""
    return hashlib.sha256(REPLAY_TAG + encode_ids(binding, signer)).digest()
