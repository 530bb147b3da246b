"""The job model: what a submitter asks for, how it is cut into tasks, and the states a task goes through.

A *job* runs one WebAssembly module (named by its CID) over a list of input chunks (each a content-addressed
byte string) and produces one output chunk per input chunk, in order. It is cut into *tasks*: runs of
consecutive chunks (``chunks_per_task`` of them, the last task may be shorter). A task is the unit that is
placed on a worker, verified, retried; a worker that finds a task too big for it may cut it again into
sub-tasks and delegate those (hierarchical delegation), returning a receipt tree.

A job id is 1..64 letters, digits, ``-`` and ``_`` (``check_job_id``; ids go into signed receipts): a task of
job ``J`` is ``J/t<i>``; sub-task ``k`` of task ``T`` is ``T.<k>``. Every task carries its partition index and
count (``PARTITION_INDEX`` / ``PARTITION_COUNT`` in Bacalhau's words): its position among its siblings.
"""

from __future__ import annotations

import enum
import math
import numbers
import re
from dataclasses import dataclass, field, replace

from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.errors import ConfigError

JOB_ID_CHARS_MAX = 64
_JOB_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{JOB_ID_CHARS_MAX}}}")
TASKS_PER_JOB_MAX = 1 << 16
CHUNKS_PER_JOB_MAX = 1 << 20
RETRIES_MAX = 16
ESCALATIONS_MAX = 8
DEPTH_MAX = 8
QUEUE_TIMEOUT_S_MAX = 86_400.0
U64_MAX = (1 << 64) - 1
# What a task may ask for at most: the bounds every sandbox has (pangea_p2p/sandbox/config.py, which core cannot
# import); a job asking for more could run nowhere.
FUEL_ABSOLUTE_MAX = 10**15
MEMORY_BYTES_ABSOLUTE_MAX = 4 << 30
MEMORY_BYTES_MIN = 64 << 10  # one WebAssembly page
WALL_TIME_S_ABSOLUTE_MAX = 86_400.0
WALL_TIME_S_MIN = 0.001
OUTPUT_BYTES_ABSOLUTE_MAX = 1 << 30


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


def as_int(key: str, value: object, low: int, high: int) -> int:
    """``value`` as a plain int (numpy integers too: it may go into JSON); ConfigError(key) naming the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(key, f"must be an integer in {low}..{high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ConfigError(key, f"must be in {low}..{high}, got {number}")
    return number


def as_number(key: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float in ``low..high`` (``(low, high]`` when ``low_open``); ConfigError(key) naming the range."""
    allowed = f"({low:g}, {high:g}]" if low_open else f"{low:g}..{high:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(key, f"must be a number in {allowed}, got {value!r}")
    seconds = float(value)
    if not (low < seconds if low_open else low <= seconds) or not seconds <= high:  # NaN fails both
        raise ConfigError(key, f"must be in {allowed}, got {seconds:g}")
    return seconds


def check_job_id(job_id: object) -> str:
    """``job_id`` if it can name a job, else ConfigError("job_id"). An id goes into task ids (``J/t0``, ``J/t0.1``),
    signed receipts, logs and URL paths (``/v1/jobs/J``), so it is 1..64 letters, digits, ``-`` and ``_``: no NUL,
    newline, ``?``, ``/``, ``.``, ``%`` or space can reach any of them."""
    if not isinstance(job_id, str):
        raise ConfigError("job_id", f"must be a string, got {job_id!r}")
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError("job_id", f"{job_id[:80]!r} must be 1..{JOB_ID_CHARS_MAX} characters of A-Z a-z 0-9 - _")
    return job_id


def check_chunking(chunk_count: int, chunks_per_task: int) -> None:
    """ConfigError unless a job of ``chunk_count`` chunks, ``chunks_per_task`` a task, has 1..TASKS_PER_JOB_MAX
    tasks of 1..CHUNKS_PER_JOB_MAX chunks in all."""
    if not 1 <= chunk_count <= CHUNKS_PER_JOB_MAX:
        raise ConfigError("chunk_cids", f"need 1..{CHUNKS_PER_JOB_MAX} chunks, got {chunk_count}")
    if not 1 <= chunks_per_task <= chunk_count:
        raise ConfigError("chunks_per_task", f"must be in 1..{chunk_count}, got {chunks_per_task}")
    tasks = -(-chunk_count // chunks_per_task)
    if tasks > TASKS_PER_JOB_MAX:
        raise ConfigError("chunks_per_task", f"{tasks} tasks, at most {TASKS_PER_JOB_MAX}")


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What each task of a job may use: ``fuel_max`` is the budget of a whole task (all its chunks), the others
    apply to each chunk's run. Validated against what any sandbox can run (ConfigError naming ``limits.*``)."""

    fuel_max: int = 10_000_000_000
    memory_bytes_max: int = 100 << 20
    wall_time_s: float = 30.0
    output_bytes_max: int = 16 << 20

    def __post_init__(self) -> None:
        for name, low, high in (("fuel_max", 1, FUEL_ABSOLUTE_MAX),
                                ("memory_bytes_max", MEMORY_BYTES_MIN, MEMORY_BYTES_ABSOLUTE_MAX),
                                ("output_bytes_max", 0, OUTPUT_BYTES_ABSOLUTE_MAX)):
            object.__setattr__(self, name, as_int(f"limits.{name}", getattr(self, name), low, high))
        object.__setattr__(self, "wall_time_s", as_number("limits.wall_time_s", self.wall_time_s, WALL_TIME_S_MIN,
                                                           WALL_TIME_S_ABSOLUTE_MAX))

    def receipt_limits(self) -> ReceiptLimits:
        return ReceiptLimits(self.fuel_max, self.memory_bytes_max, self.wall_time_s, self.output_bytes_max)


DEFAULT_DEADLINE_S = 86400.0  # a job's deadline unless its submitter sets one: a day

# The integer options of a job and their ranges (JobOptions and JobSpec check them alike).
_OPTION_INTS = {
    "chunks_per_task": (1, CHUNKS_PER_JOB_MAX),
    "retries_max": (0, RETRIES_MAX),
    "escalations_max": (0, ESCALATIONS_MAX),
    "depth_max": (0, DEPTH_MAX),
    "fuel_per_chunk_estimate": (0, U64_MAX),
}


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What a submitter chooses about a job besides its module and its inputs, with the defaults: the SDK's
    ``Job(...)`` arguments, the flags of `pangea job submit` and the fields of the API's job request are these
    (see request.py). Validated on construction: ConfigError naming the field and its range."""

    chunks_per_task: int = 1  # consecutive chunks per task (capped at the job's chunk count by ``fitted``)
    limits: JobLimits = field(default_factory=JobLimits)
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)
    # seconds from submission within which the job must be done (None: no limit). Tasks that wait for busy,
    # cooling or unreachable workers (a partition) wait until then; only this bounds them.
    deadline_s: float | None = DEFAULT_DEADLINE_S
    retries_max: int = 3  # worker faults a task survives (each retried elsewhere)
    escalations_max: int = 2  # times fuel/memory may be raised after OUT_OF_FUEL / MEMORY_LIMIT_EXCEEDED
    depth_max: int = 2  # how many times a task may be split again below the submitter
    queue_timeout_s: float = 30.0  # how long a task may wait when no known peer could ever take it
    fuel_per_chunk_estimate: int = 0  # 0: unknown (learned from completed tasks; until then fuel_max)

    def __post_init__(self) -> None:
        if not isinstance(self.limits, JobLimits):
            raise ConfigError("limits", f"must be a JobLimits, got {type(self.limits).__name__}")
        if not isinstance(self.verification, VerificationPolicy):
            raise ConfigError("verification", f"must be a VerificationPolicy, got {type(self.verification).__name__}")
        for name, (low, high) in _OPTION_INTS.items():
            object.__setattr__(self, name, as_int(name, getattr(self, name), low, high))
        object.__setattr__(self, "queue_timeout_s", _queue_timeout(self.queue_timeout_s))
        if self.deadline_s is not None:
            object.__setattr__(self, "deadline_s", _deadline(self.deadline_s))

    def fitted(self, chunk_count: int) -> JobOptions:
        """These options for a job of ``chunk_count`` chunks: at most that many chunks per task."""
        return replace(self, chunks_per_task=min(self.chunks_per_task, max(1, chunk_count)))


def _deadline(value: object) -> float:
    seconds = math.nan if isinstance(value, bool) or not isinstance(value, numbers.Real) else float(value)
    if not 0 < seconds < math.inf:  # NaN fails too
        raise ConfigError("deadline_s", f"must be a positive, finite number of seconds (none: leave it out), "
                                        f"got {value!r}")
    return seconds


def _queue_timeout(value: object) -> float:
    return as_number("queue_timeout_s", value, 0.0, QUEUE_TIMEOUT_S_MAX, low_open=True)


DEFAULT_OPTIONS = JobOptions()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything the network needs to run a job. Built by the SDK/API, validated here."""

    job_id: str
    module_cid: str
    chunk_cids: tuple[str, ...]
    chunk_sizes: tuple[int, ...]
    limits: ReceiptLimits  # per task: fuel is the task's budget over all its chunks
    # the options a submitter chose (JobOptions, whose defaults these are), the deadline made absolute
    chunks_per_task: int = DEFAULT_OPTIONS.chunks_per_task
    verification: VerificationPolicy = DEFAULT_OPTIONS.verification
    deadline_s: float = math.inf  # absolute (unix seconds) by which the job must be done
    retries_max: int = DEFAULT_OPTIONS.retries_max
    escalations_max: int = DEFAULT_OPTIONS.escalations_max
    escalation_factor: float = 4.0
    depth_max: int = DEFAULT_OPTIONS.depth_max
    queue_timeout_s: float = DEFAULT_OPTIONS.queue_timeout_s
    fuel_per_chunk_estimate: int = DEFAULT_OPTIONS.fuel_per_chunk_estimate

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        check_chunking(len(self.chunk_cids), self.chunks_per_task)
        if len(self.chunk_sizes) != len(self.chunk_cids):
            raise ConfigError("chunk_sizes", f"{len(self.chunk_sizes)} sizes for {len(self.chunk_cids)} chunks")
        for name, (low, high) in _OPTION_INTS.items():
            as_int(name, getattr(self, name), low, high)
        _queue_timeout(self.queue_timeout_s)
        if not 1.0 < self.escalation_factor <= 64.0:
            raise ConfigError("escalation_factor", f"must be in (1, 64], got {self.escalation_factor}")

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
