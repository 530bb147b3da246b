"""The one error tree of pangea_p2p.

    PangeaError
    ├── ConfigError            a config value (file, flag or argument) is wrong; names the key and what is allowed
    ├── IdentityError          the key file is missing, unreadable, corrupt or readable by others
    ├── ProtocolError
    │   ├── LocalProtocolError     we misused a protocol object (our bug); never caused by a peer
    │   └── RemoteProtocolError    a peer sent something malformed or illegal; lower its trust, never crash
    ├── TransportError         dialing, listening or a stream failed (port in use, peer unreachable, ...)
    ├── SandboxError           a task failed inside the WebAssembly sandbox; ``kind`` says how (FailureKind)
    │   ├── InvalidModule, ForbiddenImport, OutOfFuel, MemoryLimitExceeded, Timeout,
    │   ├── StackOverflow, Trap, OutputTooLarge, WorkerCrashed,
    │   └── InvalidInput, Cancelled, Rejected
    └── VerificationError      a result, receipt or proof was rejected; ``reason`` is a RejectReason code
                               (RejectReason: a StrEnum of stable codes, each with a one-line ``describe()``)

Every message is one line a user can act on. The pattern is h11's ``_util.py``: local and remote faults are
different types, so a caller can penalise a peer for the second and fix its own code for the first.
"""

from __future__ import annotations

import enum


class PangeaError(Exception):
    """Base of every error raised on purpose by pangea_p2p."""


class ConfigError(PangeaError):
    """A configuration value is invalid. The message names the key and the allowed values."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config {key}: {problem}")
        self.key = key
        self.problem = problem


class IdentityError(PangeaError):
    """The peer's key file cannot be used (missing, unreadable, corrupt, or readable by other users)."""


class ProtocolError(PangeaError):
    """A protocol rule was broken. Not raised directly: see the two subclasses."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow: a bug in our code, never a peer's fault."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a malformed or illegal message. Drop it, lower the peer's trust, keep running."""


class TransportError(PangeaError):
    """A network operation failed: a listen address is in use, a dial failed, a stream broke or timed out."""


class FailureKind(enum.IntEnum):
    """Why a task did not produce output. The integer values are wire values (receipts, compute protocol)."""

    INVALID_MODULE = 1
    FORBIDDEN_IMPORT = 2
    OUT_OF_FUEL = 3
    MEMORY_LIMIT_EXCEEDED = 4
    TIMEOUT = 5
    STACK_OVERFLOW = 6
    TRAP = 7
    OUTPUT_TOO_LARGE = 8
    WORKER_CRASHED = 9
    INVALID_INPUT = 10
    CANCELLED = 11
    REJECTED = 12


class SandboxError(PangeaError):
    """A task failed in the sandbox. ``kind`` is the typed reason; the message says what happened."""

    kind: FailureKind = FailureKind.TRAP

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidModule(SandboxError):
    """The bytes are not a valid WebAssembly module, or it does not follow the guest ABI."""

    kind = FailureKind.INVALID_MODULE


class ForbiddenImport(SandboxError):
    """The module imports something; guests may import nothing."""

    kind = FailureKind.FORBIDDEN_IMPORT


class OutOfFuel(SandboxError):
    """The guest used its whole fuel (instruction) budget."""

    kind = FailureKind.OUT_OF_FUEL


class MemoryLimitExceeded(SandboxError):
    """The guest needed more linear memory than its limit allows."""

    kind = FailureKind.MEMORY_LIMIT_EXCEEDED


class Timeout(SandboxError):
    """The guest ran past its wall-time limit."""

    kind = FailureKind.TIMEOUT


class StackOverflow(SandboxError):
    """The guest recursed past the sandbox's stack limit."""

    kind = FailureKind.STACK_OVERFLOW


class Trap(SandboxError):
    """The guest trapped (unreachable, division by zero, out-of-bounds access, ...). ``trap_kind`` says which."""

    kind = FailureKind.TRAP

    def __init__(self, message: str, trap_kind: str = "unknown") -> None:
        super().__init__(message)
        self.trap_kind = trap_kind


class OutputTooLarge(SandboxError):
    """The guest returned more output bytes than the task allows."""

    kind = FailureKind.OUTPUT_TOO_LARGE


class WorkerCrashed(SandboxError):
    """The worker process running the task died; the task failed, the pool replaced the worker."""

    kind = FailureKind.WORKER_CRASHED


class InvalidInput(SandboxError):
    """The task's input was refused: larger than the task's memory, or the guest rejected it."""

    kind = FailureKind.INVALID_INPUT


class Cancelled(SandboxError):
    """The task was cancelled before it produced a result (the sandbox closed)."""

    kind = FailureKind.CANCELLED


class Rejected(SandboxError):
    """The sandbox refused the task: its limits exceed the node's maxima, or the queue is full."""

    kind = FailureKind.REJECTED


SANDBOX_ERRORS: dict[FailureKind, type[SandboxError]] = {
    FailureKind.INVALID_MODULE: InvalidModule,
    FailureKind.FORBIDDEN_IMPORT: ForbiddenImport,
    FailureKind.OUT_OF_FUEL: OutOfFuel,
    FailureKind.MEMORY_LIMIT_EXCEEDED: MemoryLimitExceeded,
    FailureKind.TIMEOUT: Timeout,
    FailureKind.STACK_OVERFLOW: StackOverflow,
    FailureKind.TRAP: Trap,
    FailureKind.OUTPUT_TOO_LARGE: OutputTooLarge,
    FailureKind.WORKER_CRASHED: WorkerCrashed,
    FailureKind.INVALID_INPUT: InvalidInput,
    FailureKind.CANCELLED: Cancelled,
    FailureKind.REJECTED: Rejected,
}


def sandbox_error(kind: FailureKind, message: str, trap_kind: str = "") -> SandboxError:
    """The SandboxError subclass instance for ``kind`` (``trap_kind`` names the trap for FailureKind.TRAP)."""
    if kind is FailureKind.TRAP:
        return Trap(message, trap_kind or "unknown")
    return SANDBOX_ERRORS[kind](message)


class RejectReason(enum.StrEnum):
    """Why a result, receipt or proof was rejected: a stable code a user (and a log filter) can be shown.

    The string values are part of the node's HTTP API and of logs; add codes, never rename one.
    """

    MALFORMED = "malformed"  # bytes that do not decode: bad length, unknown version or tag, bad field
    BAD_SIGNATURE = "bad-signature"  # the ed25519 signature does not verify
    KEY_PEER_MISMATCH = "key-peer-mismatch"  # the signing key is not the key inside the named peer id
    CID_MISMATCH = "cid-mismatch"  # bytes (output, module, input, child receipt) do not hash to the named id
    BINDING_MISMATCH = "binding-mismatch"  # the receipt is for another job, task, issuer, limits or parent
    PROOF_INVALID = "proof-invalid"  # a Merkle inclusion proof does not lead to the committed root
    SPOT_CHECK_MISMATCH = "spot-check-mismatch"  # re-executing a chunk gave other bytes than committed
    QUORUM_DISAGREEMENT = "quorum-disagreement"  # replicas disagree and no answer reached a quorum
    NO_QUORUM = "no-quorum"  # too few replicas answered to reach a quorum, even after escalating
    DUPLICATE_VOTE = "duplicate-vote"  # the same worker voted (or committed) twice for one task
    COMMITMENT_MISMATCH = "commitment-mismatch"  # a reveal does not match its worker's commitment
    OUT_OF_PHASE = "out-of-phase"  # a commitment after reveals opened, a reveal without commitment, ...
    REPLAYED = "replayed-receipt"  # this receipt (worker, nonce) was already accepted
    EXPIRED = "expired"  # issued longer ago than the freshness window allows
    FROM_FUTURE = "issued-in-future"  # issued later than now plus the allowed clock skew
    DELEGATION_CYCLE = "delegation-cycle"  # a peer appears twice on one path of a delegation tree
    LIMIT_EXCEEDED = "limit-exceeded"  # too deep, too many children, too large, fuel above its budget
    NOT_ASSIGNED = "not-assigned"  # a vote, commitment or reveal from a peer the task was not given to

    def describe(self) -> str:
        """One sentence for a user interface."""
        return _REASON_TEXT[self]


_REASON_TEXT: dict[RejectReason, str] = {
    RejectReason.MALFORMED: "the data is malformed and could not be decoded",
    RejectReason.BAD_SIGNATURE: "the signature does not verify",
    RejectReason.KEY_PEER_MISMATCH: "the signing key does not belong to the peer named as signer",
    RejectReason.CID_MISMATCH: "the content does not match its content id",
    RejectReason.BINDING_MISMATCH: "the receipt is for a different job, task, issuer or limits",
    RejectReason.PROOF_INVALID: "the Merkle proof does not lead to the committed root",
    RejectReason.SPOT_CHECK_MISMATCH: "re-executing a chunk gave a different result than the worker committed",
    RejectReason.QUORUM_DISAGREEMENT: "the replicas disagree and no answer reached a quorum",
    RejectReason.NO_QUORUM: "too few replicas answered to reach a quorum",
    RejectReason.DUPLICATE_VOTE: "this worker already voted on this task",
    RejectReason.COMMITMENT_MISMATCH: "the revealed result does not match the earlier commitment",
    RejectReason.OUT_OF_PHASE: "the message came in the wrong phase of commit-then-reveal",
    RejectReason.REPLAYED: "this receipt was already used",
    RejectReason.EXPIRED: "the receipt is too old",
    RejectReason.FROM_FUTURE: "the receipt is dated in the future",
    RejectReason.DELEGATION_CYCLE: "a peer appears twice on one delegation path",
    RejectReason.LIMIT_EXCEEDED: "a size, depth or budget limit was exceeded",
    RejectReason.NOT_ASSIGNED: "this peer was not given this task",
}


class VerificationError(PangeaError):
    """A result, receipt or proof was rejected. ``reason`` is a RejectReason code a user can be shown."""

    def __init__(self, reason: RejectReason | str, detail: str = "") -> None:
        reason = RejectReason(reason)
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason: RejectReason = reason
        self.detail = detail
