"""Shared builders for the verification tests: deterministic identities, bindings, outputs and receipts."""

from __future__ import annotations

import random

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import Receipt

NOW = 1_750_000_000.0
CONFIG = VerifyConfig()
LIMITS = ReceiptLimits(fuel_max=10_000_000_000, memory_bytes_max=100 * 1024 * 1024, wall_time_s=30.0,
                       output_bytes_max=1 << 20)
MODULE = b"\x00asm\x01\x00\x00\x00 pretend module"
CHUNKS = 2  # input (and output) chunks of a task, unless a test says otherwise


def identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


SUBMITTER = identity(1)
WORKER = identity(2)
OTHER = identity(3)


def framed_input(task_id: str, chunk_count: int) -> bytes:
    return frame_chunks([f"input {i} of {task_id}".encode() for i in range(chunk_count)])


def output_chunks(b: TaskBinding, tag: str = "") -> list[bytes]:
    """The chunks an honest worker outputs for ``b``: one per input chunk."""
    return [f"output {i} of {b.task_id}{tag}".encode() for i in range(b.chunk_count)]


def framed_output(b: TaskBinding, tag: str = "") -> bytes:
    return frame_chunks(output_chunks(b, tag))


def binding(
    task_id: str = "t0",
    *,
    issuer: Identity = SUBMITTER,
    job_id: str = "job-1",
    parent_task_id: str = "",
    input_bytes: bytes | None = None,
    limits: ReceiptLimits = LIMITS,
    chunk_count: int = CHUNKS,
) -> TaskBinding:
    return TaskBinding.of(
        job_id=job_id, task_id=task_id, parent_task_id=parent_task_id, module_cid=cid_of(MODULE),
        input_cid=cid_of(input_bytes if input_bytes is not None else framed_input(task_id, chunk_count)),
        limits=limits, issuer=issuer.peer_id, chunk_count=chunk_count,
    )


def receipt(
    b: TaskBinding | None = None,
    *,
    worker: Identity = WORKER,
    output: bytes | None = None,
    fuel_used: int = 12_345,
    now: float = NOW,
    seed: int = 0,
) -> Receipt:
    """An execution receipt over the framed ``output`` (by default the honest output of the binding)."""
    b = b or binding()
    return issue_receipt(
        worker, b, output=framed_output(b) if output is None else output, fuel_used=fuel_used, now=now,
        rng=random.Random(seed),
    )
