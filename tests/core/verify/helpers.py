"""Shared builders for the verification tests: deterministic identities, bindings and receipts."""

from __future__ import annotations

import random

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import Receipt, ReceiptLimits, TaskBinding, issue_receipt

NOW = 1_750_000_000.0
CONFIG = VerifyConfig()
LIMITS = ReceiptLimits(fuel_max=10_000_000_000, memory_bytes_max=100 * 1024 * 1024, wall_time_s=30.0,
                       output_bytes_max=1 << 20)
MODULE = b"\x00asm\x01\x00\x00\x00 pretend module"


def identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


SUBMITTER = identity(1)
WORKER = identity(2)
OTHER = identity(3)


def binding(
    task_id: str = "t0",
    *,
    issuer: Identity = SUBMITTER,
    job_id: str = "job-1",
    parent_task_id: str = "",
    input_bytes: bytes | None = None,
    limits: ReceiptLimits = LIMITS,
) -> TaskBinding:
    return TaskBinding.of(
        job_id=job_id, task_id=task_id, parent_task_id=parent_task_id, module_cid=cid_of(MODULE),
        input_cid=cid_of(input_bytes if input_bytes is not None else f"input of {task_id}".encode()),
        limits=limits, issuer=issuer.peer_id,
    )


def receipt(
    b: TaskBinding | None = None,
    *,
    worker: Identity = WORKER,
    output: bytes = b"the output",
    fuel_used: int = 12_345,
    now: float = NOW,
    seed: int = 0,
) -> Receipt:
    return issue_receipt(
        worker, b or binding(), output_cid=cid_of(output), fuel_used=fuel_used, now=now, rng=random.Random(seed)
    )
