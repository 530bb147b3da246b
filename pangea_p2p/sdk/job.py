"""The job DSL: split (Python, on the submitter) -> execute (a WebAssembly guest, on the network) -> merge.

    from pangea_p2p.sdk import Job, Client

    job = Job("wordcount", guest="wordcount_map", verification="spot:1")

    @job.split
    def split(text: bytes) -> list[bytes]:
        return pangea_p2p.sdk.splits.lines(text, 1000)

    @job.merge
    def merge(outputs: list[bytes]) -> dict[str, int]:
        ...

    counts = job.run(text, client=Client.for_data_dir(path), progress=print)   # "12/40 tasks done, ..."

Only the execute step leaves the submitter: it is a WebAssembly module addressed by its content id, run in
every worker's sandbox under the job's limits, or a plain Python function of one chunk (``@job.execute``,
see ``pangea_p2p.sdk.steps``), which runs in a WebAssembly build of MicroPython under the same limits.
``split`` and ``merge`` are ordinary Python functions that run where ``run`` is called. ``run_local``
executes the step in this process's sandbox (no network): the same results, the same fuel, for tests and
single machines.

``progress`` gets a ``Progress`` (the peer's status document, a dict, whose ``str`` is one line such as
``12/40 tasks done, 2 running, ETA 3 s``) on the first status, then at most once every ``progress_interval_s``
(``run`` and ``JobHandle.result``: 1 s by default; ``JobHandle.wait``: every change), and always on the final
status. A split into more chunks than a job may have tasks is run with
more chunks per task (one logged line says so).

A ``Job`` is safe to share between threads: its definition is guarded by a lock, and ``run`` keeps its state
in the call, not in the Job, so one definition can run several jobs at once.
"""

from __future__ import annotations

import logging
import operator
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import (
    CHUNKS_PER_JOB_MAX,
    DEFAULT_OPTIONS,
    TASKS_PER_JOB_MAX,
    JobLimits,
    JobOptions,
    VerificationPolicy,
    check_job_id,
)
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.errors import ConfigError, PangeaError, sandbox_error
from pangea_p2p.guests import GUEST_NAMES, load_guest
from pangea_p2p.sdk.client import Client
from pangea_p2p.sdk.steps import StepFn, python_file_step, python_step, split_file_spec

if TYPE_CHECKING:
    from pangea_p2p.sdk.verify import JobVerification

T = TypeVar("T")
SplitFn = Callable[[Any], Sequence[bytes]]
MergeFn = Callable[[list[bytes]], T]
PROGRESS_INTERVAL_S = 1.0
log = logging.getLogger("pangea.sdk")


class Progress(dict[str, Any]):
    """A job's status as the peer reports it (``GET /v1/jobs/{id}``: a dict, unchanged), readable in one line:
    ``str(p)`` is ``12/40 tasks done, 2 running, ETA 3 s`` while it runs, ``40/40 tasks done in 2.1 s`` at the
    end (with the failed and cancelled tasks and the reason when there are any)."""

    @property
    def done(self) -> int:
        return int(self["progress"]["done"])

    @property
    def total(self) -> int:
        return int(self["tasks_total"])

    @property
    def running(self) -> int:
        return int(self["progress"].get("running", 0)) + int(self["progress"].get("verifying", 0))

    @property
    def eta_s(self) -> float | None:
        eta = self.get("eta_s")
        return None if eta is None else float(eta)

    def __str__(self) -> str:
        counts = self["progress"]
        line = f"{self.done}/{self.total} tasks done"
        bad = ", ".join(f"{counts[k]} {k}" for k in ("failed", "cancelled") if counts.get(k))
        if self["state"] == "running":
            line += f", {self.running} running" + (f", {bad}" if bad else "")
            return line + (f", ETA {_seconds(self.eta_s)}" if self.eta_s is not None else "")
        line += f" in {_seconds(float(self.get('elapsed_s', 0.0)))}" + (f", {bad}" if bad else "")
        if self["state"] != "done":
            line += f" ({self['state']}: {self['reason']})" if self.get("reason") else f" ({self['state']})"
        return line


def _seconds(s: float | None) -> str:
    s = s or 0.0
    return f"{s:.2f} s" if s < 1 else f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


ProgressFn = Callable[[Progress], None]


class JobFailed(PangeaError):
    """The job ended without a result; ``status`` is its final status and ``explain`` the reasons."""

    def __init__(self, message: str, status: dict[str, Any], explain: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.explain = explain or {}


# Per-task limits (fuel is the budget of a whole task, the others apply to each chunk run): the core's one
# definition, validated on construction (ConfigError naming ``limits.<field>``).
Limits = JobLimits


def positive_int(key: str, value: int) -> int:
    """``value`` as a plain int (numpy integers too: it may go into a JSON request); ConfigError unless >= 1."""
    try:
        n = operator.index(value)
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {value!r}")
    return n


def resolve_guest(guest: str | bytes | Path) -> bytes:
    """Module bytes from a built-in guest name, a path to a .wasm file, a Python file (``step.py`` or
    ``step.py:function``, see ``sdk.steps``), or the bytes themselves."""
    if isinstance(guest, bytes):
        return guest
    if isinstance(guest, str) and guest in GUEST_NAMES:
        return load_guest(guest)
    python = split_file_spec(str(guest))
    if python is not None:
        return python_file_step(*python)
    path = Path(guest)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError("guest", f"{guest!s} is neither a built-in guest ({', '.join(GUEST_NAMES)}) nor a "
                                   f"readable .wasm file ({exc.strerror})") from None


class Job(Generic[T]):
    """A split / execute / merge job definition (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        guest: str | bytes | Path | None = None,
        limits: Limits | None = None,
        verification: str | VerificationPolicy = str(DEFAULT_OPTIONS.verification),
        chunks_per_task: int = DEFAULT_OPTIONS.chunks_per_task,
        retries_max: int = DEFAULT_OPTIONS.retries_max,
        deadline_s: float | None = DEFAULT_OPTIONS.deadline_s,
        depth_max: int = DEFAULT_OPTIONS.depth_max,
        fuel_per_chunk_estimate: int = DEFAULT_OPTIONS.fuel_per_chunk_estimate,
        escalations_max: int = DEFAULT_OPTIONS.escalations_max,
        queue_timeout_s: float = DEFAULT_OPTIONS.queue_timeout_s,
    ) -> None:
        """The arguments after ``guest`` are the job's ``JobOptions`` (pangea_p2p/core/jobs/model.py: their
        meaning, defaults and ranges), checked here: a bad one is a ConfigError naming it."""
        self.name = name
        self._lock = threading.Lock()
        self._split: SplitFn | None = None
        self._merge: MergeFn[T] | None = None
        self._module: bytes | None = resolve_guest(guest) if guest is not None else None
        if isinstance(verification, str):
            verification = VerificationPolicy.parse(verification)
        self.options = JobOptions(
            chunks_per_task=chunks_per_task, limits=limits or DEFAULT_OPTIONS.limits, verification=verification,
            deadline_s=deadline_s, retries_max=retries_max, escalations_max=escalations_max, depth_max=depth_max,
            queue_timeout_s=queue_timeout_s, fuel_per_chunk_estimate=fuel_per_chunk_estimate,
        )

    @property
    def limits(self) -> Limits:
        return self.options.limits

    @property
    def verification(self) -> VerificationPolicy:
        return self.options.verification

    @property
    def chunks_per_task(self) -> int:
        return self.options.chunks_per_task

    # --- definition ---------------------------------------------------------------------------------------

    def split(self, fn: SplitFn) -> SplitFn:
        """Decorator: ``fn(data) -> list of chunk bytes``, one guest run per chunk."""
        with self._lock:
            if self._split is not None:
                raise ConfigError("split", f"job {self.name!r} already has a split function")
            self._split = fn
        return fn

    def merge(self, fn: MergeFn[T]) -> MergeFn[T]:
        """Decorator: ``fn(outputs) -> result``; ``outputs`` are the guest's outputs, in chunk order."""
        with self._lock:
            if self._merge is not None:
                raise ConfigError("merge", f"job {self.name!r} already has a merge function")
            self._merge = fn
        return fn

    def execute(self, step: str | bytes | Path | StepFn) -> Any:
        """Name the execute step: a built-in guest, a .wasm path, a .py path, module bytes, or -- used as a
        decorator -- a Python function ``(chunk: bytes) -> bytes`` (returned unchanged)."""
        module = python_step(step) if callable(step) else resolve_guest(step)
        with self._lock:
            self._module = module
        return step

    def _parts(self) -> tuple[SplitFn, MergeFn[T], bytes]:
        with self._lock:
            split, merge, module = self._split, self._merge, self._module
        missing = [n for n, v in (("split", split), ("merge", merge), ("execute (guest)", module)) if v is None]
        if missing:
            raise ConfigError("job", f"job {self.name!r} has no {', '.join(missing)} step")
        assert split is not None
        assert merge is not None
        assert module is not None
        return split, merge, module

    def chunks(self, data: Any) -> list[bytes]:
        split, _, _ = self._parts()
        parts = split(data)
        if isinstance(parts, bytes | bytearray | memoryview | str):
            # iterating bytes gives ints, and bytes(n) is n zero bytes: refuse rather than run on garbage
            raise ConfigError("split", f"job {self.name!r}: split must return a list of chunks, not one "
                                       f"{type(parts).__name__}")
        chunks = []
        for i, chunk in enumerate(parts):
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ConfigError("split", f"job {self.name!r}: chunk {i} is a {type(chunk).__name__}, not bytes")
            chunks.append(bytes(chunk))
        if not chunks:
            raise ConfigError("split", f"job {self.name!r}: split returned no chunks")
        return chunks

    # --- running ------------------------------------------------------------------------------------------

    def submit(self, data: Any, client: Client, *, job_id: str | None = None) -> JobHandle[T]:
        """Split ``data``, upload the module and chunks to the peer, and start the job (named ``job_id``, or
        by the peer); a handle to it that knows what it submitted."""
        _, merge, module = self._parts()
        return submit_chunks(client, module, self.chunks(data), self.options, merge, job_id=job_id)

    def run(self, data: Any, client: Client, *, progress: ProgressFn | None = None, timeout_s: float = 3600.0,
            progress_interval_s: float = PROGRESS_INTERVAL_S) -> T:
        """``submit``, wait (calling ``progress`` as ``JobHandle.wait`` does), and return ``merge(outputs)``."""
        handle = self.submit(data, client)
        return handle.result(progress=progress, timeout_s=timeout_s, progress_interval_s=progress_interval_s)

    def run_local(self, data: Any, *, log: Callable[[str], None] | None = None) -> T:
        """Run every task in this process's sandbox (no network) and merge: same answers as ``run``.

        ``log`` gets each task's log, what its step printed (default: written to stderr)."""
        from pangea_p2p.sandbox import SandboxLimits
        from pangea_p2p.sandbox.local import local_executor

        _, merge, module = self._parts()
        chunks = self.chunks(data)
        lim = self.limits
        limits = SandboxLimits(fuel_max=lim.fuel_max, memory_bytes_max=lim.memory_bytes_max,
                               wall_time_s=lim.wall_time_s, output_bytes_max=lim.output_bytes_max)
        cid = cid_of(module)
        outputs: list[bytes] = []
        show = log or (lambda text: print(text, end="", file=sys.stderr))
        with local_executor() as executor:
            for i in range(0, len(chunks), self.chunks_per_task):
                part = chunks[i : i + self.chunks_per_task]
                result = executor.run_chunks(cid, module, part, limits)
                if result.log:
                    show(result.log.decode("utf-8", errors="replace"))
                if result.failure is not None:
                    f, at = result.failure, result.failed_index
                    where = f"chunk {i + at}" if at is not None else f"the task of chunks {i}..{i + len(part) - 1}"
                    raise sandbox_error(f.kind, f"{where}: {f.message}", f.trap_kind)
                outputs.extend(result.unwrap())
        return merge(outputs)


def submit_chunks(client: Client, module: bytes, chunks: Sequence[bytes], options: JobOptions, merge: MergeFn[T],
                  *, job_id: str | None = None) -> JobHandle[T]:
    """Upload ``module`` and ``chunks`` to the peer and start a job over them with ``options`` (at most one task
    per chunk, and more chunks per task than asked when there are more chunks than a job may have tasks: see
    ``fit_chunking``); a handle that verifies against what was submitted. What ``Job.submit`` and `pangea job
    submit` do: ``job_id`` and the chunk count are checked before anything is uploaded."""
    if job_id is not None:
        check_job_id(job_id)
    options = fit_chunking(options, len(chunks))
    module_cid = client.upload_block(module)
    chunk_cids = client.upload_chunks(frame_chunks(chunks))
    request = JobRequest(module_cid, tuple(chunk_cids), options, job_id)
    status = client.submit_job(request)
    return JobHandle(client, status["job_id"], merge, status, module_cid=module_cid, chunk_cids=chunk_cids)


def fit_chunking(options: JobOptions, chunk_count: int) -> JobOptions:
    """``options`` for a job of ``chunk_count`` chunks: at most that many chunks per task, and at least as many
    as keep the job within TASKS_PER_JOB_MAX tasks (said in one logged line when it raises them). ConfigError
    when the split made more chunks than a job may have."""
    if chunk_count > CHUNKS_PER_JOB_MAX:
        raise ConfigError("split", f"{chunk_count} chunks, a job takes at most {CHUNKS_PER_JOB_MAX}: split into "
                                   "fewer, larger chunks (e.g. pangea_p2p.sdk.splits.target_size)")
    options = options.fitted(chunk_count)
    needed = -(-chunk_count // TASKS_PER_JOB_MAX)
    if options.chunks_per_task < needed:
        log.warning("%d chunks at %d per task would be %d tasks, at most %d: running %d chunks per task",
                    chunk_count, options.chunks_per_task, -(-chunk_count // options.chunks_per_task),
                    TASKS_PER_JOB_MAX, needed)
        options = replace(options, chunks_per_task=needed)
    return options


class UncheckedResultWarning(UserWarning):
    """A job is done, but some of its tasks were accepted without the check its verification policy asks for."""


class JobHandle(Generic[T]):
    """A job running on the network: status, progress, explain, cancel, result."""

    def __init__(self, client: Client, job_id: str, merge: MergeFn[T], status: dict[str, Any], *,
                 module_cid: str | None = None, chunk_cids: list[str] | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self._merge = merge
        self.last_status = status
        self.last_result: dict[str, Any] = {}  # the peer's result document, as last fetched
        self.module_cid = module_cid  # what was submitted (None for a handle to a job submitted elsewhere)
        self.chunk_cids = chunk_cids

    def verify(self) -> JobVerification:
        """Check every receipt offline against what this handle submitted (``sdk.verify.verify_job``)."""
        from pangea_p2p.sdk.verify import verify_job

        return verify_job(self.client, self.job_id, module_cid=self.module_cid, chunk_cids=self.chunk_cids)

    def status(self) -> dict[str, Any]:
        self.last_status = dict(self.client.job(self.job_id))
        return self.last_status

    def wait(self, *, progress: ProgressFn | None = None, timeout_s: float = 3600.0,
             progress_interval_s: float = 0.0) -> dict[str, Any]:
        """Block until the job ends (long-polling the peer). ``progress`` gets a ``Progress`` (the status, whose
        ``str`` is one line) for the first status, then at most once every ``progress_interval_s`` seconds, and
        for the final status (by default every change: ``result`` and ``Job.run`` show one a second)."""
        deadline = time.monotonic() + timeout_s
        status = self.last_status
        shown_s: float | None = None
        while status["state"] == "running":
            left = deadline - time.monotonic()
            if left <= 0:
                raise PangeaError(f"job {self.job_id} still running after {timeout_s:g} s")
            status = dict(self.client.wait_job(self.job_id, status["version"], min(10.0, left)))
            self.last_status = status
            now = time.monotonic()
            due = shown_s is None or now - shown_s >= progress_interval_s or status["state"] != "running"
            if progress is not None and due:
                shown_s = now
                progress(Progress(status))
        return status

    def outputs(self) -> list[bytes]:
        """The guest's outputs, one per chunk, in order (downloads each task's framed output). PangeaError if
        some task has none (the job failed or is still running): ``partial_outputs`` returns what is done."""
        out = self.partial_outputs()
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            raise PangeaError(f"job {self.job_id} has {len(missing)} of {len(out)} chunk(s) without output "
                              f"({self.last_result['state']}); partial_outputs() or `pangea job result --partial` "
                              "returns the others")
        return [o for o in out if o is not None]

    def partial_outputs(self) -> list[bytes | None]:
        """The guest's outputs, one per chunk, in order; None for each chunk of a task that has no output (it
        failed, was cancelled or still runs): what a failed job did get done."""
        doc = self.last_result = dict(self.client.job_result(self.job_id))
        out: list[bytes | None] = []
        for cid, task in zip(doc["outputs"], doc["tasks"], strict=True):
            if cid is None:
                out.extend([None] * int(task["chunk_count"]))
            else:
                out.extend(unframe_chunks(self.client.block(cid)))
        return out

    def result(self, *, progress: ProgressFn | None = None, timeout_s: float = 3600.0,
               progress_interval_s: float = PROGRESS_INTERVAL_S) -> T:
        """The merged outputs of the done job (waiting as ``wait`` does); JobFailed if it did not finish. A job
        done with tasks accepted without the check its policy asks for warns (UncheckedResultWarning) saying how
        many and why."""
        status = self.wait(progress=progress, timeout_s=timeout_s, progress_interval_s=progress_interval_s)
        if status["state"] != "done":
            raise JobFailed(f"job {self.job_id} {status['state']}: {status['reason']}", status,
                            self.client.explain(self.job_id))
        if status.get("unchecked"):
            warnings.warn(UncheckedResultWarning(f"job {self.job_id}: {status['reason']}"), stacklevel=2)
        return self._merge(self.outputs())

    def corrections(self) -> dict[str, list[str]]:
        """What the submitter's audits changed in accepted results, by task id (empty: nothing): a result a
        liar got accepted, replaced by the submitter's own re-execution (also after the job ended)."""
        doc = self.client.job_result(self.job_id)
        return {t["task_id"]: list(t["corrections"]) for t in doc["tasks"] if t.get("corrections")}

    def receipts(self) -> list[bytes]:
        """The encoded receipt tree of every task (verifiable offline with pangea_p2p.core.verify)."""
        return [bytes.fromhex(r) for r in self.client.job_result(self.job_id)["receipts"]]

    def logs(self) -> dict[str, str]:
        """What each task printed (its step's stdout and stderr), by task id; tasks that printed nothing are
        absent. As the workers sent it: no receipt covers a log."""
        return {t: str(v["log"]) for t, v in self.client.job_logs(self.job_id)["tasks"].items()}

    def explain(self, *, done: bool = False) -> dict[str, Any]:
        return dict(self.client.explain(self.job_id, done=done))

    def cancel(self) -> dict[str, Any]:
        return dict(self.client.cancel(self.job_id))
