"""Placement: a coordinator's queue of tasks, its indexes and timers, and where each task goes next.

Theory of operation
-------------------
A task that wants a placement (PENDING, or with replicas its vote counts on not given to any worker yet) is
offered to workers through ``scheduler.place``: delegated to one or more workers (an *attempt* each), run
here, or *queued* with a reason a user can read. A queued task waits for a worker; it runs here as a fallback (under
HASH at once when no known worker could ever take it, else after LOCAL_FALLBACK_AFTER_S). Waiting for busy, cooling
or unreachable workers (or for any, while none is known) is not a failure: only the job's deadline bounds it. A task
that no known peer could *ever* take (its limits above every advert and this peer's, every peer excluded from it,
below the trust floor or on its path) is *stuck*: it fails after the job's ``queue_timeout_s`` stuck with no attempt
out (a peer that fits may appear meanwhile), naming which limit and which peers.

Cost. A job may hold tens of thousands of tasks and every event ends in a placement round or a tick, so nothing
per event scans all of them. Placement keeps:
- ``out``: the tasks with at least one attempt out (exactly those; deadlines, expiry and departures look only
  here);
- ``unplaced``: an ordered superset of the tasks that want a placement, cleaned as it is walked; a task whose
  attempt, candidate or vote changed goes back to its front (``reconsider``);
- ``due``: the tasks the next placement round looks at whatever the room: those whose state changed as above,
  whose placement left replicas unplaced (the next round places or queues the rest, as a scan would), and
  those whose timer fired;
- a heap of timers (stuck timeout, local fallback, a checked job's re-look at this peer, end of a backoff),
  each live only while the value it was set for is unchanged (stale ones are dropped lazily);
- ``queued`` (tasks with ``queued_since_s``) and a count of DONE tasks.
Index invariant, after every call (``check`` asserts it): a task that wants a placement is in ``unplaced``, and
if it is not queued it is in ``due`` or has a live timer (a backoff). A placement round first places the due
tasks, then walks ``unplaced`` in order only while some worker — or this peer, where placement may pick it —
could take the job's smallest task (free slot, limits, trust floor, not cooling down, not on the path): when
none could, no task can go out, and every task left in the walk is queued with its timers or due, so the round
stops at once. This peer as a checked job's *fallback* is not in that check: a queued task that finds this peer
busy once its fallback delay is over looks at it again every LOCAL_FALLBACK_AFTER_S (a timer). While tasks
are queued, an answer that frees one of this job's slots starts a placement round at once, and the workers
are looked at again every RELOOK_S (a slot may free up in another job, a worker appear).
``deadline(now)`` is then ``now`` itself when a timer is due or a task is due for a look (the next tick takes
them all: no busy loop).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace

from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.config import (
    ATTEMPT_GRACE_S,
    BACKOFF_S_MAX,
    BACKOFF_S_MIN,
    LOCAL_FALLBACK_AFTER_S,
    OFFER_TIMEOUT_S,
    RELOOK_S,
    TRANSFER_BYTES_PER_S_MIN,
)
from pangea_p2p.core.jobs.effects import CancelAttempt, Dispatch, RunLocal
from pangea_p2p.core.jobs.model import JobState, TaskRef, TaskState, VerificationMode
from pangea_p2p.core.jobs.tasks import Attempt, AuditState, Host, TaskEntry
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.commit_reveal import Phase

# Timer kinds: a timer is live while the value it was set for is unchanged.
TIMEOUT, FALLBACK, RECHECK, BACKOFF = 0, 1, 2, 3
NEVER_SHOWN = 3  # peers named in a stuck task's reason


class Placement:
    """The queue of one coordinator (see the module docstring)."""

    def __init__(self, host: Host, tasks: list[TaskRef]) -> None:
        self.c = host
        self.out: dict[str, TaskEntry] = {}  # tasks with at least one attempt out
        self.unplaced: OrderedDict[str, TaskEntry] = OrderedDict(host.tasks)  # superset of those wanting placement
        self.due: dict[str, None] = dict.fromkeys(host.tasks)  # looked at by the next placement round, room or not
        self.queued: set[str] = set()  # tasks with queued_since_s set (not DONE)
        self.timers: list[tuple[float, str, int]] = []  # heap of (when, task id, kind)
        self.done = 0  # tasks DONE
        self._walking = False  # a placement walk is iterating unplaced (moves to its front are deferred)
        self._deferred: list[TaskEntry] = []
        self._looked_s = -math.inf  # when the last placement round ran
        self.freed = False  # an attempt stopped holding a slot since the last round: the queue may move
        self._fuel_per_chunk: list[float] = []
        # A task as small as any of ours, on the path they all share: a worker that cannot take it can take none
        # of them (limits only grow, by escalation), which makes the "any room?" check job-wide.
        self._probe = _probe(tasks)

    # --- time -----------------------------------------------------------------------------------------------

    def deadline(self, now: float) -> float | None:
        """When a tick next has something to do here (see the module docstring)."""
        times = [a.deadline_s for e in self.out.values() for a in e.attempts.values() if now < a.deadline_s]
        while self.timers and not self.live(self.timers[0]):
            heapq.heappop(self.timers)  # stale: the value it was set for changed
        if self.timers:
            times.append(max(now, self.timers[0][0]))
        if self.queued:  # waiting for a worker: look again in a while (a slot frees up, a worker appears), or
            times.append(max(now, self._looked_s + RELOOK_S))  # when a worker's cool-down ends
            expiry = self.c.reachability.next_expiry(now)
            if expiry is not None:
                times.append(expiry)
        times.extend(max(now, e.not_before_s) for e in map(self.c.tasks.__getitem__, self.due) if self.may_want(e))
        return min((t for t in times if t < math.inf), default=None)

    def timer(self, when: float, entry: TaskEntry, kind: int) -> None:
        heapq.heappush(self.timers, (when, entry.ref.task_id, kind))

    def live(self, timer: tuple[float, str, int]) -> bool:
        """Whether ``timer`` still stands for something: the value it was set for is unchanged (a stuck timeout
        counts only while no attempt is out: ``end_attempt`` sets it again when the last one ends)."""
        when, task_id, kind = timer
        e = self.c.tasks[task_id]
        if e.state.final:
            return False
        if kind == BACKOFF:
            return e.not_before_s == when
        if kind == TIMEOUT:
            return e.stuck_since_s is not None and not e.attempts and e.stuck_since_s + self.c.queue_timeout_s == when
        if kind == FALLBACK:
            return e.queued_since_s is not None and e.fallback_at_s == when
        return e.queued_since_s is not None and e.fallback_check_s == when

    def backoff(self, misses: int) -> float:
        """How long a task waits before it is placed again after ``misses`` failed or unreachable attempts."""
        return min(BACKOFF_S_MAX, BACKOFF_S_MIN * 2.0 ** max(0, misses - 1)) * (0.5 + self.c.rng.random())

    # --- the rounds -------------------------------------------------------------------------------------

    def place_pending(self, now: float) -> None:
        """Place what wants placing: first the tasks due for a look (their timers fired, their state changed, or
        a placement left replicas unplaced), whatever the room; then the others in ``unplaced`` order while
        some worker (or this peer) has room for our smallest task."""
        c = self.c
        if c.state is not JobState.RUNNING:
            return
        self._looked_s = now
        self.freed = False
        while self.timers and self.timers[0][0] <= now:
            timer = heapq.heappop(self.timers)
            if self.live(timer):
                self.due[timer[1]] = None
        if not self.due and not self.unplaced:
            return
        workers: list[scheduler.WorkerView] | None = None
        looked: set[str] = set()
        again: list[str] = []  # placed in part: looked at again by the next round (as a full scan would)
        due, self.due = self.due, {}
        for task_id in due:
            entry = c.tasks[task_id]
            if c.state is not JobState.RUNNING or not self.wants_placement(entry, now):
                continue
            if workers is None:
                workers = c.source.views(now)
            workers = self._place_and_look(entry, workers, now)
            looked.add(task_id)
            if self.wants_placement(entry, now) and entry.queued_since_s is None:
                again.append(task_id)
        if self.unplaced and c.state is JobState.RUNNING:
            self._walk_unplaced(workers, looked, again, now)
        for task_id in again:
            self.due[task_id] = None

    def _walk_unplaced(self, workers: list[scheduler.WorkerView] | None, looked: set[str], again: list[str],
                       now: float) -> None:
        """Walk ``unplaced`` in order while there is room, dropping the tasks that want no placement (the
        workers are looked at only once a task wants placing)."""
        c = self.c
        drop: list[str] = []
        room: bool | None = None
        self._walking = True
        try:
            for task_id, entry in self.unplaced.items():
                if not self.may_want(entry):
                    drop.append(task_id)
                    continue
                if entry.not_before_s > now or task_id in looked:
                    continue  # backing off (its timer brings it back), or placed by this round already
                if workers is None:
                    workers = c.source.views(now)
                if room is None:
                    room = self._room(workers, now)
                if not room:
                    break  # everything from here on is queued, or due for a look (see Cost)
                before = workers
                workers = self._place_and_look(entry, workers, now)
                if c.state is not JobState.RUNNING:
                    break
                if workers is not before:
                    room = self._room(workers, now)
                if not self.may_want(entry):
                    drop.append(task_id)
                elif entry.queued_since_s is None and entry.not_before_s <= now:
                    again.append(task_id)
        finally:
            self._walking = False
        for task_id in drop:
            if not self.may_want(c.tasks[task_id]):
                self.unplaced.pop(task_id, None)
        deferred, self._deferred = self._deferred, []
        for entry in deferred:
            self.reconsider(entry)

    def place_one(self, entry: TaskEntry, now: float) -> None:
        """Place the replicas of ``entry`` not given to a worker yet, now (the rest at the next round)."""
        if entry.replicas_missing() > 0:
            self._place(entry, self.c.source.views(now), now)
            if entry.replicas_missing() > 0 and entry.queued_since_s is None:
                self.due[entry.ref.task_id] = None  # placed in part: the rest at the next round

    def reconsider(self, entry: TaskEntry) -> None:
        """``entry`` may want a placement now: to the front of ``unplaced``, and due for a look at the next
        placement round (whatever the room: it is placed or queued with its reason and timers)."""
        if self._walking:  # not while a walk iterates unplaced
            self._deferred.append(entry)
            return
        task_id = entry.ref.task_id
        self.unplaced[task_id] = entry
        self.unplaced.move_to_end(task_id, last=False)
        self.due[task_id] = None

    @staticmethod
    def may_want(entry: TaskEntry) -> bool:
        """Whether ``entry`` wants a placement, now or when its backoff ends (or a backup of a late attempt)."""
        return (not entry.state.final and entry.audit is not AuditState.PENDING  # this peer settles its vote
                and (entry.state is TaskState.PENDING or entry.replicas_missing() > 0
                     or (entry.hedge and len(entry.attempts) == 1 and not entry.candidates)))

    def wants_placement(self, entry: TaskEntry, now: float) -> bool:
        return entry.not_before_s <= now and self.may_want(entry)

    def _place_and_look(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float
                        ) -> list[scheduler.WorkerView]:
        """Place ``entry``; the worker views afresh if that put an attempt out (it changed what is where)."""
        before = len(entry.attempts)
        self._place(entry, workers, now)
        return self.c.source.views(now) if len(entry.attempts) != before else workers

    def _room(self, workers: list[scheduler.WorkerView], now: float) -> bool:
        """Whether some worker, or this peer where placement may pick it, could take one of our tasks now: a
        free slot, enough trust, limits that fit our smallest task, not cooling down, not on the path (else no
        task can go out). This peer as a checked job's fallback does not count: waiting tasks look at it on
        their own timers."""
        probe, cfg = self._probe, self.c.config.scheduler
        if probe is None:
            return False
        cooling = self.c.reachability.cooling(now)
        if any(scheduler.ineligible(probe, w, cfg) is None for w in workers
               if w.peer_id not in probe.path and w.peer_id not in cooling):
            return True
        local = self.c.source.local(now) if self.local_first() else None
        return local is not None and scheduler.ineligible(probe, local, cfg) is None

    # --- one task ---------------------------------------------------------------------------------------

    def _place(self, entry: TaskEntry, workers: list[scheduler.WorkerView], now: float) -> None:
        c = self.c
        ref = self.ref(entry)
        wanted = max(1, entry.replicas_missing())
        local = c.source.local(now) if self.local_first() else None
        # Replicas of a vote (also a single top-up) are independent random draws, not the best-ranked workers:
        # a party that lies about its speed must not get every replica of a task (see scheduler.py).
        req = scheduler.PlaceRequest(
            ref, self.fuel(ref), workers, local, frozenset(entry.busy_with()) | c.reachability.cooling(now),
            replicas=wanted, may_split=False, rng=c.rng if entry.tally is not None else None,
        )
        placement = scheduler.place(req, c.config.scheduler)
        if placement.kind == "delegate":
            entry.hedge = False
            if entry.reveal is not None and entry.reveal.phase is not Phase.COMMITTING:
                entry.reveal = c.reveal_round(entry, len(placement.workers))  # too late to join that one
            views = {w.peer_id: w for w in workers if w.peer_id in placement.workers}
            for worker in placement.workers:
                self._dispatch(entry, ref, worker, views.get(worker), now)
        elif placement.kind == "local":
            self._run_local(entry, ref, now, f"runs here ({self.expected_text(ref, placement.expected_s)})")
        else:
            self._queue(entry, ref, placement.reason, workers, now)

    def _queue(self, entry: TaskEntry, ref: TaskRef, why: str, workers: list[scheduler.WorkerView],
               now: float) -> None:
        c = self.c
        cfg = c.config.scheduler
        local = c.source.local(now) if c.local_allowed and c.self_id not in entry.attempts else None
        excluded = entry.busy_with()
        local_could = local is not None and scheduler.ineligible(ref, local, cfg, busy_ok=True) is None

        def could() -> bool:
            """Whether some known worker could take it, once it has a free slot (a scan: only when needed)."""
            return any(scheduler.ineligible(ref, w, cfg, busy_ok=True) is None for w in workers
                       if w.peer_id not in excluded and w.peer_id not in ref.path)

        if local is not None and scheduler.ineligible(ref, local, cfg) is None:
            # Run it here (this peer trusts its own result; it settles a vote that lacks workers, see on_result)
            # at once if nothing is under way and no known worker could ever take it, else after a short wait
            # for busy workers to free up. Under checked policies only when nothing else is left to do.
            idle = not entry.attempts and not entry.candidates and (entry.tally is None or not entry.tally.votes)
            if entry.fallback_at_s is None:
                entry.fallback_at_s = now + LOCAL_FALLBACK_AFTER_S
                self.timer(entry.fallback_at_s, entry, FALLBACK)
            if (idle and not could()) or now >= entry.fallback_at_s:
                self._run_local(entry, ref, now, f"local fallback: {why}")
                return
        elif (local_could and not self.local_first() and now >= (entry.fallback_check_s or -math.inf)
              and (entry.fallback_at_s is None or now >= entry.fallback_at_s)):
            # A checked job's task that could run here once this peer has a free slot: as this peer's slots are
            # not part of the "any room?" check (see Cost), it looks again in a while (not on every event).
            entry.fallback_check_s = now + LOCAL_FALLBACK_AFTER_S
            self.timer(entry.fallback_check_s, entry, RECHECK)
        if entry.queued_since_s is None:
            entry.queued_since_s = now
            self.queued.add(entry.ref.task_id)
            c.note(entry, f"queued: {why}")
            c.update(entry, reason=why)
            c.maybe_open_reveals(entry, now)
        if not workers or entry.attempts or local_could or could():
            # busy, cooling or unreachable workers, or none known (a partition expires their adverts): it waits,
            # bounded by the job's deadline
            entry.stuck_since_s = None
            return
        if entry.stuck_since_s is None:
            entry.stuck_since_s = now
            self.timer(now + c.queue_timeout_s, entry, TIMEOUT)
        elif now >= entry.stuck_since_s + c.queue_timeout_s:
            c.fail(entry, f"no known peer could ever take it within the {c.queue_timeout_s:g} s queue timeout: "
                          f"{never_reason(ref, workers, excluded, local, cfg)}", now)

    def local_first(self) -> bool:
        """Whether placement may pick this peer like any worker. Checked modes verify other peers: this peer
        runs their tasks only as a fallback (and trusts itself)."""
        return self.c.local_allowed and self.c.policy.mode is VerificationMode.HASH

    def ref(self, entry: TaskEntry) -> TaskRef:
        """The task as it goes out now: its current limits, and commit-reveal if a round is open."""
        commit_reveal, cached = entry.reveal is not None, entry.ref_cache
        if cached is None or cached.limits != entry.limits or cached.commit_reveal is not commit_reveal:
            cached = entry.ref_cache = replace(entry.ref, limits=entry.limits, commit_reveal=commit_reveal)
        return cached

    def fuel(self, ref: TaskRef) -> float:
        learned = sum(self._fuel_per_chunk) / len(self._fuel_per_chunk) if self._fuel_per_chunk else None
        return scheduler.fuel_estimate(ref, learned)

    def expected_text(self, ref: TaskRef, expected_s: float) -> str:
        """``expected_s`` (from ``fuel(ref)``) as ``explain`` says it: with where the fuel figure comes from, and as
        an upper bound while it is the task's fuel budget (no result measured yet)."""
        if ref.fuel_per_chunk_estimate > 0:
            return f"expected {expected_s:.3f} s from the job's fuel estimate"
        if self._fuel_per_chunk:
            return f"expected {expected_s:.3f} s from the fuel {len(self._fuel_per_chunk)} measured result(s) used"
        return f"expected at most {expected_s:.3f} s, from the fuel budget: no result measured yet"

    def learn_fuel(self, entry: TaskEntry, fuel_used: int) -> None:
        """A verified result used ``fuel_used``: the estimate of the next placements learns from it."""
        self._fuel_per_chunk.append(fuel_used / max(1, entry.ref.chunk_count))
        del self._fuel_per_chunk[:-32]

    def _dispatch(self, entry: TaskEntry, ref: TaskRef, worker: str, view: scheduler.WorkerView | None,
                  now: float) -> None:
        c = self.c
        fuel = self.fuel(ref)
        expected = scheduler.expected_s(ref, fuel, view, c.config.scheduler) if view else 1.0
        # within the task's own deadline (the job's, or for a split's part what its delegator was given, less
        # the time to send the merged result back): the worker is told it, and passes it down if it splits
        deadline = min(now + attempt_budget_s(ref, expected, c.config.timeout_factor), max(ref.deadline_s, now + 1.0))
        # until the worker says it took the task, no answer by OFFER_TIMEOUT_S is an unreachable worker; once it did,
        # it is *late* far beyond its expected time (retries.py: a vote's replica is replaced, a single attempt gets
        # a backup), each late one giving the next twice as long
        late = now + OFFER_TIMEOUT_S + (attempt_budget_s(ref, expected, c.config.timeout_factor, wall=False)
                                        - OFFER_TIMEOUT_S) * 2.0 ** entry.lates
        entry.attempts[worker] = Attempt(worker, ref.limits, min(deadline, now + OFFER_TIMEOUT_S), round=entry.reveal,
                                         due_s=deadline, late_s=late)
        entry.assigned.add(worker)
        self._started(entry)
        c.inflight[worker] = c.inflight.get(worker, 0) + 1
        if entry.tally is not None:
            entry.tally.add_workers([worker])
        if entry.reveal is not None:  # its round waits for its commitment too
            r = entry.reveal
            r.add_workers([worker])
            r.commitments_needed = max(r.commitments_needed, sum(1 for a in entry.attempts.values() if a.round is r))
        how = self.expected_text(ref, expected) if view else "expected time unknown"
        c.note(entry, f"sent to {worker} (attempt {entry.failures + 1}, {how})")
        c.effects.append(Dispatch(replace(ref, deadline_s=deadline), worker))
        c.update(entry, worker=worker)

    def _run_local(self, entry: TaskEntry, ref: TaskRef, now: float, why: str) -> None:
        c = self.c
        deadline = now + ATTEMPT_GRACE_S + ref.chunk_count * ref.limits.wall_time_s
        entry.attempts[c.self_id] = Attempt(c.self_id, ref.limits, deadline, accepted=True, local=True)
        self._started(entry)
        c.inflight[c.self_id] = c.inflight.get(c.self_id, 0) + 1
        c.note(entry, why)
        c.effects.append(RunLocal(ref))
        c.update(entry, worker=c.self_id)

    # --- attempts ---------------------------------------------------------------------------------------

    def _started(self, entry: TaskEntry) -> None:
        """An attempt of ``entry`` went out: it runs, and waits in the queue no more."""
        entry.move(TaskState.RUNNING)
        entry.queued_since_s = entry.stuck_since_s = entry.fallback_at_s = entry.fallback_check_s = None
        self.out[entry.ref.task_id] = entry
        self.queued.discard(entry.ref.task_id)

    def end_attempt(self, entry: TaskEntry, worker: str) -> Attempt | None:
        """``worker``'s attempt at ``entry`` is over (None if it had none)."""
        attempt = entry.attempts.pop(worker, None)
        if attempt is None:
            return None
        if not entry.attempts:
            self.out.pop(entry.ref.task_id, None)
            if entry.stuck_since_s is not None:  # its stuck timeout counts again (see live)
                self.timer(entry.stuck_since_s + self.c.queue_timeout_s, entry, TIMEOUT)
        self.reconsider(entry)  # it may want another attempt now
        self.uncount(attempt)
        return attempt

    def call_off(self, entry: TaskEntry) -> None:
        """End every attempt of ``entry``; the workers running one are told to stop."""
        for worker in list(entry.attempts):
            attempt = self.end_attempt(entry, worker)
            if attempt is not None and not attempt.local:
                self.c.effects.append(CancelAttempt(entry.ref.task_id, worker))

    def uncount(self, attempt: Attempt) -> None:
        """The attempt no longer occupies a slot of its worker (it ended, or committed and only waits)."""
        if attempt.counted:
            attempt.counted = False
            self.freed = True
            inflight = self.c.inflight
            left = inflight.get(attempt.worker, 1) - 1
            if left > 0:
                inflight[attempt.worker] = left
            else:
                inflight.pop(attempt.worker, None)

    def finished(self, entry: TaskEntry) -> None:
        """``entry`` became DONE (accepted or restored) or FAILED: it waits for nothing any more."""
        if entry.state is TaskState.DONE:
            self.done += 1
        self.queued.discard(entry.ref.task_id)

    # --- checks -----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Assert the index invariant (see Cost in the module docstring); for tests."""
        tasks = self.c.tasks.values()
        assert self.out == {e.ref.task_id: e for e in tasks if e.attempts}
        assert self.done == sum(e.state is TaskState.DONE for e in tasks)
        assert self.queued == {e.ref.task_id for e in tasks if e.queued_since_s is not None and not e.state.final}
        timed = {timer[1] for timer in self.timers if self.live(timer)}
        for e in tasks:
            if not self.may_want(e):
                continue
            tid = e.ref.task_id
            assert tid in self.unplaced, f"{tid} wants a placement but is not in unplaced"
            if e.queued_since_s is None:  # neither queued nor looked at: it must be due, or have a timer
                assert tid in self.due or tid in timed, f"{tid} wants a placement and nothing will look at it"


def attempt_budget_s(ref: TaskRef, expected_s: float, timeout_factor: float, *, wall: bool = True) -> float:
    """How long an attempt at ``ref`` may take before it times out: the offer, the guest's own wall limit over
    all its chunks (a worker that runs a legitimately long guest is never timed out) or ``timeout_factor`` times
    its expected duration if longer, the input and output transfers at TRANSFER_BYTES_PER_S_MIN, and a grace.
    ``wall`` False: without the wall limit (when it is *late*)."""
    work = expected_s * timeout_factor
    if wall:
        work = max(work, ref.chunk_count * ref.limits.wall_time_s)
    transfer = 2.0 * ref.input_bytes / TRANSFER_BYTES_PER_S_MIN  # the output is guessed as big as the input
    return OFFER_TIMEOUT_S + work + transfer + ATTEMPT_GRACE_S


def never_reason(ref: TaskRef, workers: list[scheduler.WorkerView], excluded: set[str],
                 local: scheduler.WorkerView | None, cfg: scheduler.SchedulerConfig) -> str:
    """Why no known peer could ever take ``ref``: each peer's reason (the first few), this peer's, and how many
    are excluded from the task or on its path."""
    parts: list[str] = []
    out = sum(1 for w in workers if w.peer_id in excluded or w.peer_id in ref.path)
    limited = [(w.peer_id, scheduler.ineligible(ref, w, cfg, busy_ok=True)) for w in workers
               if w.peer_id not in excluded and w.peer_id not in ref.path]
    shown = limited[:NEVER_SHOWN]
    parts.extend(f"{short_id(p)} {why}" for p, why in shown)
    if len(limited) > len(shown):
        parts.append(f"{len(limited) - len(shown)} more peer(s) like them")
    if out:
        parts.append(f"{out} peer(s) excluded (failed, lied or declined this task, or on its path)")
    if local is not None:
        why = scheduler.ineligible(ref, local, cfg, busy_ok=True)
        parts.append(f"this peer {why}" if why else "this peer may not run it")
    return "; ".join(parts)


def short_id(peer_id: str) -> str:
    """A peer id short enough for a reason a user reads (its last 8 characters, as the CLI shows them)."""
    return peer_id if len(peer_id) <= 12 else f"…{peer_id[-8:]}"


def _probe(tasks: list[TaskRef]) -> TaskRef | None:
    """A task with the componentwise smallest limits of ``tasks``, on the path they all share."""
    if not tasks:
        return None
    shared = set(tasks[0].path).intersection(*(t.path for t in tasks[1:]))
    return replace(tasks[0], limits=_smallest(t.limits for t in tasks),
                   path=tuple(p for p in tasks[0].path if p in shared))


def _smallest(limits: Iterable[ReceiptLimits]) -> ReceiptLimits:
    """The componentwise smallest of ``limits``."""
    lims = list(limits)
    return ReceiptLimits(min(x.fuel_max for x in lims), min(x.memory_bytes_max for x in lims),
                         min(x.wall_time_s for x in lims), min(x.output_bytes_max for x in lims))
