"""The worker side: whether to take a task offered by another peer, and how to cut one into parts.

Theory of operation
-------------------
``WorkerService.admit(offer, sender, now)`` answers an offer with one of:
  - REJECT(reason): the offer breaks a rule (a cycle: this peer is already on the task's path; too deep;
    limits above this peer's maxima; input too large; the sender is not the issuer the offer names) or this
    peer is full (every slot busy and the bounded queue full). A rejection is not a fault: the sender tries
    elsewhere.
  - RUN: run it in the local sandbox (the usual case);
  - SPLIT(parts): the task is bigger than ``split_above_s`` here, has several chunks, may be split again
    (depth < depth_max), and this peer knows at least two other workers that fit: cut it into parts,
    delegate them with a Coordinator of its own, merge the outputs and sign a delegation receipt.
The service counts what it has admitted (``running`` + ``splitting``) and frees a slot on ``release``.
Invariants: admitted (running, queued and splitting) <= slots + queue_max; a task id is admitted at most once
while it is out.

The node's driver and the simulator share the rest of the worker side from here: ``split_task`` cuts a task,
``split_coordinator`` makes the coordinator of its parts, ``delegation`` merges the parts' outputs and signs
the delegation receipt over them, and ``commit_claim`` is what a worker commits to under commit-then-reveal.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.config import CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.coordinator import Coordinator
from pangea_p2p.core.jobs.model import TaskRef, VerificationPolicy
from pangea_p2p.core.jobs.outputs import merge_outputs
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.receipts import AnyReceipt, Receipt, ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.voting import Claim
from pangea_p2p.errors import ConfigError, PangeaError

if TYPE_CHECKING:
    from pangea_p2p.core.identity import Identity
    from pangea_p2p.core.trust import TrustBook

SPLIT_RETRIES_MAX = 3  # a part that failed this often fails the split (the issuer then retries the whole task)
SPLIT_QUEUE_TIMEOUT_S = 30.0  # a part nobody can take fails the split after this long


class Verdict(enum.StrEnum):
    RUN = "run"
    SPLIT = "split"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    reason: str = ""
    parts: int = 0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    slots: int = 2
    queue_max: int = 8  # admitted tasks waiting for a slot, beyond the running ones
    limits_max: ReceiptLimits = field(default_factory=lambda: ReceiptLimits(10**10, 100 << 20, 30.0, 16 << 20))
    input_bytes_max: int = 256 << 20
    depth_max: int = 8  # accept tasks at most this deep, whatever the task itself allows
    speed_fuel_per_s: float = 1e9

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 4096:
            raise ConfigError("compute.slots", f"must be in 1..4096, got {self.slots}")
        if not 0 <= self.queue_max <= 65536:
            raise ConfigError("compute.queue_max", f"must be in 0..65536, got {self.queue_max}")
        if not 1024 <= self.input_bytes_max <= 4 << 30:
            raise ConfigError("compute.input_bytes_max", f"must be in 1 KiB..4 GiB, got {self.input_bytes_max}")


class WorkerService:
    """Admission control for offered tasks (see the module docstring)."""

    def __init__(self, self_id: str, config: WorkerConfig, sched: scheduler.SchedulerConfig | None = None) -> None:
        self.self_id = self_id
        self.config = config
        self.sched = sched or scheduler.SchedulerConfig()
        self.admitted: dict[str, Verdict] = {}

    @property
    def running(self) -> int:
        return sum(1 for v in self.admitted.values() if v is Verdict.RUN)

    def free_slots(self) -> int:
        return max(0, self.config.slots - self.running)

    def admit(self, offer: TaskRef, sender: str, neighbours: list[scheduler.WorkerView], now: float) -> Admission:
        """Decide on ``offer`` from ``sender``; ``neighbours`` are the workers this peer could delegate to."""
        problem = self._problem(offer, sender)
        if problem:
            return Admission(Verdict.REJECT, problem)
        if len(self.admitted) >= self.config.slots + self.config.queue_max:  # running, queued and splitting
            return Admission(Verdict.REJECT, f"busy: {len(self.admitted)} tasks admitted, {self.config.slots} slots")
        fuel = scheduler.fuel_estimate(offer, None)
        me = self.local_view()
        others = [w for w in neighbours if w.peer_id not in offer.path and w.peer_id != self.self_id]
        placement = scheduler.place(scheduler.PlaceRequest(offer, fuel, others, me, may_split=True), self.sched)
        if placement.kind == "split":
            self.admitted[offer.task_id] = Verdict.SPLIT
            return Admission(Verdict.SPLIT, placement.reason, placement.parts)
        self.admitted[offer.task_id] = Verdict.RUN
        return Admission(Verdict.RUN, "runs here")

    def release(self, task_id: str) -> None:
        """The admitted task ``task_id`` finished, failed or was cancelled."""
        self.admitted.pop(task_id, None)

    def local_view(self) -> scheduler.WorkerView:
        lim = self.config.limits_max
        return scheduler.WorkerView(
            self.self_id, self.config.speed_fuel_per_s, self.config.slots + self.config.queue_max,
            self.config.slots, lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, trust=0.0, rtt_s=0.0,
            outstanding=self.running,
        )

    def _problem(self, offer: TaskRef, sender: str) -> str:
        cfg, lim, asked = self.config, self.config.limits_max, offer.limits
        if offer.task_id in self.admitted:
            return f"task {offer.task_id} is already running here"
        if self.self_id in offer.path:
            return "this peer is already on the task's delegation path (cycle)"
        if offer.depth > min(offer.depth_max, cfg.depth_max):
            return f"depth {offer.depth} above the allowed {min(offer.depth_max, cfg.depth_max)}"
        if offer.issuer != sender:
            return f"offer names issuer {offer.issuer} but came from {sender}"
        if offer.input_bytes > cfg.input_bytes_max:
            return f"input of {offer.input_bytes} bytes above this peer's {cfg.input_bytes_max}"
        for name in ("fuel_max", "memory_bytes_max", "wall_time_s", "output_bytes_max"):
            if getattr(asked, name) > getattr(lim, name):
                return f"{name} {getattr(asked, name)} above this peer's maximum {getattr(lim, name)}"
        return ""


def split_task(ref: TaskRef, framed_input: bytes, parts: int, self_id: str) -> list[tuple[TaskRef, bytes]]:
    """Cut ``ref`` into ``parts`` consecutive parts; each part is a task this peer issues (sub-task ids
    ``<task>.<k>``, parent = ``ref``, depth + 1, this peer appended to the path, fuel budget shared by chunk
    count so the parts never exceed the parent's). Returns each part with its framed input."""
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
    identity: Identity, ref: TaskRef, parts: Coordinator, outputs: Sequence[bytes | None], config: VerifyConfig,
    *, now: float, rng: random.Random,
) -> tuple[bytes, bytes]:
    """(encoded receipt tree, merged framed output) of a split task whose parts are all done; ``outputs`` are
    the parts' framed outputs in part order (None: gone from the store). PangeaError if one is missing."""
    entries = list(parts.tasks.values())  # in part order: the coordinator keeps the order it was given
    missing = [e.ref.task_id for e, out in zip(entries, outputs, strict=True) if out is None]
    if missing:
        raise PangeaError(f"the outputs of parts {missing} are gone")
    merged = merge_outputs([out for out in outputs if out is not None])
    children = [ReceiptTree.decode(e.tree, config) for e in entries]
    return delegate(identity, ref.binding(), children, now=now, rng=rng).encode(), merged


def commit_claim(root: AnyReceipt, output: bytes) -> Claim | None:
    """What a worker commits to for its answer: an execution receipt's claim, or for a delegation the merged
    output's digest and the fuel of the whole tree; None for a failure that is no vote."""
    if isinstance(root, Receipt):
        return Claim.from_receipt(root)
    return Claim(hashlib.sha256(output).digest(), root.fuel_used)
