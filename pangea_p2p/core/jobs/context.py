"""What a peer's compute behaviour works with: its context (identity, block store, candidate workers, rng,
shared state) and its configuration."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.scheduler import SchedulerConfig, WorkerView
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.fraud import FraudConfig
from pangea_p2p.core.verify.replay import ReplayGuard


class BlockSource(Protocol):
    """The peer's content-addressed block store, as the behaviour sees it (synchronous: the node's keeps recent
    blocks in memory and writes to disk in the background)."""

    def get(self, cid: str) -> bytes | None: ...

    def has(self, cid: str) -> bool: ...

    def put(self, data: bytes, *, persist: bool = False, cid: str | None = None) -> str: ...


Forge = Callable[[TaskRef, bytes, bytes], tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    """How this peer serves and issues tasks."""

    worker: AdmissionConfig = field(default_factory=AdmissionConfig)  # admission: slots, queue, limits it accepts
    split: SchedulerConfig = field(default_factory=SchedulerConfig)  # when a served task is split, and how
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)  # the jobs and splits it issues
    accept_delay_s: float = 0.5  # a task answered sooner than this needs no TaskAccepted
    reveal_wait_s_max: float = 600.0  # a committed result waits at most this long for its reveal request
    fraud: FraudConfig = field(default_factory=FraudConfig)  # the fraud proofs it takes in and re-runs


@dataclass
class ComputeContext:
    """What a behaviour works with: its identity and config, the block store, the candidate workers (the
    driver's capacity directory: ``views(now)``, built with the behaviour's trust book and ``inflight``), an
    rng, and the state it shares with the rest of the peer (trust, replay guard, reachability). ``forge``:
    tests and the simulator only, a filter over every signed answer (tree, output) before it goes out."""

    identity: Identity
    blocks: BlockSource
    views: Callable[[float], list[WorkerView]]
    rng: random.Random
    config: BehaviourConfig = field(default_factory=BehaviourConfig)
    trust: TrustBook = field(default_factory=TrustBook)
    guard: ReplayGuard | None = None
    reachability: Reachability = field(default_factory=Reachability)
    forge: Forge | None = None
