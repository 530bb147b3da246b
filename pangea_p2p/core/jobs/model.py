"""The job model: what a submitter asks for, how it is cut into tasks, and the states a task goes through.

A *job* runs one WebAssembly module (named by its CID) over a list of input chunks (each a content-addressed
byte string) and produces one output chunk per input chunk, in order. It is cut into *tasks*: runs of
consecutive chunks (``chunks_per_task`` of them, the last task may be shorter). A task is the unit that is
placed on a worker, verified, retried; a worker that finds a task too big for it may cut it again into
sub-tasks and delegate those (hierarchical delegation), returning a receipt tree.

Ids are ASCII without spaces (they go into signed receipts): a task of job ``J`` is ``J/t<i>``; sub-task ``k``
of task ``T`` is ``T.<k>``. Every task carries its partition index and count (``PARTITION_INDEX`` /
``PARTITION_COUNT`` in Bacalhau's words): its position among its siblings.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from pangea_p2p.core.verify.receipts import ReceiptLimits, TaskBinding
from pangea_p2p.errors import ConfigError

JOB_ID_CHARS_MAX = 64
TASKS_PER_JOB_MAX = 1 << 16
CHUNKS_PER_JOB_MAX = 1 << 20
RETRIES_MAX = 16
DEPTH_MAX = 8


class VerificationMode(enum.StrEnum):
    """How a task's result is checked before it is accepted."""

    HASH = "hash"  # one worker; its signed receipt and the output's content id and Merkle root
    SPOT = "spot"  # one worker, plus k of its output chunks re-executed locally and compared
    REPLICAS = "replicas"  # n distinct workers, a quorum must agree on (output, fuel); commit-then-reveal
    ADAPTIVE = "adaptive"  # replicas or spot checks per task, from the worker's trust record


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    mode: VerificationMode = VerificationMode.HASH
    spot_checks: int = 1
    replicas: int = 3
    commit_reveal: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.spot_checks <= 64:
            raise ConfigError("verification.spot_checks", f"must be in 0..64, got {self.spot_checks}")
        if not 1 <= self.replicas <= 9:
            raise ConfigError("verification.replicas", f"must be in 1..9, got {self.replicas}")

    @classmethod
    def parse(cls, text: str) -> VerificationPolicy:
        """``hash``, ``spot:K``, ``replicas:N`` or ``adaptive`` (the CLI and API spelling)."""
        name, _, arg = text.strip().partition(":")
        try:
            mode = VerificationMode(name)
        except ValueError:
            raise ConfigError("verification", f"{text!r}: use hash, spot:K, replicas:N or adaptive") from None
        if mode is VerificationMode.SPOT:
            return cls(mode, spot_checks=_int_arg(text, arg, 1))
        if mode is VerificationMode.REPLICAS:
            return cls(mode, replicas=_int_arg(text, arg, 3))
        if arg:
            raise ConfigError("verification", f"{text!r}: {name} takes no argument")
        return cls(mode)

    def __str__(self) -> str:
        if self.mode is VerificationMode.SPOT:
            return f"spot:{self.spot_checks}"
        if self.mode is VerificationMode.REPLICAS:
            return f"replicas:{self.replicas}"
        return str(self.mode)


def _int_arg(text: str, arg: str, default: int) -> int:
    if not arg:
        return default
    try:
        return int(arg)
    except ValueError:
        raise ConfigError("verification", f"{text!r}: {arg!r} is not a number") from None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything the network needs to run a job. Built by the SDK/API, validated here."""

    job_id: str
    module_cid: str
    chunk_cids: tuple[str, ...]
    chunk_sizes: tuple[int, ...]
    limits: ReceiptLimits  # per task: fuel is the task's budget over all its chunks
    chunks_per_task: int = 1
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)
    deadline_s: float = math.inf  # absolute (unix seconds) by which the job must be done
    retries_max: int = 3
    escalations_max: int = 2  # times fuel/memory may be raised after OUT_OF_FUEL / MEMORY_LIMIT_EXCEEDED
    escalation_factor: float = 4.0
    depth_max: int = 2  # how many times a task may be split again below the submitter
    queue_timeout_s: float = 60.0  # how long a task may wait for a worker that fits
    fuel_per_chunk_estimate: int = 0  # 0: unknown (learned from completed tasks; until then fuel_max)

    def __post_init__(self) -> None:
        if not self.job_id or len(self.job_id) > JOB_ID_CHARS_MAX or not self.job_id.isascii() or any(
            c in self.job_id for c in " /."
        ):
            raise ConfigError("job_id", f"{self.job_id[:80]!r} must be 1..64 ASCII characters without ' ', '/', '.'")
        if not 1 <= len(self.chunk_cids) <= CHUNKS_PER_JOB_MAX or len(self.chunk_sizes) != len(self.chunk_cids):
            raise ConfigError("chunks", f"need 1..{CHUNKS_PER_JOB_MAX} chunks with a size each")
        if not 1 <= self.chunks_per_task <= len(self.chunk_cids):
            raise ConfigError("chunks_per_task", f"must be in 1..{len(self.chunk_cids)}, got {self.chunks_per_task}")
        if self.task_count > TASKS_PER_JOB_MAX:
            raise ConfigError("chunks_per_task", f"{self.task_count} tasks, at most {TASKS_PER_JOB_MAX}")
        if not 0 <= self.retries_max <= RETRIES_MAX:
            raise ConfigError("retries_max", f"must be in 0..{RETRIES_MAX}, got {self.retries_max}")
        if not 0 <= self.escalations_max <= 8 or not 1.0 < self.escalation_factor <= 64.0:
            raise ConfigError("escalation", "escalations_max in 0..8 and escalation_factor in (1, 64]")
        if not 0 <= self.depth_max <= DEPTH_MAX:
            raise ConfigError("depth_max", f"must be in 0..{DEPTH_MAX}, got {self.depth_max}")
        if not 0 < self.queue_timeout_s <= 86400:
            raise ConfigError("queue_timeout_s", f"must be in (0, 86400], got {self.queue_timeout_s}")

    @property
    def task_count(self) -> int:
        return -(-len(self.chunk_cids) // self.chunks_per_task)

    def task_ids(self) -> list[str]:
        return [f"{self.job_id}/t{i}" for i in range(self.task_count)]

    def task_chunks(self, index: int) -> range:
        """The chunk indexes of task ``index``."""
        start = index * self.chunks_per_task
        return range(start, min(start + self.chunks_per_task, len(self.chunk_cids)))


class TaskState(enum.StrEnum):
    """Where a task is. PENDING and RUNNING may alternate (retries); the last three are final."""

    PENDING = "pending"  # waiting for a worker that fits (queued), or for its retry backoff
    RUNNING = "running"  # at least one attempt is out (offered, running, committed, being spot-checked)
    VERIFYING = "verifying"  # a result is in, checks (spot checks, more replicas) are under way
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


class JobState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not JobState.RUNNING


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task as it travels: what a worker needs besides the bytes (which it fetches by content id)."""

    job_id: str
    task_id: str
    parent_task_id: str
    module_cid: str
    input_cid: str  # of the framed chunk list
    input_bytes: int
    chunk_count: int
    limits: ReceiptLimits
    issuer: str
    depth: int  # 0 for a task the submitter issued; +1 per delegation
    depth_max: int
    path: tuple[str, ...]  # peers the task went through, submitter first: a peer on it must not take it again
    partition_index: int
    partition_count: int
    deadline_s: float
    commit_reveal: bool = False
    fuel_per_chunk_estimate: int = 0

    def binding(self, limits: ReceiptLimits | None = None, issuer: str | None = None) -> TaskBinding:
        """What a receipt for this task must be bound to (``limits``: when they were raised since; ``issuer``:
        the peer that hands it out, if not ``self.issuer``)."""
        return TaskBinding.of(
            job_id=self.job_id, task_id=self.task_id, parent_task_id=self.parent_task_id, module_cid=self.module_cid,
            input_cid=self.input_cid, limits=self.limits if limits is None else limits,
            issuer=self.issuer if issuer is None else issuer, chunk_count=self.chunk_count,
        )
