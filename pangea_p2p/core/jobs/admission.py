"""Admission control: whether this peer takes a task another peer offers it, and runs or splits it.

Theory of operation
-------------------
``AdmissionControl.admit(offer, sender, neighbours, now)`` answers an offer with one of:
  - REJECT(reason): the offer breaks a rule (a cycle: this peer is already on the task's path; too deep;
    limits above this peer's maxima; input too large; the sender is not the issuer the offer names) or this
    peer is full (every slot busy and the bounded queue full). A rejection is not a fault: the sender tries
    elsewhere.
  - RUN: run it in the local sandbox (the usual case);
  - SPLIT(parts): the task is bigger than ``split_above_s`` here, has several chunks, may be split again
    (depth < depth_max), and this peer knows at least two other workers that fit: cut it into parts and issue
    them itself (splitting.py).
It counts what it has admitted (running, queued and splitting) and frees a slot on ``release``.
An issuer whose offers named blocks it did not serve (``strike``: the input or module could not be fetched in
time) gets its next offers refused once STRIKES_MAX distinct blocks of its failed within STRIKE_WINDOW_S (one
block that several offers named — a module every task shares — is one strike, however many offers it failed).
Invariants: admitted <= slots + queue_max; a task id is admitted at most once while it is out; at most
STRIKE_PEERS_MAX issuers' strikes are kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.errors import ConfigError

BUSY = "busy"  # a rejection's reason starts with this when the peer is full (the issuer waits, it is no fault)


STRIKES_MAX = 3
STRIKE_WINDOW_S = 300.0
STRIKE_PEERS_MAX = 4096


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
class AdmissionConfig:
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


class AdmissionControl:
    """Admission control for offered tasks (see the module docstring)."""

    def __init__(self, self_id: str, config: AdmissionConfig, sched: scheduler.SchedulerConfig | None = None) -> None:
        self.self_id = self_id
        self.config = config
        self.sched = sched or scheduler.SchedulerConfig()
        self.admitted: dict[str, Verdict] = {}
        # issuer -> the blocks of its offers that could not be fetched: cid -> when (the latest)
        self.strikes: dict[str, dict[str, float]] = {}

    @property
    def running(self) -> int:
        return sum(1 for v in self.admitted.values() if v is Verdict.RUN)

    def free_slots(self) -> int:
        return max(0, self.config.slots - self.running)

    def admit(self, offer: TaskRef, sender: str, neighbours: list[scheduler.WorkerView], now: float) -> Admission:
        """Decide on ``offer`` from ``sender``; ``neighbours`` are the workers this peer could delegate to."""
        problem = self._problem(offer, sender) or self._struck(sender, now)
        if problem:
            return Admission(Verdict.REJECT, problem)
        if len(self.admitted) >= self.config.slots + self.config.queue_max:  # running, queued and splitting
            return Admission(Verdict.REJECT, f"{BUSY}: {len(self.admitted)} tasks admitted, {self.config.slots} slots")
        fuel = scheduler.fuel_estimate(offer, None)
        me = self.local_view()
        others = [w for w in neighbours if w.peer_id not in offer.path and w.peer_id != self.self_id]
        placement = scheduler.place(scheduler.PlaceRequest(offer, fuel, others, me, may_split=True), self.sched)
        if placement.kind == "split":
            self.admitted[offer.task_id] = Verdict.SPLIT
            return Admission(Verdict.SPLIT, placement.reason, placement.parts)
        self.admitted[offer.task_id] = Verdict.RUN
        return Admission(Verdict.RUN, "runs here")

    def strike(self, issuer: str, cid: str, now: float) -> None:
        """An offer of ``issuer`` named block ``cid`` (an input or module) that it did not serve in time."""
        recent = {c: t for c, t in self.strikes.pop(issuer, {}).items() if t > now - STRIKE_WINDOW_S and c != cid}
        recent[cid] = now
        self.strikes[issuer] = dict(list(recent.items())[-STRIKES_MAX:])  # dict order: the least recent first
        while len(self.strikes) > STRIKE_PEERS_MAX:
            del self.strikes[next(iter(self.strikes))]

    def _struck(self, issuer: str, now: float) -> str:
        n = sum(1 for t in self.strikes.get(issuer, {}).values() if t > now - STRIKE_WINDOW_S)
        if n < STRIKES_MAX:
            return ""
        return f"refused: {n} blocks your offers named were not served in the last {STRIKE_WINDOW_S:g} s"

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
