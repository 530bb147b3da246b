"""Shared builders for the job-layer tests."""

from __future__ import annotations

import math

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.verify.binding import ReceiptLimits

LIMITS = ReceiptLimits(fuel_max=1_000_000_000, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
MODULE_CID = cid_of(b"module")


def task(
    task_id: str = "j/t0", chunks: int = 1, input_bytes: int = 1000, fuel: int = 1_000_000_000, depth: int = 0,
    depth_max: int = 2, path: tuple[str, ...] = ("submitter",), fuel_estimate: int = 0, memory: int = 64 << 20,
) -> TaskRef:
    limits = ReceiptLimits(fuel, memory, 10.0, 1 << 20)
    return TaskRef(
        job_id="j", task_id=task_id, parent_task_id="", module_cid=MODULE_CID, input_cid=cid_of(task_id.encode()),
        input_bytes=input_bytes, chunk_count=chunks, limits=limits, issuer="submitter", depth=depth,
        depth_max=depth_max, path=path, partition_index=0, partition_count=1, deadline_s=math.inf,
        fuel_per_chunk_estimate=fuel_estimate,
    )


def worker(
    peer_id: str, speed: float = 1e9, free: int = 2, total: int = 2, trust: float = 0.0, rtt_s: float = 0.001,
    outstanding: int = 0, fuel_max: int = 10**12, memory_max: int = 1 << 30, wall_max: float = 300.0,
) -> WorkerView:
    return WorkerView(peer_id, speed, free, total, fuel_max, memory_max, wall_max, trust, rtt_s, outstanding)
