"""What the job state machines ask their driver to do (effects), and the answers they expect back.

The coordinator and the worker service never perform I/O: they return these values, and the driver (the
trio node, or the simulator) carries them out and feeds the outcome back as an event, correlated by
``task_id`` and ``worker`` (rust-libp2p's "allow correlating asynchronous responses").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Offer ``task`` to ``worker`` over the compute protocol. Answer: on_accepted / on_rejected, then
    on_commitment (commit-reveal), on_result or on_failure; on_transport_error if the peer cannot be reached."""

    task: TaskRef
    worker: str


@dataclass(frozen=True, slots=True)
class RunLocal:
    """Run ``task`` in this peer's sandbox and sign the receipt; answer with on_result / on_failure with
    ``worker`` set to this peer's id."""

    task: TaskRef


@dataclass(frozen=True, slots=True)
class RequestReveal:
    """Ask ``worker``, which sent a commitment for ``task_id``, to reveal its result."""

    task_id: str
    worker: str


@dataclass(frozen=True, slots=True)
class CancelAttempt:
    """Tell ``worker`` to stop ``task_id`` (its result is no longer wanted)."""

    task_id: str
    worker: str


@dataclass(frozen=True, slots=True)
class RunSpotCheck:
    """Re-run chunk ``chunk_index`` of ``task`` here (single chunk, same module and limits) and answer with
    on_spot_result. The chunk's bytes are chunk ``chunk_index`` of the task's framed input."""

    task: TaskRef
    chunk_index: int


@dataclass(frozen=True, slots=True)
class RunAudit:
    """Re-run the whole of ``task`` here (same module, input and limits), sign it as a local run, and answer
    with on_audit: this peer checks an accepted result against its own deterministic execution."""

    task: TaskRef


@dataclass(frozen=True, slots=True)
class ProvenLie:
    """``worker`` signed a result of ``task`` (its receipt tree: ``tree``) that this peer's own deterministic
    re-execution contradicts: publish the proof, and re-verify everything it signed or voted for."""

    worker: str
    task: TaskRef
    tree: bytes
    why: str


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A task changed state: journal it, and show it in status/explain. ``tree`` is the encoded receipt tree
    of an accepted result (DONE), ``output_cid`` its framed output."""

    task_id: str
    state: TaskState
    reason: str = ""
    output_cid: str = ""
    tree: bytes = b""
    fuel_used: int = 0
    worker: str = ""
    corrected: bool = False  # a DONE task's result replaced by this peer's own re-execution (an audit)


@dataclass(frozen=True, slots=True)
class JobFinished:
    state: JobState
    reason: str = ""


Effect = (Dispatch | RunLocal | RequestReveal | CancelAttempt | RunSpotCheck | RunAudit | ProvenLie | TaskUpdate
          | JobFinished)
