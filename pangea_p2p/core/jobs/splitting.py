"""Splitting: a worker that finds a task too big cuts it into parts, issues them itself, and answers for the
whole with a delegation receipt over the parts' receipts.

``split_task`` cuts a task into consecutive parts (sub-task ids ``<task>.<k>``, depth + 1, this peer appended
to the path, the fuel budget shared by chunk count); ``split_coordinator`` makes the coordinator of the parts
(hash-verified, never run here, no escalation); ``delegation`` merges the parts' outputs, in order, and signs
the delegation receipt over them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.config import CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.coordinator import Coordinator
from pangea_p2p.core.jobs.model import TaskRef, VerificationPolicy
from pangea_p2p.core.jobs.outputs import merge_outputs
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.tasks import TaskView
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import PangeaError

if TYPE_CHECKING:
    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.trust import TrustBook

SPLIT_RETRIES_MAX = 3  # a part that failed this often fails the split (the issuer then retries the whole task)
SPLIT_QUEUE_TIMEOUT_S = 30.0  # a part nobody can take fails the split after this long
SPLIT_RETURN_S = 5.0  # a split's parts must be done this long before the deadline its issuer gave it


def split_task(ref: TaskRef, framed_input: bytes, parts: int, self_id: str) -> list[tuple[TaskRef, bytes]]:
    """Cut ``ref`` into ``parts`` consecutive parts; each part is a task this peer issues (sub-task ids
    ``<task>.<k>``, parent = ``ref``, depth + 1, this peer appended to the path, fuel budget shared by chunk
    count so the parts never exceed the parent's, a deadline SPLIT_RETURN_S before the one this peer was given,
    so that a part stuck on a frozen peer fails the split in time for the issuer). Returns each part with its
    framed input."""
    chunks = unframe_chunks(framed_input)
    sizes = scheduler.split_sizes(len(chunks), parts)
    out: list[tuple[TaskRef, bytes]] = []
    start = 0
    for k, size in enumerate(sizes):
        part_input = frame_chunks(chunks[start : start + size])
        fuel = max(1, ref.limits.fuel_max * size // len(chunks))
        out.append((
            replace(
                ref, task_id=f"{ref.task_id}.{k}", parent_task_id=ref.task_id, input_cid=cid_of(part_input),
                input_bytes=len(part_input), chunk_count=size, limits=replace(ref.limits, fuel_max=fuel),
                issuer=self_id, depth=ref.depth + 1, path=(*ref.path, self_id), partition_index=k,
                deadline_s=ref.deadline_s - SPLIT_RETURN_S,
                partition_count=len(sizes),
            ),
            part_input,
        ))
        start += size
    return out


def split_coordinator(
    self_id: str, parts: list[TaskRef], *, trust: TrustBook, guard: ReplayGuard, source: WorkerSource,
    rng: random.Random, now: float, inflight: dict[str, int], reachability: Reachability,
    config: CoordinatorConfig | None = None,
) -> Coordinator:
    """The coordinator of a split task's parts: hash-verified (this peer signs for the whole), never run here
    (its delegation receipt must not sit above a leaf it signed), no escalation (the issuer escalates)."""
    return Coordinator(
        self_id, parts, VerificationPolicy(), retries_max=SPLIT_RETRIES_MAX, escalations_max=0,
        escalation_factor=2.0, queue_timeout_s=SPLIT_QUEUE_TIMEOUT_S, trust=trust, guard=guard, source=source,
        rng=rng, now=now, config=config, inflight=inflight, reachability=reachability, local_allowed=False,
    )


def delegation(
    identity: Identity, ref: TaskRef, parts: Sequence[TaskView], outputs: Sequence[bytes | None],
    config: VerifyConfig, *, now: float, rng: random.Random,
) -> tuple[bytes, bytes]:
    """(encoded receipt tree, merged framed output) of a split task whose parts are all done; ``outputs`` are
    the parts' framed outputs in part order (None: gone from the store). PangeaError if one is missing."""
    missing = [p.task_id for p, out in zip(parts, outputs, strict=True) if out is None]
    if missing:
        raise PangeaError(f"the outputs of parts {missing} are gone")
    merged = merge_outputs([out for out in outputs if out is not None])
    children = [ReceiptTree.decode(p.tree, config) for p in parts]
    return delegate(identity, ref.binding(), children, now=now, rng=rng).encode(), merged
