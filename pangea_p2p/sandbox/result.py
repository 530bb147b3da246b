"""What a task run returns: output bytes or a typed failure, always with a metering report.

``SandboxResult`` is one guest run (``run``); ``ChunksResult`` is one task over a list of input chunks
(``run_chunks``): one output per chunk, or the first failure and the index of the chunk that failed, with
one report summed over the chunks that ran. Failures are values (``Failure``), so they cross the
sandbox-process boundary as plain data; ``unwrap()`` raises the matching ``SandboxError`` subclass of
``pangea_p2p.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pangea_p2p.errors import FailureKind, SandboxError, sandbox_error


@dataclass(frozen=True, slots=True)
class MeteringReport:
    """What a run used. ``status`` is None when the run produced output, else why it did not.

    ``fuel_used`` counts wasm instructions (deterministic: same module and input, same count);
    ``peak_memory_bytes`` is the guest's linear memory at the end (wasm memory never shrinks);
    ``wall_time_s`` and ``cpu_time_s`` cover instantiation, input copy, the guest's run and output copy.
    """

    fuel_used: int
    peak_memory_bytes: int
    wall_time_s: float
    cpu_time_s: float
    status: FailureKind | None

    @property
    def ok(self) -> bool:
        return self.status is None

@dataclass(frozen=True, slots=True)
class Failure:
    """Why a task produced no output: the kind, a one-line message, and for traps the trap's name."""

    kind: FailureKind
    message: str
    trap_kind: str = ""

    def to_error(self) -> SandboxError:
        return sandbox_error(self.kind, self.message, self.trap_kind)


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """Either ``output`` (bytes) or ``failure``, and the metering ``report`` in both cases."""

    output: bytes | None
    failure: Failure | None
    report: MeteringReport
    log: bytes = b""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def unwrap(self) -> bytes:
        """The output; raises the SandboxError subclass of the failure if the task failed."""
        if self.failure is not None:
            raise self.failure.to_error()
        assert self.output is not None
        return self.output

    @classmethod
    def failed(cls, kind: FailureKind, message: str, *, trap_kind: str = "", fuel_used: int = 0,
               peak_memory_bytes: int = 0, wall_time_s: float = 0.0, cpu_time_s: float = 0.0) -> SandboxResult:
        report = MeteringReport(fuel_used, peak_memory_bytes, wall_time_s, cpu_time_s, kind)
        return cls(None, Failure(kind, message, trap_kind), report)


@dataclass(frozen=True, slots=True)
class ChunksResult:
    """One task over a list of input chunks: ``outputs`` (one per chunk, in order) or ``failure``.

    ``failed_index`` is the index of the chunk whose run failed (the chunks after it did not run), or None
    when the failure is not one chunk's: the task was refused before any chunk ran (invalid module, limits,
    queue full, closed) or the sandbox process died or hung (the pool cannot tell during which chunk).
    ``report`` covers every chunk that ran: ``fuel_used`` is the sum, ``peak_memory_bytes`` the largest
    linear memory of any run, ``wall_time_s`` and ``cpu_time_s`` the totals; ``status`` is the failure's kind.
    """

    outputs: list[bytes] | None
    failure: Failure | None
    failed_index: int | None
    report: MeteringReport
    log: bytes = b""  # what the task printed (WASI guests and Python steps), at most log_bytes_max and a note

    @property
    def ok(self) -> bool:
        return self.failure is None

    def unwrap(self) -> list[bytes]:
        """The outputs; raises the SandboxError subclass of the failure (its message names the chunk)."""
        if self.failure is not None:
            failure = self.failure
            if self.failed_index is not None:
                failure = Failure(failure.kind, f"chunk {self.failed_index}: {failure.message}", failure.trap_kind)
            raise failure.to_error()
        assert self.outputs is not None
        return self.outputs

    def single(self) -> SandboxResult:
        """This result as the ``SandboxResult`` of a one-chunk task."""
        if self.failure is not None:
            return SandboxResult(None, self.failure, self.report, self.log)
        assert self.outputs is not None
        assert len(self.outputs) == 1
        return SandboxResult(self.outputs[0], None, self.report, self.log)

    @classmethod
    def failed(cls, kind: FailureKind, message: str, *, failed_index: int | None = None, trap_kind: str = "",
               fuel_used: int = 0, peak_memory_bytes: int = 0, wall_time_s: float = 0.0,
               cpu_time_s: float = 0.0, log: bytes = b"") -> ChunksResult:
        report = MeteringReport(fuel_used, peak_memory_bytes, wall_time_s, cpu_time_s, kind)
        return cls(None, Failure(kind, message, trap_kind), failed_index, report, log)
