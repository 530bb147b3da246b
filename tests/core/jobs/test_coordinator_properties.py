"""Coordinator properties under random interleavings of answers, losses, departures, duplicates and time.

Safety is checked after every step (driver.check_invariants: a task DONE at most once, never more attempts
out than replicas, never more tasks on a worker than its slots, never two attempts of a task on one worker);
then a liveness phase delivers everything and follows the coordinator's deadlines: the job must end within a
bounded number of ticks, DONE with the honest outputs whenever the schedule lost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import JobState, TaskState
from tests.core.jobs.coord_driver import T0, Driver, FakeWorker, chunks_for, honest

POLICIES = ["hash", "spot:1", "spot:2", "replicas:2", "replicas:3", "adaptive"]
# policies that check every result before it is accepted (adaptive runs a task once and audits a sample of the
# results: a lie it did not draw is corrected only once the liar is caught, tests/core/jobs/test_audits.py)
CHECKED = ["spot:1", "spot:2", "replicas:2", "replicas:3"]
Schedule = list[tuple[str, int]]
OPS = ["deliver", "deliver", "deliver", "deliver", "drop", "tick", "gone", "dup"]


@dataclass(frozen=True)
class Scenario:
    policy: str
    tasks: int
    per_task: int
    slots: tuple[int, ...]
    byzantine: int | None  # index of the one Byzantine worker, if any
    seed: int
    retries_max: int = 16


def scenarios(policies: list[str], byzantine: bool) -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario,
        policy=st.sampled_from(policies),
        tasks=st.integers(1, 4),
        per_task=st.integers(1, 3),
        slots=st.lists(st.integers(1, 3), min_size=4, max_size=6).map(tuple),
        byzantine=st.integers(0, 3) if byzantine else st.none(),
        seed=st.integers(0, 2**32),
        retries_max=st.sampled_from([0, 1, 3, 16]),
    )


schedules = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1_000)), max_size=60)


def play(sc: Scenario, schedule: Schedule, *, events: bool = True) -> tuple[Driver, bool]:
    """Run the schedule (safety phase), then heal (liveness phase). Returns the driver and whether the
    schedule lost anything (a dropped message or a peer reported gone)."""
    workers = [
        FakeWorker(f"w{i}", slots=s, behaviour="byzantine" if i == sc.byzantine else "honest", speed=1e9 + i * 1e7)
        for i, s in enumerate(sc.slots)
    ]
    d = Driver(workers, chunks_for(sc.tasks, sc.per_task), policy=sc.policy, seed=sc.seed, retries_max=sc.retries_max,
               auto=False)
    d.start()
    d.check_invariants()
    lossy = False
    for op, arg in schedule:
        if op == "deliver" and d.inbox:
            d.deliver(arg % len(d.inbox))
        elif op == "drop" and d.inbox:
            lost = d.inbox[arg % len(d.inbox)]
            if lost.kind != "spot":  # this peer's own re-run always answers (RunSpotCheck's contract)
                d.inbox.remove(lost)
                lossy = True
        elif op == "tick":
            d.tick(d.now + arg % 30)
            lossy = lossy or arg % 30 > 0  # time passing may time out what was not answered yet
        elif op == "gone":
            d.peer_gone(workers[arg % len(workers)].peer_id)
            lossy = True
        elif op == "dup" and d.delivered:
            again = d.delivered[arg % len(d.delivered)]
            if again.kind != "commitment":  # a second commitment is a protocol violation, punished by design
                d.send(again)
        d.check_invariants()
    # liveness: nothing is lost any more, time follows the coordinator's deadlines
    d.auto = True
    d.run()
    d.check_invariants()
    for _ in range(400):
        if d.job.state.final:
            break
        deadline = d.next_deadline()
        assert deadline is not None, f"stuck: nothing can move the job ({d.job.explain()})"
        d.tick(max(d.now, deadline))
        d.check_invariants()
    assert d.job.state.final, f"the job did not end: {d.job.explain()}"
    if events:  # hypothesis statistics (--hypothesis-show-statistics)
        event(f"{sc.policy}: {d.job.state.value}")
        event(f"attempts per task: {min(5, len(d.offers) // sc.tasks)}")
    return d, lossy


def assert_honest_outputs(d: Driver, sc: Scenario) -> None:
    for ref, chunks in zip(d.refs, d.inputs, strict=True):
        entry = d.task(ref.task_id)
        if entry.state is TaskState.DONE:
            assert entry.output_cid == cid_of(frame_chunks([honest(c) for c in chunks])), (sc, entry.reasons)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(POLICIES, byzantine=False), schedule=schedules)
def test_honest_workers_any_interleaving_is_safe_and_the_job_ends(sc: Scenario, schedule: Schedule) -> None:
    d, lossy = play(sc, schedule)
    assert_honest_outputs(d, sc)
    assert len(d.finished()) == 1
    if not lossy:
        assert d.job.state is JobState.DONE, (sc, d.job.reason, d.job.explain())
    if d.job.state is JobState.DONE:
        done = [u.task_id for u in d.log if getattr(u, "state", None) is TaskState.DONE]
        assert sorted(done) == sorted(r.task_id for r in d.refs)
    for ref in d.refs:  # never more distinct replicas than the tally allowed, never one worker twice at once
        entry = d.task(ref.task_id)
        assert entry.replicas <= d.config.verify.replicas_max
    # the same seed and the same events replay to the same effects
    again, _ = play(sc, schedule, events=False)
    assert again.log == d.log


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(CHECKED, byzantine=True), schedule=schedules)
def test_one_byzantine_worker_never_gets_a_wrong_output_accepted(sc: Scenario, schedule: Schedule) -> None:
    d, lossy = play(sc, schedule)
    assert_honest_outputs(d, sc)
    liar = d.workers[sc.byzantine or 0].peer_id
    for ref in d.refs:
        assert d.task(ref.task_id).worker != liar or d.task(ref.task_id).state is not TaskState.DONE
    if not lossy and sc.retries_max >= 3:
        assert d.job.state is JobState.DONE, (sc, d.job.reason, d.job.explain())


def test_a_long_clean_run_finishes_quickly() -> None:
    sc = Scenario("replicas:3", 4, 3, (2, 2, 2, 2, 2), 0, 5)
    d, _ = play(sc, [("deliver", i) for i in range(60)], events=False)
    assert d.job.state is JobState.DONE
    assert d.now < T0 + 60
