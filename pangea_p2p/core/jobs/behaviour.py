"""The compute protocol of one peer, as a sans-IO behaviour: the jobs it submits, the tasks it serves, the
tasks it splits and issues again.

Theory of operation
-------------------
``ComputeBehaviour`` is everything one peer decides on ``/pangea/compute/1.0.0``, issuer side and worker
side, in the shape of rust-libp2p's ``NetworkBehaviour`` and h11's ``Connection``: ``handle(now, event)``
takes what happened (events.py) and returns what to do (actions), and ``next_deadline()`` says when time alone
has something for it. It never performs I/O and never reads a clock; the node (node/compute.py) and the
simulator (sim/peer.py) are its executors, and a test drives it directly.

Issuer side. A submitted job gets a ``Coordinator`` (coordinator.py) over its tasks; a task this peer splits
gets one over its parts. The behaviour turns their effects into actions — an offer to a worker, a reveal
request, a cancel, a local run, a spot-check run — keeps which coordinator owns each task id out there
(``_owner``) and which tasks are out with each worker (``_out``), and routes every answer back: a worker's
message, a failed send, a broken stream (every task out with that worker fails over), a peer that left.
Any message from a worker marks it reachable (the peer's shared ``Reachability``). Audits (audits.py) are
whole runs here whose answers go to their coordinator even after its job finished; a proven lie
(``fx.ProvenLie``) goes out as ``LieProven`` (the proof) and makes every coordinator of this peer, running or
finished, re-verify what the liar signed or voted for (``Coordinator.recheck``).

Worker side (serving.py, ``TaskServer``): offers admitted or refused, each admitted task through its own
state machine (fetching its input, running, splitting, committed, answered or dropped), the accept delay, and
commit-then-reveal. A task it splits becomes a coordinator here (``start_split``); when its parts are done
this peer merges their outputs and signs a delegation receipt over theirs (``_finish_split``).

Fraud proofs (proofs.py, ``ProofDesk``): a proof another peer sent is checked by running its task here (the
liar loses trust, the proof goes on) or found false (its sender loses trust); a lie a coordinator of this peer
proves (its ``ProvenLie`` effect) becomes a proof published to the others.

Time: one heap of timers (a coordinator to tick at its next deadline, a TaskAccepted due, a reveal request
awaited too long), each live only while the value it was set for is unchanged; ``next_deadline()`` is the
earliest live one, and ``Tick`` fires every one due.

Invariants: every request the behaviour makes (fetch, run) is answered at most once and an answer to a request
it dropped is ignored; a task id is served at most once at a time; answers go to the stream the offer came on;
an admission slot is released exactly when its task leaves RUNNING or SPLITTING for good.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.jobs import effects as fx
from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.audits import AuditBudget
from pangea_p2p.core.jobs.codec import (
    INPUT_INLINE_MAX,
    Accepted,
    Cancel,
    Commitment,
    Offer,
    Rejected,
    Result,
    RevealRequest,
)
from pangea_p2p.core.jobs.config import CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.context import ComputeContext
from pangea_p2p.core.jobs.coordinator import Coordinator
from pangea_p2p.core.jobs.events import (
    Action,
    CancelJob,
    Event,
    Execute,
    Executed,
    ExecutionFailed,
    Fetch,
    Fetched,
    FetchFailed,
    FromIssuer,
    FromWorker,
    IssuerLost,
    JobEnded,
    JobSubmitted,
    LieProven,
    Log,
    Malformed,
    PeerGone,
    ProofReceived,
    Provide,
    Purpose,
    SendFailed,
    SendToWorker,
    SplitStarted,
    SubmitJob,
    TaskUpdated,
    Tick,
    WorkerLost,
)
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskRef, TaskState, VerificationMode
from pangea_p2p.core.jobs.proofs import ProofCheck, ProofDesk
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.serving import Incoming, InputFetch, ModuleFetch, ServeRun, Serving, TaskServer
from pangea_p2p.core.jobs.splitting import delegation, split_coordinator, split_task
from pangea_p2p.core.jobs.task_logs import TaskLogs
from pangea_p2p.core.jobs.tasks import AuditState, TaskView
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.voting import NONDETERMINISTIC_FAILURES
from pangea_p2p.errors import ConfigError, PangeaError, RemoteProtocolError

_LIARS_MAX = 100_000
_USED_MAX = 100_000
_RUN = "run"  # timer kind: a coordinator to tick (the server sets its own: serving.ACCEPT, serving.REVEAL)


class JobRun:
    """A job submitted at this peer, as the rest of the peer reads it (the behaviour alone changes it)."""

    __slots__ = ("_coord", "created_s", "spec")

    def __init__(self, spec: JobSpec, coordinator: Coordinator, created_s: float) -> None:
        self.spec = spec
        self.created_s = created_s
        self._coord = coordinator

    @property
    def state(self) -> JobState:
        return self._coord.state

    @property
    def reason(self) -> str:
        """Why it failed or was cancelled; for a done job, what of its verification policy it did not get ("" while
        it runs, and once it is done as asked)."""
        return self._coord.reason

    def unchecked(self) -> dict[str, str]:
        """Its tasks accepted unchecked although its policy asked for a check, and why."""
        return self._coord.unchecked()

    @property
    def finished_s(self) -> float | None:
        return self._coord.finished_s

    @property
    def issuer(self) -> str:
        return self._coord.self_id

    @property
    def config(self) -> CoordinatorConfig:
        """The settings its coordinator decides by."""
        return self._coord.config

    @property
    def workers(self) -> Mapping[str, int]:
        """Tasks done per worker (as they stand: a result an audit corrected counts for this peer)."""
        done: dict[str, int] = {}
        for e in self._coord.tasks.values():
            if e.state is TaskState.DONE:
                done[e.worker] = done.get(e.worker, 0) + 1
        return MappingProxyType(done)

    def corrections(self) -> dict[str, list[str]]:
        """What audits changed in accepted results, per task (only tasks with a correction), oldest first."""
        return {tid: list(e.corrections) for tid, e in self._coord.tasks.items() if e.corrections}

    def audits(self) -> dict[str, int]:
        """Tasks per audit state (audits.py): none drawn, pending, passed, corrected, inconclusive."""
        counts = {s.value: 0 for s in AuditState}
        for e in self._coord.tasks.values():
            counts[e.audit.value] += 1
        return counts

    def progress(self) -> dict[str, int]:
        """Tasks per state."""
        return self._coord.progress()

    def fuel_used(self) -> int:
        return self._coord.fuel_used()

    def explain(self, *, done: bool = False) -> dict[str, list[str]]:
        """The reason chain of every task not done (``done``: of every task), oldest first."""
        return self._coord.explain(done=done)

    def task(self, task_id: str) -> TaskView:
        """A read-only view of one of its tasks (KeyError if it has no such task)."""
        return self._coord.view(task_id)

    def tasks(self) -> list[TaskView]:
        """Read-only views of its tasks, in order."""
        return self._coord.views()


@dataclass(eq=False)
class _Run:
    """A coordinator this peer drives: of a job (``job``) or of the parts of a task it split (``split``)."""

    key: str  # the job id, or the split task's id (ids of tasks contain '/', job ids never do)
    coord: Coordinator
    job: JobRun | None = None
    split: Incoming | None = None


@dataclass(slots=True)
class _OutputFetch:
    run: _Run
    task_id: str
    worker: str
    message: Result


@dataclass(slots=True)
class _LocalInput:
    run: _Run
    task: TaskRef
    purpose: Purpose
    chunk_index: int
    audit: bool = False


@dataclass(slots=True)
class _Here:
    run: _Run
    task: TaskRef
    purpose: Purpose  # LOCAL or SPOT
    chunk_index: int
    audit: bool = False  # a LOCAL run that audits an accepted result (answered with on_audit)


_Request = InputFetch | ModuleFetch | ServeRun | _OutputFetch | _LocalInput | _Here | ProofCheck


class ComputeBehaviour:
    """The compute protocol of one peer (see the module docstring)."""

    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx
        self.self_id = ctx.identity.peer_id
        self.config = ctx.config
        self.trust = ctx.trust
        self.guard = ctx.guard if ctx.guard is not None else ReplayGuard(ctx.config.coordinator.verify)
        self.reachability = ctx.reachability
        self.inflight: dict[str, int] = {}  # tasks out per worker, over every coordinator (a slot each)
        self.audit_budget = AuditBudget(ctx.trust.config.audit_budget,  # drawn audits, over every job
                                        ctx.trust.config.audit_budget_per_liar)
        self.jobs: dict[str, JobRun] = {}
        self.task_logs = TaskLogs()  # what the tasks this peer issued printed, as their workers said
        self.counters: dict[str, int] = dict.fromkeys(
            ("offers_admitted", "offers_rejected", "results_sent", "splits"), 0)
        self._source = WorkerSource(ctx.views, self._local_view)
        self._runs: dict[str, _Run] = {}  # running coordinators, by key
        self._owner: dict[str, _Run] = {}  # task id -> the run waiting for its answers
        self._out: dict[str, set[str]] = {}  # worker -> task ids out with it
        self._requests: dict[int, _Request] = {}
        self._liars: dict[str, None] = {}  # proven liars whose results here were re-verified (oldest first, bounded)
        self._used: dict[str, None] = {}  # workers given a task by this peer (least recently first, bounded)
        self._next_request = 0
        self._armed: dict[str, float] = {}  # run key -> when it is ticked next
        self._timers: list[tuple[float, int, str, str]] = []  # heap of (when, seq, kind, key); stale ones lazily
        self._timer_seq = 0
        self.actions: list[Action] = []  # produced by the current event (one list: the server appends too)
        self.server = TaskServer(ctx, self)
        self.admission = self.server.admission
        self.proofs = ProofDesk(ctx, self)
        self._handlers: dict[type, Callable[[float, Event], None]] = {
            SubmitJob: self._on_submit,  # type: ignore[dict-item]
            CancelJob: self._on_cancel,  # type: ignore[dict-item]
            FromIssuer: self.server.on_message,  # type: ignore[dict-item]
            FromWorker: self._on_worker_message,  # type: ignore[dict-item]
            Malformed: self._on_malformed,  # type: ignore[dict-item]
            SendFailed: self._on_send_failed,  # type: ignore[dict-item]
            WorkerLost: self._on_worker_lost,  # type: ignore[dict-item]
            IssuerLost: self._on_issuer_lost,  # type: ignore[dict-item]
            PeerGone: self._on_peer_gone,  # type: ignore[dict-item]
            ProofReceived: self.proofs.on_received,  # type: ignore[dict-item]
            Fetched: self._on_fetched,  # type: ignore[dict-item]
            FetchFailed: self._on_fetch_failed,  # type: ignore[dict-item]
            Executed: self._on_executed,  # type: ignore[dict-item]
            ExecutionFailed: self._on_execution_failed,  # type: ignore[dict-item]
            Tick: self._on_tick,  # type: ignore[dict-item]
        }

    # --- the interface -------------------------------------------------------------------------------------

    def handle(self, now: float, event: Event) -> list[Action]:
        """Take ``event`` at ``now``; the actions to carry out, in order. ``SubmitJob`` / ``CancelJob`` raise
        PangeaError for a job that cannot start (the module or a chunk is missing, the id is taken) or that
        does not exist."""
        self._handlers[type(event)](now, event)
        if self.audit_budget.owed and self.audit_budget.tokens >= 1.0:
            self._run_owed_audits(now)
        out = self.actions[:]
        self.actions.clear()
        return out

    def next_deadline(self) -> float | None:
        """When time alone has something for the behaviour (a ``Tick`` at or after it fires it), or None."""
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def check(self) -> None:
        """Assert every running coordinator's invariants, and that ``inflight`` is exactly the slots their
        attempts hold: for tests, and for simulations that check after every event."""
        held: dict[str, int] = {}
        for run in self._runs.values():
            run.coord.check()
            for worker, n in run.coord.load().items():
                held[worker] = held.get(worker, 0) + n
        assert held == {w: n for w, n in self.inflight.items() if n}, (held, self.inflight)

    def issuers(self) -> set[str]:
        """The peers whose tasks this peer serves now."""
        return self.server.issuers()

    def serving(self, task_id: str) -> Incoming | None:
        """The task ``task_id`` this peer serves now, if any."""
        return self.server.incoming.get(task_id)

    def task(self, key: str, task_id: str) -> TaskView | None:
        """A read-only view of ``task_id`` of the job (or split task) ``key``."""
        run = self._runs.get(key)
        if run is None and key in self.jobs:
            return self.jobs[key].task(task_id)
        return run.coord.view(task_id) if run is not None else None

    # --- issuer side: jobs ---------------------------------------------------------------------------------------

    def _on_submit(self, now: float, ev: SubmitJob) -> None:
        spec = ev.spec
        if spec.job_id in self.jobs:
            raise PangeaError(f"job {spec.job_id} exists already")
        if not self.ctx.blocks.has(spec.module_cid):
            raise PangeaError(f"module {spec.module_cid} is not in this peer's block store (upload it first)")
        tasks = [self._task_ref(spec, i) for i in range(spec.task_count)]
        if not ev.restored:
            self._check_policy_runs_here(spec, tasks)
        coord = self._coordinator(tasks, spec, now)
        job = JobRun(spec, coord, ev.created_s if ev.created_s is not None else now)
        run = _Run(spec.job_id, coord, job=job)
        self.jobs[spec.job_id] = job
        self._runs[run.key] = run
        for ref in tasks:
            self._owner[ref.task_id] = run
        if not ev.restored:
            self.actions.append(JobSubmitted(spec, job.created_s))
        for rec in ev.restored.values():
            if rec.state is TaskState.DONE and self.ctx.blocks.has(rec.output_cid):
                coord.restore(rec.task_id, rec.output_cid, rec.tree, rec.fuel_used, rec.worker)
        self.actions.append(Provide(spec.module_cid))
        self._apply(run, coord.start(now), now)

    def _check_policy_runs_here(self, spec: JobSpec, tasks: list[TaskRef]) -> None:
        """A policy that re-runs chunks here (spot checks; adaptive, which spot-checks trusted workers) is refused
        when this peer could never run the job's tasks: its checks would silently not happen."""
        if spec.verification.mode not in (VerificationMode.SPOT, VerificationMode.ADAPTIVE) or not tasks:
            return
        local = self.admission.local_view()
        why = scheduler.ineligible(tasks[0], local, self.config.coordinator.scheduler, busy_ok=True)
        if why is not None:
            raise ConfigError("verification", f"{spec.verification} re-runs chunks on this peer to check them, but "
                                              f"this peer {why}: lower the job's limits, raise this peer's "
                                              "[compute] limits, or use replicas:N")

    def _task_ref(self, spec: JobSpec, index: int) -> TaskRef:
        chunks = []
        for c in spec.task_chunks(index):
            data = self.ctx.blocks.get(spec.chunk_cids[c])
            if data is None:
                raise PangeaError(f"chunk {c} ({spec.chunk_cids[c]}) of job {spec.job_id} is not in the block store")
            chunks.append(data)
        framed = frame_chunks(chunks)
        # kept on disk too: the memory cache alone could lose the input of a task not placed yet in a big job
        input_cid = self.ctx.blocks.put(framed, persist=True)
        return TaskRef(
            job_id=spec.job_id, task_id=f"{spec.job_id}/t{index}", parent_task_id="", module_cid=spec.module_cid,
            input_cid=input_cid, input_bytes=len(framed), chunk_count=len(chunks), limits=spec.limits,
            issuer=self.self_id, depth=0, depth_max=spec.depth_max, path=(self.self_id,), partition_index=index,
            partition_count=spec.task_count, deadline_s=spec.deadline_s,
            fuel_per_chunk_estimate=spec.fuel_per_chunk_estimate,
        )

    def _coordinator(self, tasks: list[TaskRef], spec: JobSpec, now: float) -> Coordinator:
        return Coordinator(
            self.self_id, tasks, spec.verification, retries_max=spec.retries_max,
            escalations_max=spec.escalations_max, escalation_factor=spec.escalation_factor,
            queue_timeout_s=spec.queue_timeout_s, trust=self.trust, guard=self.guard, source=self._source,
            rng=random.Random(self.ctx.rng.getrandbits(64)), now=now, config=self.config.coordinator,
            inflight=self.inflight, reachability=self.reachability, keep_going=True,
            audit_budget=self.audit_budget,
        )

    def _on_cancel(self, now: float, ev: CancelJob) -> None:
        job = self.jobs.get(ev.job_id)
        if job is None:
            raise PangeaError(f"no job {ev.job_id}")
        run = self._runs.get(ev.job_id)
        if run is not None:
            self._apply(run, run.coord.cancel(now, ev.reason), now)

    def _local_view(self, now: float) -> WorkerView | None:
        view = self.admission.local_view()
        busy = view.outstanding + self.inflight.get(self.self_id, 0)
        return WorkerView(view.peer_id, view.speed_fuel_per_s, view.slots_total, view.slots_total, view.fuel_max,
                          view.memory_bytes_max, view.wall_time_s_max, 0.0, 0.0, busy)

    # --- issuer side: the coordinators' effects ----------------------------------------------------------------

    def _apply(self, run: _Run, effects: list[fx.Effect], now: float) -> None:
        acts = self.actions
        for eff in effects:
            kind = type(eff)
            if kind is fx.Dispatch:
                ref, worker = eff.task, eff.worker  # type: ignore[union-attr]
                self._owner[ref.task_id] = run
                self._used.pop(worker, None)
                self._used[worker] = None
                if len(self._used) > _USED_MAX:
                    del self._used[next(iter(self._used))]
                inline = b""
                if ref.input_bytes <= INPUT_INLINE_MAX:
                    inline = self.ctx.blocks.get(ref.input_cid) or b""
                out = self._out.get(worker)
                if out is None:
                    out = self._out[worker] = set()
                out.add(ref.task_id)
                acts.append(SendToWorker(worker, Offer(ref, inline), dial=True))
            elif kind is fx.RunLocal:
                self._run_here(run, eff.task, Purpose.LOCAL, 0, now)  # type: ignore[union-attr]
            elif kind is fx.RequestReveal:
                acts.append(SendToWorker(eff.worker, RevealRequest(eff.task_id)))  # type: ignore[union-attr]
            elif kind is fx.CancelAttempt:
                tasks = self._out.get(eff.worker)  # type: ignore[union-attr]
                if tasks is not None:
                    tasks.discard(eff.task_id)  # type: ignore[union-attr]
                acts.append(SendToWorker(eff.worker, Cancel(eff.task_id)))  # type: ignore[union-attr]
            elif kind is fx.RunSpotCheck:
                self._run_here(run, eff.task, Purpose.SPOT, eff.chunk_index, now)  # type: ignore[union-attr]
            elif kind is fx.RunAudit:
                self._run_here(run, eff.task, Purpose.LOCAL, 0, now, audit=True)  # type: ignore[union-attr]
            elif kind is fx.ProvenLie:
                self._lie_proven(run, eff, now)  # type: ignore[arg-type]
            elif kind is fx.TaskUpdate:
                self._task_updated(run, eff)  # type: ignore[arg-type]
            elif kind is fx.JobFinished:
                self._run_finished(run, eff, now)  # type: ignore[arg-type]
        self._arm(run, now)

    def _task_updated(self, run: _Run, eff: fx.TaskUpdate) -> None:
        self.actions.append(TaskUpdated(run.key if run.job is not None else "", eff, run.coord.view(eff.task_id)))

    def _lie_proven(self, run: _Run, eff: fx.ProvenLie, now: float) -> None:
        """A coordinator proved ``eff.worker`` a liar: the proof goes out, and every coordinator of this peer —
        running, or of a job that finished — re-verifies what the liar signed or voted for (once per liar:
        results accepted later with a proven liar behind them are audited for sure, audits.py)."""
        self.actions.append(LieProven(run.key if run.job is not None else "", eff.worker, eff.task, eff.tree, eff.why))
        self.proofs.originate(eff.tree)  # a fraud proof for the other peers (a single execution receipt only)
        self.actions.append(Log("warning", "trust.proven_lie", (("peer", eff.worker), ("task", eff.task.task_id),
                                                                ("why", eff.why))))
        self.recheck(eff.worker, now)

    def dealt_with(self, peer: str) -> bool:
        """Whether this peer gave ``peer`` tasks, or has a trust record of it (a fraud proof about it matters here)."""
        return peer in self._used or peer in self.trust

    def recheck(self, liar: str, now: float) -> list[Action]:
        """``liar`` is proven to have lied (here, or by a fraud proof this peer verified): every coordinator of this
        peer, running or of a job it still knows, re-verifies what it signed or voted for, and drawn audits get
        more budget. Once per liar (results accepted later with it behind them are audited anyway, audits.py).
        The actions this adds (for a caller outside ``handle``; inside, they join the event's)."""
        if liar in self._liars:
            return []
        self._liars[liar] = None
        if len(self._liars) > _LIARS_MAX:  # forgotten, it would only be rechecked again
            del self._liars[next(iter(self._liars))]
        self.audit_budget.liar_found()
        first = len(self.actions)
        for other in self._every_run():
            self._apply(other, other.coord.recheck(liar, now), now)
        return self.actions[first:]

    def _run_owed_audits(self, now: float) -> None:
        """The drawn audits the budget could not pay for, now that it can (oldest first; jobs it forgot skipped)."""
        for audits, task_id in self.audit_budget.take_owed():
            key = task_id.split("/", 1)[0]
            run = self._runs.get(key)
            if run is None and key in self.jobs:
                run = _Run(key, self.jobs[key]._coord, job=self.jobs[key])
            if run is not None and run.coord.audits is audits:
                self._apply(run, run.coord.audit_owed(task_id, now), now)

    def _every_run(self) -> list[_Run]:
        """Every coordinator this peer drives or drove: running ones, and those of the jobs it still knows."""
        runs = list(self._runs.values())
        for key, job in self.jobs.items():
            if key not in self._runs:
                runs.append(_Run(key, job._coord, job=job))
        return runs

    def _run_finished(self, run: _Run, eff: fx.JobFinished, now: float) -> None:
        self._runs.pop(run.key, None)
        self._armed.pop(run.key, None)
        for task_id in run.coord.tasks:  # late answers about its tasks are ignored from now on
            if self._owner.get(task_id) is run:
                del self._owner[task_id]
        if run.job is not None:
            self.actions.append(JobEnded(run.key, eff.state, eff.reason))
            return
        self._finish_split(run, eff, now)

    def _arm(self, run: _Run, now: float) -> None:
        """Tick ``run`` at its next deadline, exactly: a deadline that moved (earlier or later) replaces the
        timer set before (the old one is dropped lazily), and a run with none has no timer."""
        if run.coord.state is not JobState.RUNNING:
            return
        d = run.coord.next_deadline(now)
        if d == self._armed.get(run.key):
            return
        if d is None:
            del self._armed[run.key]
            return
        self._armed[run.key] = d
        self.timer(d, _RUN, run.key)

    def timer(self, when: float, kind: str, key: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))

    def _live(self, timer: tuple[float, int, str, str]) -> bool:
        """Whether ``timer`` still stands for something: the value it was set for is unchanged."""
        when, _, kind, key = timer
        if kind == _RUN:
            return self._armed.get(key) == when
        return self.server.live(when, kind, key)

    def _on_tick(self, now: float, ev: Tick) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)
            if not self._live(timer):
                continue
            _, _, kind, key = timer
            if kind == _RUN:
                del self._armed[key]
                run = self._runs.get(key)
                if run is not None:
                    self._apply(run, run.coord.tick(now), now)
            else:
                self.server.fire(kind, key, now)

    # --- issuer side: answers ----------------------------------------------------------------------------------

    def _on_worker_message(self, now: float, ev: FromWorker) -> None:
        worker, msg = ev.peer, ev.message
        self.reachability.mark_reachable(worker)  # any answer: it can be reached (ends a cool-down)
        task_id = msg.task_id
        kind = type(msg)
        if kind is Rejected or kind is Result:
            tasks = self._out.get(worker)
            if tasks is not None:
                tasks.discard(task_id)
        run = self._owner.get(task_id)
        if run is None:
            return
        coord = run.coord
        if kind is Accepted:
            self._apply(run, coord.on_accepted(task_id, worker, now), now)
        elif kind is Rejected:
            self._apply(run, coord.on_rejected(task_id, worker, msg.reason, now), now)  # type: ignore[union-attr]
        elif kind is Commitment:
            self._apply(run, coord.on_commitment(task_id, worker, msg.digest, now), now)  # type: ignore[union-attr]
        else:
            self._on_result(run, worker, msg, now)  # type: ignore[arg-type]

    def _on_result(self, run: _Run, worker: str, msg: Result, now: float) -> None:
        limits = run.coord.attempt_limits(msg.task_id, worker)
        if msg.output_cid and not msg.output_inline:
            if limits is None:  # not a result this peer waits for: nothing fetched
                return
            n = run.coord.tasks[msg.task_id].ref.chunk_count  # the framed output: a count, a length per chunk
            size_max = 4 * (n + 1) + n * limits.output_bytes_max
            request = self.request(_OutputFetch(run, msg.task_id, worker, msg))
            self.actions.append(Fetch(request, msg.output_cid, (worker,), min(size_max, msg.output_bytes or size_max)))
            return
        output = msg.output_inline
        if limits is not None:  # stored only when it is awaited
            if output:
                self.ctx.blocks.put(output, persist=run.job is not None)
            self.task_logs.record(msg.task_id, worker, msg.log)
        self._apply(run, run.coord.on_result(msg.task_id, worker, msg.receipt_tree, output, now, msg.nonce), now)

    def _on_malformed(self, now: float, ev: Malformed) -> None:
        self.trust.record(ev.peer, Outcome.INVALID, now)
        self.actions.append(Log("warning", "compute.bad_message", (("peer", ev.peer), ("error", ev.problem))))

    def _on_send_failed(self, now: float, ev: SendFailed) -> None:
        tasks = self._out.get(ev.worker)
        if tasks is not None:
            tasks.discard(ev.task_id)
        run = self._owner.get(ev.task_id)
        if run is not None:
            self._apply(run, run.coord.on_transport_error(ev.task_id, ev.worker, ev.reason, now), now)

    def _on_worker_lost(self, now: float, ev: WorkerLost) -> None:
        for task_id in sorted(self._out.pop(ev.worker, ())):
            run = self._owner.get(task_id)
            if run is not None:
                self._apply(run, run.coord.on_transport_error(task_id, ev.worker, ev.reason, now), now)

    def _on_peer_gone(self, now: float, ev: PeerGone) -> None:
        for run in list(self._runs.values()):
            self._apply(run, run.coord.on_peer_gone(ev.peer, now), now)

    # --- issuer side: running here (local runs and spot checks) -----------------------------------------------

    def _run_here(self, run: _Run, ref: TaskRef, purpose: Purpose, chunk_index: int, now: float, *,
                  audit: bool = False) -> None:
        framed = self.ctx.blocks.get(ref.input_cid)
        if framed is None:
            request = self.request(_LocalInput(run, ref, purpose, chunk_index, audit))
            self.actions.append(Fetch(request, ref.input_cid, (), self.config.worker.input_bytes_max))
            return
        self._execute_here(_Here(run, ref, purpose, chunk_index, audit), framed, now)

    def _execute_here(self, here: _Here, framed: bytes, now: float) -> None:
        try:
            chunks = unframe_chunks(framed)
        except RemoteProtocolError as exc:
            self._here_failed(here, str(exc), now)
            return
        if here.purpose is Purpose.SPOT:
            chunks = [chunks[here.chunk_index]]
        request = self.request(here)
        self.actions.append(Execute(request, here.task, chunks, here.purpose, chunk_index=here.chunk_index))

    def _here_done(self, req: _Here, ev: Executed, now: float) -> None:
        run, ref = req.run, req.task
        coord = run.coord
        if req.purpose is Purpose.SPOT:
            if ev.failure is not None and ev.failure in NONDETERMINISTIC_FAILURES:  # says nothing about the worker
                self._apply(run, coord.on_spot_result(ref.task_id, req.chunk_index, None, now, ev.failure.name), now)
                return
            chunk = ev.outputs[0] if ev.failure is None and ev.outputs else None
            self._apply(run, coord.on_spot_result(ref.task_id, req.chunk_index, chunk, now, fuel_used=ev.fuel_used),
                        now)
            return
        if req.audit and ev.failure is not None:  # this peer's own caps may be lower: says nothing (audits.py)
            self._apply(run, coord.on_audit(ref.task_id, None, b"", now, f"it failed here with {ev.failure.name}"),
                        now)
            return
        tree, output = self.server.sign(ref, ev.outputs, ev.failure, ev.fuel_used, now)
        if output:
            self.ctx.blocks.put(output, persist=True)
        if req.audit:
            self._apply(run, coord.on_audit(ref.task_id, tree, output, now), now)
            return
        self.task_logs.record(ref.task_id, self.self_id, ev.log)
        # the tree signed here a moment ago goes along: the coordinator need not verify its own signature
        self._apply(run, coord.on_result(ref.task_id, self.self_id, tree.encode(), output, now, own=tree), now)

    def _here_failed(self, req: _Here | _LocalInput, reason: str, now: float) -> None:
        run, ref = req.run, req.task
        if req.purpose is Purpose.SPOT:
            self.actions.append(Log("warning", "spot_check.failed_here", (("task", ref.task_id), ("error", reason))))
            self._apply(run, run.coord.on_spot_result(ref.task_id, req.chunk_index, None, now, reason), now)
        elif req.audit:
            self._apply(run, run.coord.on_audit(ref.task_id, None, b"", now, reason), now)
        else:
            self._apply(run, run.coord.on_local_error(ref.task_id, reason, now), now)

    # --- worker side: splitting ------------------------------------------------------------------------------------

    def start_split(self, inc: Incoming, framed: bytes, now: float) -> None:
        """The served task ``inc`` is split: its parts are issued by a coordinator of this peer."""
        ref = inc.ref
        pieces = split_task(ref, framed, inc.parts, self.self_id)
        for part, data in pieces:
            self.ctx.blocks.put(data, cid=part.input_cid)
        coord = split_coordinator(
            self.self_id, [p for p, _ in pieces], trust=self.trust, guard=self.guard, source=self._source,
            rng=random.Random(self.ctx.rng.getrandbits(64)), now=now, inflight=self.inflight,
            reachability=self.reachability, config=self.config.coordinator,
        )
        run = _Run(ref.task_id, coord, split=inc)
        self._runs[run.key] = run
        for part, _ in pieces:
            self._owner[part.task_id] = run
        self.counters["splits"] += 1
        self.actions.append(SplitStarted(ref.task_id, len(pieces)))
        self.actions.append(Log("info", "task.split", (("task", ref.task_id), ("parts", str(len(pieces))))))
        self._apply(run, coord.start(now), now)

    def _finish_split(self, run: _Run, eff: fx.JobFinished, now: float) -> None:
        inc = run.split
        assert inc is not None
        self.server.admission.release(inc.ref.task_id)
        if inc.state is not Serving.SPLITTING:
            return  # dropped meanwhile
        if eff.state is not JobState.DONE:
            self.server.give_up(inc, f"could not finish its parts: {eff.reason}")
            return
        parts = run.coord.views()  # in part order
        outputs = [self.ctx.blocks.get(p.output_cid) for p in parts]
        try:
            tree, merged = delegation(self.ctx.identity, inc.ref, parts, outputs,
                                      self.config.coordinator.verify, now=now, rng=self.ctx.rng)
        except PangeaError as exc:
            self.server.give_up(inc, str(exc))
            return
        logs = self.task_logs.of_tasks(p.task_id for p in parts)  # the parts' logs go up with the merge
        inc.log = b"".join(f"[part {t}]\n".encode() + entry.log for t, entry in logs.items())
        self.server.answer(inc, tree, merged, now)

    def cancel_split(self, inc: Incoming, why: str, now: float) -> None:
        """The served task ``inc`` that was split is not wanted any more: its parts are called off."""
        run = self._runs.get(inc.ref.task_id)
        if run is not None and run.split is inc:
            self._apply(run, run.coord.cancel(now, why), now)

    # --- answers to requests ----------------------------------------------------------------------------------------

    def request(self, what: _Request) -> int:
        """A number for a request this peer makes (a fetch, a run), to match its answer."""
        self._next_request += 1
        self._requests[self._next_request] = what
        return self._next_request

    def forget_request(self, request: int) -> None:
        """The answer to ``request`` is not wanted any more (it will be ignored)."""
        self._requests.pop(request, None)

    def _on_issuer_lost(self, now: float, ev: IssuerLost) -> None:
        self.server.on_issuer_lost(now, ev.issuer, ev.channel)

    def _on_fetched(self, now: float, ev: Fetched) -> None:
        req = self._requests.pop(ev.request, None)
        if isinstance(req, InputFetch):
            if req.inc.state is Serving.FETCHING:
                self.server.input_ready(req.inc, ev.data, now)
        elif isinstance(req, ModuleFetch):
            if req.inc.state is Serving.FETCHING:
                self.server.module_ready(req.inc, now)
        elif isinstance(req, _OutputFetch):
            run = req.run
            self.ctx.blocks.put(ev.data, persist=run.job is not None)
            msg = req.message
            self.task_logs.record(req.task_id, req.worker, msg.log)
            self._apply(run, run.coord.on_result(req.task_id, req.worker, msg.receipt_tree, ev.data, now, msg.nonce),
                        now)
        elif isinstance(req, _LocalInput):
            self._execute_here(_Here(req.run, req.task, req.purpose, req.chunk_index, req.audit), ev.data, now)
        elif isinstance(req, ProofCheck):
            self.proofs.input_ready(req, ev.data, now)

    def _on_fetch_failed(self, now: float, ev: FetchFailed) -> None:
        req = self._requests.pop(ev.request, None)
        if isinstance(req, InputFetch | ModuleFetch):
            if req.inc.state is Serving.FETCHING:
                self.server.fetch_failed(req.inc, ev.reason, now)
        elif isinstance(req, _OutputFetch):
            self._apply(req.run, req.run.coord.on_transport_error(req.task_id, req.worker, ev.reason, now), now)
        elif isinstance(req, _LocalInput):
            self._here_failed(req, ev.reason, now)
        elif isinstance(req, ProofCheck):
            self.proofs.failed(req, ev.reason)

    def _on_executed(self, now: float, ev: Executed) -> None:
        req = self._requests.pop(ev.request, None)
        if isinstance(req, ServeRun):
            if req.inc.state is Serving.RUNNING:
                self.server.served(req.inc, ev, now)
        elif isinstance(req, _Here):
            self._here_done(req, ev, now)
        elif isinstance(req, ProofCheck):
            self.proofs.executed(req, ev, now)

    def _on_execution_failed(self, now: float, ev: ExecutionFailed) -> None:
        req = self._requests.pop(ev.request, None)
        if isinstance(req, ServeRun):
            if req.inc.state is Serving.RUNNING:
                self.server.give_up(req.inc, ev.reason)
        elif isinstance(req, _Here):
            self._here_failed(req, ev.reason, now)
        elif isinstance(req, ProofCheck):
            self.proofs.failed(req, ev.reason)


__all__ = ["ComputeBehaviour", "JobRun"]
