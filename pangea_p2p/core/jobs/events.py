"""What happens to a peer's compute behaviour (events) and what it asks its driver to do (actions).

The driver (the trio node, the simulator, a test) feeds ``ComputeBehaviour.handle(now, event)`` with what
happened — a decoded message from a peer, the outcome of a fetch or of a sandbox run, a stream that broke, a
timer — and carries out the actions it returns, in order. Requests the driver answers later (``Fetch``,
``Execute``) carry a ``request`` number that the answer (``Fetched`` / ``FetchFailed``, ``Executed`` /
``ExecutionFailed``) echoes (rust-libp2p: "allow correlating asynchronous responses to their requests").

Directions on the compute protocol: the *issuer* of a task opens a stream to the *worker* and sends
``IssuerMessage``s on it (offers, cancels, reveal requests); the worker answers on the same stream with
``WorkerMessage``s. An inbound stream is a ``channel`` (a number the driver chooses), so that answers go back
on the stream the offer came on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pangea_p2p.core.jobs.codec import Accepted, Cancel, Commitment, Offer, Rejected, Result, RevealRequest
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskRef
from pangea_p2p.errors import FailureKind

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.effects import TaskUpdate
    from pangea_p2p.core.jobs.tasks import TaskView

IssuerMessage = Offer | Cancel | RevealRequest
WorkerMessage = Accepted | Rejected | Commitment | Result


# --- events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Start the job ``spec`` (its module and chunks are in the block store). ``restored``: the finished tasks
    a restarted peer journaled (DONE ones whose output is still stored are not run again)."""

    spec: JobSpec
    restored: Mapping[str, TaskUpdate] = field(default_factory=dict)
    created_s: float | None = None


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str
    reason: str = "cancelled by the submitter"


@dataclass(frozen=True, slots=True)
class FromIssuer:
    """``peer`` sent ``message`` on the stream it opened to us (``channel``)."""

    peer: str
    channel: int
    message: IssuerMessage


@dataclass(frozen=True, slots=True)
class FromWorker:
    """``peer`` answered on the stream we opened to it."""

    peer: str
    message: WorkerMessage


@dataclass(frozen=True, slots=True)
class Malformed:
    """``peer`` sent bytes that do not decode (``problem`` says why): a fault, never a crash."""

    peer: str
    problem: str


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The offer of ``task_id`` could not be delivered to ``worker`` (no stream, or it stopped reading)."""

    worker: str
    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """Our stream to ``worker`` broke: every task out with it fails over."""

    worker: str
    reason: str


@dataclass(frozen=True, slots=True)
class IssuerLost:
    """The stream ``issuer`` opened to us (``channel``) closed: the tasks it gave on it are not wanted."""

    issuer: str
    channel: int


@dataclass(frozen=True, slots=True)
class PeerGone:
    """``peer`` left the network (its capacity advert expired): what it ran for us is reassigned."""

    peer: str


@dataclass(frozen=True, slots=True)
class ProofReceived:
    """``sender`` sent a fraud proof (verify/fraud.py) on the fraud topic: ``data`` as it came."""

    sender: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Fetched:
    request: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchFailed:
    request: int
    reason: str


@dataclass(frozen=True, slots=True)
class Executed:
    """A sandbox run ended: its output chunks (None for a failure), the failure kind, and the fuel used."""

    request: int
    outputs: list[bytes] | None
    failure: FailureKind | None
    fuel_used: int
    log: bytes = b""  # what the run printed (stdout/stderr of a WASI guest): unsigned, for the submitter's eyes


@dataclass(frozen=True, slots=True)
class ExecutionFailed:
    """The run could not even start or end with a receipt (the module is missing, the driver hit a bug)."""

    request: int
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: do what is due at ``now`` (``ComputeBehaviour.next_deadline`` says when something is)."""


Event = (
    SubmitJob | CancelJob | FromIssuer | FromWorker | Malformed | SendFailed | WorkerLost | IssuerLost | PeerGone
    | ProofReceived | Fetched | FetchFailed | Executed | ExecutionFailed | Tick
)


# --- actions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendToWorker:
    """Send ``message`` to ``worker`` on our stream to it; ``dial``: open one if there is none (an offer; a
    failure comes back as ``SendFailed``), else send only if a stream is open (and drop it quietly if not)."""

    worker: str
    message: IssuerMessage
    dial: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``message`` to ``issuer`` on the stream it opened to us (``channel``)."""

    issuer: str
    channel: int
    message: WorkerMessage


@dataclass(frozen=True, slots=True)
class Fetch:
    """Get block ``cid`` (at most ``size_max`` bytes) from ``peers``, else from providers the driver finds;
    answer ``Fetched`` (checked against the cid) or ``FetchFailed``. The block store was looked in already."""

    request: int
    cid: str
    peers: tuple[str, ...]
    size_max: int


class Purpose(enum.Enum):
    """Why this peer runs a task: for an issuer (SERVE), for a job of its own (LOCAL), to re-run one chunk
    of another worker's result (SPOT), or to check a fraud proof another peer sent (PROOF)."""

    SERVE = "serve"
    LOCAL = "local"
    SPOT = "spot"
    PROOF = "proof"


@dataclass(frozen=True, slots=True)
class Execute:
    """Run ``chunks`` of ``task`` under its limits in the sandbox; answer ``Executed`` or ``ExecutionFailed``.
    The module is ``task.module_cid``: from the block store, else from ``module_from``, else providers."""

    request: int
    task: TaskRef
    chunks: list[bytes]
    purpose: Purpose
    module_from: tuple[str, ...] = ()
    chunk_index: int = 0  # SPOT: which chunk of the task ``chunks`` is


@dataclass(frozen=True, slots=True)
class Abort:
    """The answer to ``request`` (a fetch or a run) is not wanted any more: stop it if you can."""

    request: int


@dataclass(frozen=True, slots=True)
class Provide:
    """Announce that this peer serves block ``cid`` (a module its jobs run), e.g. in the DHT."""

    cid: str


@dataclass(frozen=True, slots=True)
class PublishProof:
    """Publish the fraud proof ``data`` on the fraud topic (verify/fraud.py ``TOPIC``) to the peers around."""

    data: bytes


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A new job (not a restored one): journal it."""

    spec: JobSpec
    created_s: float


@dataclass(frozen=True, slots=True)
class TaskUpdated:
    """A task changed state. ``job_id`` is set for a task of a job submitted here (journal it when final, show
    it in the job's status), empty for a part of a task this peer split. ``task`` is a read-only view."""

    job_id: str
    update: TaskUpdate
    task: TaskView


@dataclass(frozen=True, slots=True)
class JobEnded:
    """A job submitted here ended."""

    job_id: str
    state: JobState
    reason: str


@dataclass(frozen=True, slots=True)
class SplitStarted:
    """This peer split the task it was given into ``parts`` parts, which it now issues itself."""

    task_id: str
    parts: int


@dataclass(frozen=True, slots=True)
class LieProven:
    """``worker`` signed a result of ``task`` that this peer's own deterministic re-execution contradicts
    (``why``). The proof anyone can check by one run: its signed receipt tree (``tree``) and the task's module
    and input ids (``task.module_cid``, ``task.input_cid``). ``job_id``: the job of this peer it was found in
    ("" for a part of a task this peer split). The behaviour has already dropped the liar's trust and started
    re-verifying everything it signed or voted for here."""

    job_id: str
    worker: str
    task: TaskRef
    tree: bytes
    why: str


@dataclass(frozen=True, slots=True)
class Log:
    """Something an operator may want to read: ``event`` and its fields (the simulator ignores these)."""

    level: str
    event: str
    fields: tuple[tuple[str, str], ...] = ()


Action = (
    SendToWorker | Reply | Fetch | Execute | Abort | Provide | PublishProof | JobSubmitted | TaskUpdated | JobEnded
    | SplitStarted | LieProven | Log
)
