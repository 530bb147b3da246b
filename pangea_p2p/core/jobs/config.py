"""A coordinator's settings, its timing constants, and how it sees the candidate workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.verify.config import VerifyConfig, check_range

BACKOFF_S_MIN = 0.2
BACKOFF_S_MAX = 30.0
ATTEMPT_GRACE_S = 10.0  # an attempt's deadline: its work and transfers, plus this, plus the offer's (placement.py)
TRANSFER_BYTES_PER_S_MIN = 1e6  # an attempt's deadline allows its transfers at this rate
OFFER_TIMEOUT_S = 10.0
LOCAL_FALLBACK_AFTER_S = 2.0  # a task that only waits for busy workers runs here after this long
BUSY_COOLDOWN_S = 2.0  # a worker that declined as full gets no offer from this peer for this long (or until it answers)
RELOOK_S = 1.0  # while tasks wait in the queue, the workers are looked at again this often (slots free up elsewhere)
FUEL_ABSOLUTE_MAX = 10**15  # escalation never raises a limit above these
MEMORY_BYTES_ABSOLUTE_MAX = 4 << 30


@dataclass
class WorkerSource:
    """How a coordinator sees candidate workers: the driver's capacity directory, trust and RTTs (``views``),
    and this peer itself (``local``: None when it may not run the task)."""

    views: Callable[[float], list[scheduler.WorkerView]]
    local: Callable[[float], scheduler.WorkerView | None]


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    scheduler: scheduler.SchedulerConfig = field(default_factory=scheduler.SchedulerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    timeout_factor: float = 3.0  # an attempt may take this many times its expected duration, plus the grace
    unreachable_cooldown_s: float = 20.0  # a worker that could not be reached gets no task for this long

    def __post_init__(self) -> None:
        check_range("timeout_factor", self.timeout_factor, 1.0, 1000.0)
        check_range("unreachable_cooldown_s", self.unreachable_cooldown_s, 0.0, 86400.0)
