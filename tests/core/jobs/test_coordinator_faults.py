"""Coordinator: worker failures (timeouts, transport errors, departures, rejections), retries and their limit,
escalation of deterministic resource failures, the queue and its timeout, the local fallback, cancel()."""

from __future__ import annotations

import itertools
import random

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.jobs.config import (
    BACKOFF_S_MIN,
    BUSY_COOLDOWN_S,
    LOCAL_FALLBACK_AFTER_S,
    OFFER_TIMEOUT_S,
    RELOOK_S,
    TRANSFER_BYTES_PER_S_MIN,
    CoordinatorConfig,
    WorkerSource,
)
from pangea_p2p.core.jobs.effects import CancelAttempt, Dispatch, JobFinished, RequestReveal, RunLocal, TaskUpdate
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.splitting import SPLIT_RETURN_S, split_coordinator, split_task
from pangea_p2p.core.trust import Outcome, TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import FailureKind
from tests.core.jobs.coord_driver import (
    FUEL_PER_CHUNK,
    LIMITS,
    SUBMITTER,
    T0,
    Driver,
    FakeWorker,
    Msg,
    chunks_for,
    ident,
    make_tasks,
    pid,
    signed_failure,
    signed_result,
)

LOCAL = WorkerView(pid(SUBMITTER), 1e9, 2, 2, 10**12, 1 << 30, 300.0, 0.0, 0.0)


# an attempt that is never late before its hard deadline (its expected time x timeout_factor beyond its wall limit)
NEVER_LATE = {"config": CoordinatorConfig(timeout_factor=1000.0),
              "limits": ReceiptLimits(fuel_max=1_000_000, memory_bytes_max=64 << 20, wall_time_s=0.1,
                                      output_bytes_max=1 << 20)}


def silent_then_honest(**kw: object) -> Driver:
    """Worker ``slow`` is ranked first (faster) and never answers; ``b`` is honest."""
    return Driver([FakeWorker("slow", behaviour="silent", speed=2e9), FakeWorker("b")], chunks_for(1), **kw)  # type: ignore[arg-type]


# --- timeouts -------------------------------------------------------------------------------------------


def test_a_late_replica_of_a_vote_is_replaced_without_a_fault() -> None:
    c = FakeWorker("c", behaviour="silent", online=False)
    d = Driver([FakeWorker("a"), FakeWorker("slow", behaviour="silent"), c], chunks_for(1), policy="replicas:2")
    d.start()
    assert sorted(d.dispatched_to()) == sorted([pid("a"), pid("slow")])
    first = d.task("job/t0").deadline_of(pid("slow"))
    assert first is not None
    assert first < T0 + OFFER_TIMEOUT_S + LIMITS.wall_time_s + 10.0  # late well before its wall limit
    c.online = True
    effects = d.tick(first)
    assert CancelAttempt("job/t0", pid("slow")) in effects
    assert d.dispatched_to()[-1] == pid("c")  # replaced at once, no backoff
    assert f"{pid('slow')} is late: placed elsewhere (no fault" in " | ".join(d.task("job/t0").reasons)
    rec = d.trust.get(pid("slow"))
    assert rec is not None
    assert (rec.timeouts, rec.invalid) == (1, 0)  # slow is not wrong: a timeout (weak), no fault
    assert d.task("job/t0").failures == 0
    second = d.task("job/t0").deadline_of(pid("c"))
    assert second is not None
    # a answered in time: the task is not long, slow was; c gets as long as slow had, not twice (a withholder
    # cannot stretch the wait)
    assert second - first == pytest.approx(first - T0, rel=0.2)


def test_when_no_replica_answers_in_time_the_next_one_gets_twice_as_long() -> None:
    c = FakeWorker("c", behaviour="silent", online=False)
    d = Driver([FakeWorker("a", behaviour="silent"), FakeWorker("b", behaviour="silent"), c], chunks_for(1),
               policy="replicas:2")
    d.start()
    first = d.task("job/t0").deadline_of(pid("a"))
    assert first is not None
    c.online = True
    d.tick(first)  # both late at once: nobody answered, the task may be long
    assert pid("c") in d.dispatched_to()
    second = d.task("job/t0").deadline_of(pid("c"))
    assert second is not None
    assert second - first >= 1.9 * (first - T0 - OFFER_TIMEOUT_S) + OFFER_TIMEOUT_S


def test_a_timed_out_attempt_is_cancelled_and_retried_on_another_worker_after_the_backoff() -> None:
    # beyond its hard deadline (the task's own wall limit: no honest run lasts longer), not just late
    d = silent_then_honest(**NEVER_LATE)
    d.start()
    assert d.dispatched_to() == [pid("slow")]
    deadline = d.task("job/t0").deadline_of(pid("slow"))
    assert d.next_deadline() == deadline
    assert T0 < deadline < T0 + 60

    assert d.tick(deadline - 0.001) == []  # not yet
    effects = d.tick(deadline)
    assert CancelAttempt("job/t0", pid("slow")) in effects
    assert not [e for e in effects if isinstance(e, Dispatch)]  # backoff first
    entry = d.task("job/t0")
    assert entry.state is TaskState.PENDING
    assert entry.not_before_s > deadline
    assert entry.not_before_s <= deadline + 1.5 * BACKOFF_S_MIN
    assert d.next_deadline() == entry.not_before_s
    assert "timed out" in d.explain("job/t0")
    assert d.trust.score(pid("slow"), d.now) < 0  # slow costs a little trust

    assert d.tick(entry.not_before_s - 1e-6) == []  # still backing off
    d.tick(entry.not_before_s)
    assert d.dispatched_to() == [pid("slow"), pid("b")]
    assert d.job.state is JobState.DONE
    (done,) = d.updates("job/t0", TaskState.DONE)
    assert done.worker == pid("b")


def test_an_attempt_deadline_covers_the_tasks_own_wall_limit_and_transfer_and_the_worker_is_told_it() -> None:
    # expected ~1 ms on a fast worker: the deadline still covers a guest that legitimately runs its wall limit
    d = Driver([FakeWorker("a", speed=1e12)], chunks_for(1, per_task=3), auto=False, deadline_s=T0 + 3600.0)
    d.start()
    assert d.task("job/t0").deadline_of(pid("a")) == T0 + OFFER_TIMEOUT_S  # until it says it took the task
    d.deliver(0)  # accepted
    (offer,) = d.dispatches()
    deadline = offer.task.deadline_s  # the offer says when the answer is due
    input_bytes = offer.task.input_bytes
    assert deadline >= T0 + OFFER_TIMEOUT_S + 3 * LIMITS.wall_time_s + 2 * input_bytes / TRANSFER_BYTES_PER_S_MIN
    result = d.take("result", "a")
    late = d.task("job/t0").deadline_of(pid("a"))
    assert late is not None
    assert late < deadline
    d.tick(late)  # far beyond its expected time: a backup would go elsewhere (there is no other worker)...
    assert "is late: a backup goes elsewhere (it runs on" in " | ".join(d.task("job/t0").reasons)
    assert d.task("job/t0").deadline_of(pid("a")) == deadline  # ... and it runs on to its hard deadline
    d.tick(T0 + 3 * LIMITS.wall_time_s)  # an honest worker still running its long guest: not timed out
    assert d.send(result)
    assert d.job.state is JobState.DONE
    assert d.trust.get(pid("a")) is None  # no timeout recorded
    # capped by the task's own deadline (the job's, or what a delegator was given)
    short = Driver([FakeWorker("a")], chunks_for(1), auto=False, deadline_s=T0 + 5.0)
    short.start()
    assert short.dispatches()[0].task.deadline_s == pytest.approx(T0 + 5.0)


def test_a_splits_parts_are_due_before_the_deadline_the_delegator_was_given() -> None:
    (ref,) = make_tasks(chunks_for(1, per_task=4), deadline_s=T0 + 100.0)
    parts = split_task(ref, frame_chunks(chunks_for(1, per_task=4)[0]), 2, "me")
    assert [p.deadline_s for p, _ in parts] == [T0 + 100.0 - SPLIT_RETURN_S] * 2


def test_a_late_answer_from_a_timed_out_worker_is_ignored() -> None:
    d = Driver([FakeWorker("a", speed=2e9), FakeWorker("b")], chunks_for(1), auto=False)
    d.start()
    d.deliver(0)  # accepted
    late = d.take("result", "a")
    d.tick(d.task("job/t0").deadline_of(pid("a")))  # late: a backup goes to b (it stays silent: its answers wait)
    b_answers, d.inbox = d.inbox, []
    assert d.dispatched_to() == [pid("a"), pid("b")]
    d.tick(d.task("job/t0").deadline_of(pid("a")))  # a's hard deadline: timed out
    assert d.send(late) == []
    assert d.task("job/t0").state is TaskState.RUNNING  # b's backup runs on
    assert len(b_answers) == 2  # (its acceptance and result, not delivered)
    rec = d.trust.get(pid("a"))
    assert rec is not None
    assert rec.invalid == 0
    assert rec.timeouts == 1


# --- transport errors, departures, rejections ----------------------------------------------------------


def test_a_transport_error_retries_on_another_worker_without_a_trust_penalty() -> None:
    d = Driver([FakeWorker("down", behaviour="unreachable", speed=2e9), FakeWorker("b")], chunks_for(1))
    d.start()
    d.run_to_end()
    assert d.dispatched_to() == [pid("down"), pid("b")]
    assert d.job.state is JobState.DONE
    assert d.trust.score(pid("down"), d.now) == 0.0
    assert any("unreachable: connection refused" in r for r in d.task("job/t0").reasons)


def test_unreachable_workers_do_not_use_up_the_retries() -> None:
    # a partition: the three fastest workers are on the other side; retries_max 0 allows no worker fault at all
    far = [FakeWorker(f"far{i}", behaviour="unreachable", speed=3e9) for i in range(3)]
    d = Driver([*far, FakeWorker("near")], chunks_for(1), retries_max=0)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.explain("job/t0")
    sent = d.dispatched_to()
    assert set(sent[:3]) == {w.peer_id for w in far}
    assert sent[3:] == [pid("near")]
    entry = d.task("job/t0")
    assert (entry.failures, entry.unreachable) == (0, 3)
    for w in far:
        assert d.trust.score(w.peer_id, d.now) == 0.0


def test_a_partition_delays_a_task_until_the_job_deadline_one_offer_per_cool_down() -> None:
    config = CoordinatorConfig(unreachable_cooldown_s=5.0)
    d = Driver([FakeWorker("far", behaviour="unreachable")], chunks_for(1), config=config, deadline_s=T0 + 120.0)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert "the job's deadline passed" in finished.reason
    assert "unreachable" in d.explain("job/t0")
    times = [t for t, _ in d.offers]
    assert 4 <= len(times) <= 120 / 5.0 + 1  # it kept trying, once per cool-down at most
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))
    assert d.now == pytest.approx(T0 + 120.0)  # failed at the deadline, not before


def test_a_partition_that_heals_lets_the_task_finish_however_long_it_lasted() -> None:
    config = CoordinatorConfig(unreachable_cooldown_s=5.0)
    far = FakeWorker("far", behaviour="unreachable")
    d = Driver([far], chunks_for(3), config=config)
    d.start()
    for k in range(1, 61):  # 300 s of partition: far more than any queue timeout
        d.tick(T0 + 5.0 * k)
    assert d.job.state is JobState.RUNNING
    assert all(t.state is not TaskState.FAILED for t in d.job.tasks())
    far.behaviour = "honest"  # healed
    d.run_to_end()
    assert d.job.state is JobState.DONE


def test_an_unreachable_worker_cools_down_for_every_task_and_job_of_the_peer() -> None:
    config = CoordinatorConfig(unreachable_cooldown_s=20.0)
    workers = [FakeWorker("far", behaviour="unreachable", speed=3e9), FakeWorker("near")]
    d1 = Driver(workers, chunks_for(1), config=config)
    d1.start()
    d1.run_to_end()
    assert d1.dispatched_to() == [pid("far"), pid("near")]
    # another job of the same peer (coordinators share its Reachability) does not try "far" during the cool-down
    d2 = Driver(workers, chunks_for(2), config=config, now=d1.now + 1.0, reachability=d1.behaviour.reachability)
    d2.start()
    d2.run_to_end()
    assert d2.job.state is JobState.DONE
    assert pid("far") not in d2.dispatched_to()
    # after the cool-down it is a candidate again (the fastest), and any answer from it clears it at once
    assert d1.behaviour.reachability.cooling(d1.now + 20.0) == frozenset()
    reach = Reachability()
    reach.mark_unreachable("w", 100.0)
    assert reach.cooling(50.0) == {"w"}
    assert reach.next_expiry(50.0) == 100.0
    reach.mark_reachable("w")
    assert reach.cooling(50.0) == frozenset()


def test_reachability_is_bounded() -> None:
    reach = Reachability(entries_max=8)
    for i in range(100):
        reach.mark_unreachable(f"w{i}", 1000.0 + i)
    assert len(reach.cooling(0.0)) <= 8
    assert "w99" in reach.cooling(0.0)  # the latest to expire are kept


def test_an_offer_nobody_answers_counts_as_unreachable_not_as_a_worker_fault() -> None:
    d = Driver([FakeWorker("mute", behaviour="mute", speed=3e9), FakeWorker("b")], chunks_for(1), retries_max=0)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.explain("job/t0")
    assert d.dispatched_to() == [pid("mute"), pid("b")]
    assert any("timed out answering the offer" in r for r in d.task("job/t0").reasons)
    rec = d.trust.get(pid("mute"))
    assert rec is not None
    assert rec.timeouts == 1  # it still costs a little trust, as any timeout


def test_an_unreachable_replica_is_placed_again_not_counted_as_a_no_show() -> None:
    far = [FakeWorker(f"far{i}", behaviour="unreachable") for i in range(4)]
    near = [FakeWorker(f"near{i}") for i in range(3)]
    d = Driver([*far, *near], chunks_for(1), policy="replicas:3", retries_max=0)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.explain("job/t0")
    entry = d.task("job/t0")
    assert entry.failures == 0
    vote = entry.vote
    assert vote is not None
    assert vote.dispatched == 3  # no replica was added for the unreachable ones: they never ran it
    assert len(vote.votes) >= 2
    assert set(vote.votes) <= {w.peer_id for w in near}


def test_a_departed_worker_has_its_tasks_reassigned() -> None:
    d = Driver([FakeWorker("gone", speed=2e9, slots=4), FakeWorker("b", slots=4)], chunks_for(2), auto=False)
    d.start()
    assert d.dispatched_to() == [pid("gone"), pid("gone")]
    on_gone = [x.task.task_id for x in d.dispatches() if x.worker == pid("gone")]
    stale = [d.take("result", "gone", tid) for tid in on_gone]
    d.workers[0].online = False
    d.peer_gone(pid("gone"))
    assert pid("gone") not in d.behaviour.inflight
    for tid in on_gone:
        assert d.task(tid).state is TaskState.PENDING
        assert "left the network" in d.explain(tid)
    d.run_to_end()
    assert d.job.state is JobState.DONE
    for tid in on_gone:
        assert d.updates(tid, TaskState.DONE)[0].worker == pid("b")
    for msg in stale:  # what the departed worker still sends is ignored
        assert d.send(msg) == []
    d.check_invariants()


def test_a_declined_offer_goes_to_another_worker_at_once_without_penalty() -> None:
    d = Driver([FakeWorker("full", behaviour="reject", speed=2e9), FakeWorker("b")], chunks_for(1))
    d.start()
    assert d.dispatched_to() == [pid("full"), pid("b")]  # no backoff, no tick needed
    assert d.job.state is JobState.DONE
    assert d.trust.get(pid("full")) is None
    assert any("declined: busy" in r for r in d.task("job/t0").reasons)
    assert d.task("job/t0").failures == 0


def test_when_every_worker_declines_as_busy_the_task_waits_and_is_offered_again_after_the_cool_down() -> None:
    x, y = FakeWorker("x", behaviour="reject"), FakeWorker("y", behaviour="reject")
    d = Driver([x, y], chunks_for(1), queue_timeout_s=5.0)
    d.start()
    text = d.explain("job/t0")
    assert "declined" in text
    assert "queued: all 2 known workers are out of reach for now (busy or unreachable" in text
    assert d.dispatched_to() == [pid("x"), pid("y")]
    for k in range(1, 60):  # a minute of busy workers: each is offered the task again once per cool-down
        d.tick(T0 + k * RELOOK_S)
    assert d.job.state is JobState.RUNNING
    sent = d.dispatched_to()
    assert 10 <= len(sent) <= 2 * (60 / BUSY_COOLDOWN_S + 1)
    x.behaviour = "honest"
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.trust.get(pid("y")) is None  # busy is no fault


def test_a_worker_that_declines_for_another_reason_is_excluded_and_the_task_fails_when_none_is_left() -> None:
    d = Driver([FakeWorker("x", behaviour="reject", reject_reason="depth 9 above 8")], chunks_for(1),
               queue_timeout_s=30.0)
    d.start()
    assert d.dispatched_to() == [pid("x")]
    d.run_to_end()
    assert d.dispatched_to() == [pid("x")]  # never offered again
    assert d.job.state is JobState.FAILED
    assert d.now == pytest.approx(T0 + 30.0)
    assert "1 peer(s) excluded (failed, lied or declined this task" in d.finished()[0].reason


def test_a_signed_crash_report_is_retried_elsewhere_without_a_penalty() -> None:
    d = Driver([FakeWorker("crashy", behaviour="crash", speed=2e9), FakeWorker("b")], chunks_for(1))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.dispatched_to() == [pid("crashy"), pid("b")]
    rec = d.trust.get(pid("crashy"))
    assert rec is None or rec.invalid == 0
    assert any("reported WORKER_CRASHED" in r for r in d.task("job/t0").reasons)


# --- retries exhausted ---------------------------------------------------------------------------------


def test_retries_exhausted_fail_the_task_and_the_job_with_the_reason_chain() -> None:
    workers = [FakeWorker(n, behaviour="silent") for n in "abcde"]
    d = Driver(workers, chunks_for(3), retries_max=2)
    d.start()
    d.run_to_end()
    d.check_invariants()

    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert finished.state is JobState.FAILED
    assert "failed" in finished.reason
    assert "gave up after 3 failed attempts (retries_max 2)" in finished.reason
    # one task's failure does not stop the others: each ran out of retries on its own
    assert "(and 2 more); 0 of 3 tasks done" in finished.reason
    for tid in ("job/t0", "job/t1", "job/t2"):
        assert d.task(tid).state is TaskState.FAILED
        assert len(d.dispatched_to(tid)) == 3  # the first try and two retries, on three distinct workers
        assert len(set(d.dispatched_to(tid))) == 3
        chain = d.job.explain()[tid]
        assert sum("timed out" in r for r in chain) == 3
        assert chain[-1].startswith("failed: gave up after 3 failed attempts")
        assert d.updates(tid, TaskState.FAILED)
    assert d.behaviour.inflight == {}
    cancelled = {(c.task_id, c.worker) for _, c in d.cancelled}
    for x in d.dispatches():
        assert (x.task.task_id, x.worker) in cancelled  # every attempt ever sent was called off
    assert d.tick(d.now + 1_000) == []


# --- escalation ------------------------------------------------------------------------------------------


def test_out_of_fuel_is_retried_with_more_fuel() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    d = Driver([FakeWorker("w", behaviour="fuel_hungry", fuel_needed=10_000)], chunks_for(1), limits=limits,
               escalations_max=2, escalation_factor=4.0)
    d.start()
    d.run_to_end()
    assert [x.task.limits.fuel_max for x in d.dispatches()] == [1_000, 4_000, 16_000]
    assert all(x.task.limits.memory_bytes_max == 16 << 20 for x in d.dispatches())
    assert d.job.state is JobState.DONE, d.task("job/t0").reasons
    (done,) = d.updates("job/t0", TaskState.DONE)
    assert done.fuel_used == 10_000
    assert d.task("job/t0").escalations == 2
    assert d.trust.get(pid("w")) is None or d.trust.get(pid("w")).invalid == 0  # type: ignore[union-attr]


def test_escalation_goes_to_whichever_worker_fits_the_raised_limits() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    workers = [FakeWorker("w", behaviour="fuel_hungry", fuel_needed=3_000, fuel_max=2_000, speed=2e9),
               FakeWorker("big", behaviour="fuel_hungry", fuel_needed=3_000)]
    d = Driver(workers, chunks_for(1), limits=limits, escalation_factor=4.0)
    d.start()
    d.run_to_end()
    assert [(x.worker, x.task.limits.fuel_max) for x in d.dispatches()] == [(pid("w"), 1_000), (pid("big"), 4_000)]
    assert d.job.state is JobState.DONE


def test_out_of_fuel_beyond_escalations_max_fails_the_task() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    workers = [FakeWorker(n, behaviour="fuel_hungry", fuel_needed=100_000) for n in "abc"]
    d = Driver(workers, chunks_for(1), limits=limits, escalations_max=2, escalation_factor=4.0)
    d.start()
    d.run_to_end()
    assert [x.task.limits.fuel_max for x in d.dispatches()] == [1_000, 4_000, 16_000]
    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert "OUT_OF_FUEL" in finished.reason
    assert "deterministic" in finished.reason
    assert d.task("job/t0").escalations == 2
    chain = " | ".join(d.task("job/t0").reasons)
    assert "raising fuel to 4000 (escalation 1 of 2)" in chain
    assert "raising fuel to 16000 (escalation 2 of 2)" in chain
    for w in workers:  # a deterministic failure is the task's, not the worker's
        rec = d.trust.get(w.peer_id)
        assert rec is None or rec.invalid == 0


def test_escalation_stays_within_what_known_peers_accept_and_then_fails_saying_so() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    workers = [FakeWorker(n, behaviour="fuel_hungry", fuel_needed=100_000, fuel_max=10_000) for n in "ab"]
    d = Driver(workers, chunks_for(1), limits=limits, escalations_max=5, escalation_factor=4.0)
    d.start()
    d.run_to_end()
    assert [x.task.limits.fuel_max for x in d.dispatches()] == [1_000, 4_000, 10_000]  # not 16,000: nobody takes it
    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert "it needs more than 10000 fuel, the most any known peer accepts" in finished.reason
    assert d.task("job/t0").escalations == 2
    assert d.now < T0 + 5.0  # at once, not after a queue timeout


# --- queue, queue timeout, local fallback ------------------------------------------------------------------


def test_with_no_worker_the_task_queues_and_is_placed_when_one_appears() -> None:
    d = Driver([], chunks_for(1))
    d.start()
    assert d.dispatches() == []
    (update,) = d.updates("job/t0")
    assert update.state is TaskState.PENDING
    assert "no worker is known yet" in update.reason
    assert "queued: no worker is known yet" in d.explain("job/t0")
    assert d.next_deadline() == pytest.approx(T0 + RELOOK_S)  # a look every second, not a busy loop

    d.tick(T0 + 5)
    assert d.dispatches() == []
    d.tick(T0 + 300)  # far past the queue timeout: with no peer known at all (a partition?) it waits on
    assert d.job.state is JobState.RUNNING
    d.add_worker(FakeWorker("late"))
    d.tick(T0 + 310)
    assert d.dispatched_to() == [pid("late")]
    assert d.job.state is JobState.DONE


def test_a_task_no_known_peer_could_ever_take_fails_after_the_queue_timeout_naming_limit_and_peers() -> None:
    d = Driver([FakeWorker("tiny", memory_max=1 << 20), FakeWorker("small", memory_max=2 << 20)], chunks_for(2),
               queue_timeout_s=45.0)
    d.start()
    assert "accepts at most 1 MiB" in d.explain("job/t0")
    assert d.tick(T0 + 44.9) == []
    d.tick(T0 + 45.0)
    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert "no known peer could ever take it within the 45 s queue timeout" in finished.reason
    for name, mib in (("tiny", 1), ("small", 2)):  # which peers, and which limit
        assert f"{pid(name)[-8:]} accepts at most {mib} MiB of memory (task needs 64 MiB)" in finished.reason
    assert "(and 1 more); 0 of 2 tasks done" in finished.reason
    assert d.dispatches() == []
    assert {e.state for e in d.job.tasks()} == {TaskState.FAILED}


def test_a_task_waiting_for_busy_workers_waits_past_the_queue_timeout_until_a_slot_frees() -> None:
    w = FakeWorker("w", behaviour="silent", slots=1)
    d = Driver([w], chunks_for(3), queue_timeout_s=5.0)
    d.start()
    assert d.dispatched_to() == [pid("w")]
    for k in range(1, 16):  # 15 s: far past the queue timeout, the other tasks wait for the busy worker
        d.tick(T0 + k)
    assert d.job.state is JobState.RUNNING
    assert "waiting for a worker: 1 worker(s) has no free task slot" in d.explain("job/t1")
    w.behaviour = "honest"
    d.add_worker(FakeWorker("v"))  # the first task's attempt times out on w (excluded from it): v takes it
    d.run_to_end()
    assert d.job.state is JobState.DONE


def test_local_fallback_runs_the_task_here_under_the_hash_policy() -> None:
    d = Driver([FakeWorker("tiny", memory_max=1 << 20)], chunks_for(2), local=LOCAL)
    d.start()
    local_runs = d.effects(RunLocal)
    assert len(local_runs) == 2
    assert d.dispatches() == []
    assert d.job.state is JobState.DONE
    for tid in ("job/t0", "job/t1"):
        (done,) = d.updates(tid, TaskState.DONE)
        assert done.worker == pid(SUBMITTER)
        assert done.fuel_used == FUEL_PER_CHUNK


def test_no_local_run_when_this_peer_does_not_fit_the_task_either() -> None:
    small_local = WorkerView(pid(SUBMITTER), 1e9, 2, 2, 10**12, 1 << 20, 300.0, 0.0, 0.0)
    d = Driver([], chunks_for(1), local=small_local)
    d.start()
    assert d.effects(RunLocal) == []
    assert d.task("job/t0").state is TaskState.PENDING


def test_no_local_run_for_the_parts_of_a_split_task() -> None:
    # the delegator signs for the whole: a leaf it signed itself under its own delegation receipt is a cycle
    parts = make_tasks(chunks_for(2), issuer=pid("delegator"))
    coord = split_coordinator(
        pid("delegator"), parts, trust=TrustBook(), guard=ReplayGuard(VerifyConfig()),
        source=WorkerSource(lambda now: [], lambda now: LOCAL), rng=random.Random(1), now=T0,
        inflight={}, reachability=Reachability(),
    )
    effects = coord.start(T0)
    assert [e for e in effects if isinstance(e, RunLocal)] == []
    assert all("queued" in " ".join(coord.view(p.task_id).reasons) for p in parts)


@pytest.mark.parametrize("policy", ["spot:1", "replicas:3", "adaptive"])
def test_under_checked_policies_a_task_no_worker_could_ever_take_runs_here(policy: str) -> None:
    # This peer trusts its own run more than any worker's; it is the fallback whatever the policy.
    d = Driver([FakeWorker("tiny", memory_max=1 << 20)], chunks_for(1), policy=policy, local=LOCAL)
    d.start()
    assert len(d.effects(RunLocal)) == 1
    assert d.dispatches() == []
    assert d.job.state is JobState.DONE
    assert "local fallback" in " ".join(d.task("job/t0").reasons)


def test_a_task_waiting_only_for_busy_workers_runs_here_after_a_short_wait() -> None:
    busy = FakeWorker("busy", behaviour="silent", slots=1)
    d = Driver([busy], chunks_for(2), policy="spot:1", local=LOCAL)
    d.start()
    assert d.dispatched_to() == [pid("busy")]  # t0 took the only slot; t1 queues rather than run here at once
    assert d.effects(RunLocal) == []
    assert "queued" in d.explain("job/t1")
    assert d.next_deadline() == pytest.approx(T0 + RELOOK_S)  # the workers looked at again: still busy
    d.tick(T0 + RELOOK_S)
    assert d.effects(RunLocal) == []
    wake = d.next_deadline()
    assert wake == pytest.approx(T0 + LOCAL_FALLBACK_AFTER_S)  # the fallback is a timer, not a busy loop
    d.tick(wake)
    assert len(d.effects(RunLocal)) == 1
    assert d.task("job/t1").state is TaskState.DONE


def test_a_silent_local_run_times_out_like_any_attempt() -> None:
    d = Driver([], chunks_for(1), local=LOCAL, local_behaviour="silent", retries_max=0)
    d.start()
    assert len(d.effects(RunLocal)) == 1
    deadline = d.next_deadline()
    assert deadline is not None
    d.tick(deadline)
    assert d.job.state is JobState.FAILED
    assert d.effects(CancelAttempt) == []  # nothing to tell a local run


# --- cancel ------------------------------------------------------------------------------------------------


def test_cancel_calls_off_every_outstanding_attempt_and_ends_the_job() -> None:
    workers = [FakeWorker(n, behaviour="silent") for n in "abc"]
    d = Driver(workers, chunks_for(4), policy="hash")
    d.start()
    out = {(x.task.task_id, x.worker) for x in d.dispatches()}
    assert len(out) == 4
    effects = d.at(T0 + 1).cancel()
    cancels = {(e.task_id, e.worker) for e in effects if isinstance(e, CancelAttempt)}
    assert cancels == out
    assert [e for e in effects if isinstance(e, JobFinished)] == [JobFinished(JobState.CANCELLED,
                                                                              "cancelled by the submitter")]
    cancelled_updates = {e.task_id for e in effects if isinstance(e, TaskUpdate) and e.state is TaskState.CANCELLED}
    assert cancelled_updates == {r.task_id for r in d.refs}
    assert d.job.state is JobState.CANCELLED
    assert d.behaviour.inflight == {}
    assert d.job.progress()["cancelled"] == 4
    assert d.at(T0 + 2).cancel() == []  # once
    assert d.tick(T0 + 100) == []
    assert d.next_deadline() is None


def test_results_after_cancel_are_ignored() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1), auto=False)
    d.start()
    result = d.take("result", "a")
    d.cancel()
    assert d.send(result) == []
    assert d.task("job/t0").state is TaskState.CANCELLED
    assert d.trust.get(pid("a")) is None


def test_cancel_keeps_tasks_already_done() -> None:
    d = Driver([FakeWorker("a", slots=1)], chunks_for(2), auto=False)
    d.start()
    d.deliver(0)  # accepted
    d.deliver(0)  # t0's result; t1 takes the slot
    assert d.job.progress()["done"] == 1
    d.cancel()
    assert d.job.progress()["done"] == 1
    assert d.job.progress()["cancelled"] == 1


def test_trust_outcomes_of_timeouts_are_not_invalid() -> None:
    d = silent_then_honest(**NEVER_LATE)
    d.trust.record(pid("slow"), Outcome.VALID, T0)
    d.start()
    d.run_to_end()
    rec = d.trust.get(pid("slow"))
    assert rec is not None
    assert rec.invalid == 0
    assert rec.timeouts == 1
    assert rec.run == 1  # slow is not wrong


def test_replicas_that_agree_on_out_of_fuel_escalate_together() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    workers = [FakeWorker(n, behaviour="fuel_hungry", fuel_needed=3_000) for n in "abc"]
    d = Driver(workers, chunks_for(1), policy="replicas:3", limits=limits, escalation_factor=4.0)
    d.start()
    d.run_to_end()
    d.check_invariants()
    assert d.job.state is JobState.DONE, d.task("job/t0").reasons
    fuel = [x.task.limits.fuel_max for x in d.dispatches()]
    assert fuel[:3] == [1_000] * 3  # the quorum agreed on OUT_OF_FUEL ...
    assert set(fuel[3:]) == {4_000}  # ... so the task started over with four times the fuel
    assert len(fuel) in (5, 6)  # two agreeing replicas of the new round are enough
    assert d.updates("job/t0", TaskState.DONE)[0].fuel_used == 3_000
    for w in workers:  # they were right about the fuel: nobody is punished
        rec = d.trust.get(w.peer_id)
        assert rec is None or rec.invalid == 0


def test_a_committed_replica_waits_for_its_round_without_timing_out() -> None:
    workers = [FakeWorker("a", speed=3e9), FakeWorker("b", speed=2e9), FakeWorker("slow", behaviour="silent")]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    d.send(d.take("accepted", "slow"))  # it accepted, then stays silent: a no-show of the vote when it times out
    d.commit_all(("a", "b"))
    slow_deadline = d.task("job/t0").deadline_of(pid("slow"))
    assert d.next_deadline() == slow_deadline  # only the silent replica can time out
    effects = d.tick(slow_deadline)
    assert CancelAttempt("job/t0", pid("slow")) in effects
    reveals = {e.worker for e in effects if isinstance(e, RequestReveal)}
    assert reveals == {pid("a"), pid("b")}  # nobody else will commit: the round opens with two
    d.run()
    assert d.job.state is JobState.DONE
    for name in "ab":
        rec = d.trust.get(pid(name))
        assert rec is not None
        assert (rec.valid, rec.timeouts) == (1, 0)


def test_memory_limit_exceeded_is_retried_with_more_memory() -> None:
    limits = ReceiptLimits(fuel_max=10_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    d = Driver([FakeWorker("w")], chunks_for(1), limits=limits, escalation_factor=2.0, auto=False)
    d.start()
    ref = d.dispatches()[0].task
    d.take("result", "w")
    tree = signed_failure(ident("w"), ref, FailureKind.MEMORY_LIMIT_EXCEEDED, d.now, d.wrng, fuel=700)
    effects = d.send(Msg("failure", "job/t0", pid("w"), tree))
    (again,) = [e for e in effects if isinstance(e, Dispatch)]
    assert again.worker == pid("w")
    assert again.task.limits == ReceiptLimits(10_000, 32 << 20, 10.0, 1 << 20)
    assert "raising memory to 32 MiB (escalation 1 of 2)" in d.explain("job/t0")
    d.run()  # the worker answers the raised offer honestly
    assert d.job.state is JobState.DONE
    assert d.trust.get(pid("w")) is None


def test_a_stale_result_for_the_limits_before_an_escalation_is_ignored() -> None:
    limits = ReceiptLimits(fuel_max=1_000, memory_bytes_max=16 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
    d = Driver([FakeWorker("w")], chunks_for(1), limits=limits, auto=False)
    d.start()
    first = d.dispatches()[0].task
    d.take("result", "w")
    d.send(Msg("failure", "job/t0", pid("w"), signed_failure(ident("w"), first, FailureKind.OUT_OF_FUEL, d.now,
                                                             d.wrng, fuel=1_000)))
    assert d.dispatches()[-1].task.limits.fuel_max == 4_000
    # an answer signed under the old limits arrives late: not a lie, just stale
    old_tree, old_out = signed_result(ident("w"), first, d.inputs[0], d.now, d.wrng)
    assert d.send(Msg("result", "job/t0", pid("w"), old_tree, old_out)) == []
    assert pid("w") in d.task("job/t0").out_with
    d.run()
    assert d.job.state is JobState.DONE
    assert d.trust.get(pid("w")) is None


# --- one task's failure, the job's deadline --------------------------------------------------------------


def test_a_failed_task_does_not_stop_the_others_and_the_job_ends_failed_with_what_is_done() -> None:
    d = Driver([FakeWorker("w", slots=4)], chunks_for(3), auto=False)
    d.start()
    result = d.take("result", "w", "job/t1")
    ref = next(x.task for x in d.dispatches("job/t1"))
    trap = signed_failure(ident("w"), ref, FailureKind.TRAP, d.now, random.Random(3))
    d.send(Msg("failure", "job/t1", result.worker, trap))
    assert d.task("job/t1").state is TaskState.FAILED
    assert d.job.state is JobState.RUNNING  # the others go on
    d.run()
    assert [d.task(f"job/t{i}").state for i in range(3)] == [TaskState.DONE, TaskState.FAILED, TaskState.DONE]
    assert d.job.state is JobState.FAILED
    (finished,) = d.finished()
    assert finished.reason.startswith("task job/t1 failed: ")
    assert finished.reason.endswith("; 2 of 3 tasks done (their outputs make a partial result)")
    assert d.task("job/t0").output_cid
    assert d.task("job/t2").output_cid


def test_at_the_job_deadline_every_waiting_task_fails_with_what_it_waited_for() -> None:
    d = Driver([FakeWorker("w", behaviour="silent", slots=1)], chunks_for(3), deadline_s=T0 + 8.0)
    d.start()
    d.run_to_end()
    assert d.now == pytest.approx(T0 + 8.0)
    assert d.job.state is JobState.FAILED
    assert {t.state for t in d.job.tasks()} == {TaskState.FAILED}
    assert "the job's deadline passed; last: queued: waiting for a worker: 1 worker(s) has no free task slot" in \
        d.explain("job/t1")
    assert "0 of 3 tasks done" in d.finished()[0].reason
    assert d.behaviour.inflight == {}
    assert [c.worker for _, c in d.cancelled] == [pid("w")]  # the attempt out was called off


def test_a_peer_running_its_own_task_again_is_not_a_replay_and_never_distrusts_itself() -> None:
    d = Driver([], chunks_for(1), local=LOCAL, local_behaviour="crash_once")
    d.start()
    d.run_to_end()
    assert d.local_runs == 2  # its sandbox crashed once, then the re-run here answered
    assert d.job.state is JobState.DONE
    assert "replayed" not in d.explain("job/t0")
    rec = d.trust.get(pid(SUBMITTER))
    assert rec is None or rec.invalid == 0
