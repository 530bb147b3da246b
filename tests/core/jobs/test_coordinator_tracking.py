"""Coordinator: chunk tracking, progress and completion; worker selection, load and capacity; restore; determinism.

Synchronous tests of the sans-IO Coordinator against fake workers with real identities and real signed
receipts (coord_driver.py).
"""

from __future__ import annotations

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.effects import Dispatch, JobFinished, TaskUpdate
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.tree import verify_tree
from tests.core.jobs.coord_driver import (
    FUEL_PER_CHUNK,
    SUBMITTER,
    T0,
    Driver,
    FakeWorker,
    chunks_for,
    honest,
    pid,
)


def honest_output(chunks: list[bytes]) -> bytes:
    return frame_chunks([honest(c) for c in chunks])


def test_every_task_is_done_once_with_its_output_and_receipt_and_the_job_finishes_once() -> None:
    inputs = chunks_for(6, per_task=3)
    d = Driver([FakeWorker("a"), FakeWorker("b"), FakeWorker("c")], inputs)
    d.start()
    d.run_to_end()
    d.check_invariants()

    assert d.job.state is JobState.DONE
    assert [(f.state, f.reason) for f in d.finished()] == [(JobState.DONE, "")]
    assert d.job.progress() == {"pending": 0, "running": 0, "verifying": 0, "done": 6, "failed": 0, "cancelled": 0}
    for ref, chunks in zip(d.refs, inputs, strict=True):
        (done,) = d.updates(ref.task_id, TaskState.DONE)
        assert done.output_cid == cid_of(honest_output(chunks))
        assert done.fuel_used == 3 * FUEL_PER_CHUNK
        assert done.worker in d.dispatched_to(ref.task_id)
        # the journaled tree is the worker's receipt for exactly this task, and it verifies offline
        tree = ReceiptTree.decode(done.tree, VerifyConfig())
        binding = TaskBinding.of(job_id="job", task_id=ref.task_id, module_cid=ref.module_cid,
                                 input_cid=ref.input_cid, limits=ref.limits, issuer=pid(SUBMITTER), chunk_count=3)
        verified = verify_tree(tree, binding, d.now, VerifyConfig(), worker=done.worker,
                               output=honest_output(chunks))
        assert verified.fuel_used == 3 * FUEL_PER_CHUNK
        assert d.task(ref.task_id).output_cid == done.output_cid
    assert d.job.fuel_used() == 6 * 3 * FUEL_PER_CHUNK
    assert d.job.explain() == {}  # nothing is pending; the finished tasks' histories on request:
    history = d.job.explain(done=True)
    assert list(history) == [ref.task_id for ref in d.refs]
    for ref in d.refs:
        assert history[ref.task_id][-1] == f"done by {d.task(ref.task_id).worker} (unchecked)"
    # a finished job does nothing more
    assert d.tick(d.now + 1_000) == []
    assert d.next_deadline() is None
    assert len(d.finished()) == 1


def test_progress_counts_tasks_by_state_as_they_move() -> None:
    d = Driver([FakeWorker("a", slots=2)], chunks_for(4), auto=False)
    d.start()
    assert d.job.progress()["running"] == 2
    assert d.job.progress()["pending"] == 2
    assert len(d.dispatches()) == 2
    # the two tasks that did not fit say why
    waiting = [tid for tid, e in ((v.task_id, v) for v in d.job.tasks()) if e.state is TaskState.PENDING]
    assert all("no free task slot" in d.explain(tid) for tid in waiting)

    d.deliver(0)  # t0 accepted
    d.deliver(0)  # t0's result: its slot is free, and the queue moves at once (no tick)
    progress = d.job.progress()
    assert (progress["done"], progress["running"], progress["pending"]) == (1, 2, 1)
    assert len(d.dispatches()) == 3
    assert d.finished() == []
    d.run()  # every answer comes in; each frees the slot the next waiting task takes
    assert d.job.progress()["done"] == 4
    assert [f.state for f in d.finished()] == [JobState.DONE]


def test_updates_are_journaled_in_order_running_then_done() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1))
    d.start()
    states = [u.state for u in d.updates("job/t0")]
    assert states == [TaskState.RUNNING, TaskState.DONE]
    assert isinstance(d.log[-1], JobFinished)
    (done,) = d.updates("job/t0", TaskState.DONE)
    assert done.worker == pid("a")


@pytest.mark.parametrize("trusted", ["a", "b"])
def test_the_more_trusted_worker_is_preferred_when_otherwise_equal(trusted: str) -> None:
    d = Driver([FakeWorker("a"), FakeWorker("b")], chunks_for(1), auto=False)
    for _ in range(5):
        d.trust.record(pid(trusted), Outcome.VALID, T0)
    d.start()
    assert d.dispatched_to() == [pid(trusted)]


def test_a_faster_worker_is_preferred() -> None:
    d = Driver([FakeWorker("slow", speed=1e8), FakeWorker("fast", speed=1e10)], chunks_for(1), auto=False)
    d.start()
    assert d.dispatched_to() == [pid("fast")]


def test_tasks_are_spread_over_the_free_slots_of_equal_workers() -> None:
    workers = [FakeWorker(n, slots=2) for n in "abcd"]
    d = Driver(workers, chunks_for(8), auto=False)
    d.start()
    counts = {w.peer_id: d.dispatched_to().count(w.peer_id) for w in workers}
    assert sorted(counts.values()) == [2, 2, 2, 2]
    d.check_invariants()


def test_the_first_tasks_go_one_per_worker_before_any_worker_gets_a_second() -> None:
    workers = [FakeWorker(n, slots=4) for n in "abcd"]
    d = Driver(workers, chunks_for(4), auto=False)
    d.start()
    assert sorted(d.dispatched_to()) == sorted(w.peer_id for w in workers)


def test_worker_capacity_is_never_exceeded() -> None:
    workers = [FakeWorker("one", slots=1), FakeWorker("two", slots=2), FakeWorker("three", slots=3)]
    d = Driver(workers, chunks_for(15), auto=False)
    d.start()
    assert {w.peer_id: d.behaviour.inflight.get(w.peer_id, 0) for w in workers} == {
        pid("one"): 1, pid("two"): 2, pid("three"): 3,
    }
    assert d.job.progress()["pending"] == 9
    peak: dict[str, int] = {}
    for step in range(100):
        d.check_invariants()
        for peer, n in d.behaviour.inflight.items():
            peak[peer] = max(peak.get(peer, 0), n)
        if d.job.state.final:
            break
        if d.inbox:
            d.deliver(0)  # answers one at a time, ticks in between: slots free and fill again
        d.tick(T0 + step * 0.05)  # (within the offer timeout: an offer with no answer is an unreachable worker)
    assert d.job.state is JobState.DONE
    assert peak == {pid("one"): 1, pid("two"): 2, pid("three"): 3}


@pytest.mark.parametrize(
    ("small", "why"),
    [
        (FakeWorker("small", memory_max=32 << 20), "accepts at most 32 MiB"),
        (FakeWorker("small", fuel_max=1_000), "accepts at most 1000 fuel"),
        (FakeWorker("small", wall_max=1.0), "accepts at most 1 s"),
    ],
)
def test_a_worker_whose_limits_are_below_the_task_never_gets_it(small: FakeWorker, why: str) -> None:
    big = FakeWorker("big", slots=1)
    d = Driver([small, big], chunks_for(3), auto=False)
    d.start()
    # one task on the big worker, the others wait for it, with the small worker's obstacle as the reason
    assert d.dispatched_to() == [pid("big")]
    waiting = [tid for tid, e in ((v.task_id, v) for v in d.job.tasks()) if e.state is TaskState.PENDING]
    assert len(waiting) == 2
    assert all(why in d.explain(tid) for tid in waiting)
    d.run()  # each result frees the big worker's slot for the next task
    assert d.job.state is JobState.DONE
    assert set(d.dispatched_to()) == {pid("big")}


def test_replicas_of_a_task_go_to_distinct_workers() -> None:
    workers = [FakeWorker(n, slots=3) for n in "abcde"]
    d = Driver(workers, chunks_for(4), policy="replicas:3", auto=False)
    d.start()
    for ref in d.refs:
        to = d.dispatched_to(ref.task_id)
        assert len(to) == 3
        assert len(set(to)) == 3
    d.check_invariants()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    for ref in d.refs:
        to = d.dispatched_to(ref.task_id)
        assert len(to) == len(set(to))


def test_restore_marks_tasks_done_and_the_job_finishes_without_dispatching_them() -> None:
    inputs = chunks_for(3)
    first = Driver([FakeWorker("a")], inputs)
    first.start()
    first.run_to_end()
    journal = {u.task_id: u for u in first.updates("job/t0", TaskState.DONE) + first.updates("job/t2", TaskState.DONE)}

    d = Driver([FakeWorker("a")], inputs, seed=7, restored=journal)  # a restarted submitter
    d.blocks.data.update(first.blocks.data)  # its outputs are still on its disk
    d.start()
    assert [x.task.task_id for x in d.dispatches()] == ["job/t1"]  # only the task the journal did not hold
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == journal["job/t0"].output_cid
    assert d.job.fuel_used() == 3 * FUEL_PER_CHUNK

    done = {tid: first.updates(tid, TaskState.DONE)[0] for tid in ("job/t0", "job/t1", "job/t2")}
    everything = Driver([FakeWorker("a")], inputs, restored=done)
    everything.blocks.data.update(first.blocks.data)
    effects = everything.start()
    assert [e for e in effects if isinstance(e, Dispatch)] == []
    assert [e for e in effects if isinstance(e, JobFinished)] == [JobFinished(JobState.DONE, "")]


def scenario(seed: int) -> Driver:
    workers = [
        FakeWorker("a", speed=3e9), FakeWorker("slow", behaviour="silent", speed=2e9),
        FakeWorker("liar", behaviour="byzantine"), FakeWorker("b"), FakeWorker("c"), FakeWorker("d"),
    ]
    d = Driver(workers, chunks_for(5, per_task=3), policy="spot:2", seed=seed, retries_max=5)
    d.start()
    d.run_to_end()
    return d


def test_same_seed_and_events_give_the_same_effects() -> None:
    one, two = scenario(42), scenario(42)
    assert one.job.state is JobState.DONE
    assert one.log == two.log
    assert len(one.log) > 30
    assert any(isinstance(e, TaskUpdate) and e.state is TaskState.DONE for e in one.log)


def test_limits_are_those_of_the_task() -> None:
    limits = ReceiptLimits(fuel_max=50_000, memory_bytes_max=16 << 20, wall_time_s=2.0, output_bytes_max=4096)
    d = Driver([FakeWorker("a")], chunks_for(2, per_task=2), limits=limits)
    d.start()
    assert all(x.task.limits == limits for x in d.dispatches())
    assert d.job.state is JobState.DONE
