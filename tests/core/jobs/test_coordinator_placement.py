"""The coordinator's placement bookkeeping: big jobs queue cheaply, timers still fire (queue timeout, local
fallback, end of a backoff), and a tick with every slot busy does not walk the queue."""

from __future__ import annotations

import random

from pangea_p2p.core.jobs.config import RELOOK_S, WorkerSource
from pangea_p2p.core.jobs.coordinator import Coordinator
from pangea_p2p.core.jobs.effects import Dispatch, Effect, RunLocal
from pangea_p2p.core.jobs.model import JobState, VerificationPolicy
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.replay import ReplayGuard
from tests.core.jobs.coord_driver import Driver, FakeWorker, chunks_for, pid
from tests.core.jobs.helpers import task, worker

T0 = 1000.0
LIMITS_1S = ReceiptLimits(fuel_max=1_000_000_000, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)


class Net:
    """Workers with fixed slots; what the coordinator has out with each comes from its ``inflight`` map."""

    def __init__(self, slots: dict[str, int], local_slots: int = 0, local_memory: int = 1 << 30) -> None:
        self.slots = slots
        self.local_slots = local_slots
        self.local_memory = local_memory
        self.inflight: dict[str, int] = {}
        self.views_calls = 0
        self.local_calls = 0

    def views(self, now: float) -> list[WorkerView]:
        self.views_calls += 1
        return [worker(p, free=n, total=n, outstanding=self.inflight.get(p, 0)) for p, n in self.slots.items()]

    def local(self, now: float) -> WorkerView | None:
        self.local_calls += 1
        if not self.local_slots:
            return None
        n = self.local_slots
        return worker("submitter", free=n, total=n, rtt_s=0.0, outstanding=self.inflight.get("submitter", 0),
                      memory_max=self.local_memory)


def coordinator(net: Net, tasks: int, policy: str = "hash", queue_timeout_s: float = 60.0) -> Coordinator:
    return Coordinator(
        "submitter", [task(f"j/t{i}") for i in range(tasks)], VerificationPolicy.parse(policy), retries_max=3,
        escalations_max=0, escalation_factor=2.0, queue_timeout_s=queue_timeout_s, trust=TrustBook(),
        guard=ReplayGuard(VerifyConfig()), source=WorkerSource(net.views, net.local), rng=random.Random(7), now=T0,
        inflight=net.inflight,
    )


def dispatches(effects: list[Effect]) -> list[tuple[str, str]]:
    return [(e.task.task_id, e.worker) for e in effects if isinstance(e, Dispatch)]


def test_a_big_job_fills_the_slots_and_queues_every_other_task_with_its_reason() -> None:
    net = Net({"w1": 2, "w2": 2})
    coord = coordinator(net, 1000)
    out = dispatches(coord.start(T0))
    assert len(out) == 4
    assert sorted(w for _, w in out) == ["w1", "w1", "w2", "w2"]
    waiting = coord.explain()
    assert len(waiting) == 1000
    queued = [t for t, reasons in waiting.items() if any("queued" in r and "no free task slot" in r for r in reasons)]
    assert len(queued) == 996


def test_a_tick_with_every_slot_busy_does_not_walk_the_queue() -> None:
    net = Net({"w1": 2, "w2": 2})
    coord = coordinator(net, 1000)
    coord.start(T0)
    net.views_calls = 0
    assert coord.tick(T0 + 0.5) == []
    assert net.views_calls <= 1  # one look at the workers, not one per queued task


def test_a_free_slot_here_that_fits_none_of_the_tasks_does_not_make_a_tick_walk_the_queue() -> None:
    net = Net({"w1": 1}, local_slots=2, local_memory=16 << 20)  # the tasks ask for 64 MiB
    coord = coordinator(net, 500)
    assert dispatches(coord.start(T0)) == [("j/t0", "w1")]
    net.views_calls = net.local_calls = 0
    assert coord.tick(T0 + 0.5) == []
    assert net.views_calls <= 1
    assert net.local_calls <= 1


def test_a_freed_slot_goes_to_the_next_queued_task_and_a_declined_task_tries_elsewhere() -> None:
    net = Net({"w1": 1, "w2": 1})
    coord = coordinator(net, 10)
    first = dict(dispatches(coord.start(T0)))
    declined = next(tid for tid, w in first.items() if w == "w1")
    out = dispatches(coord.on_rejected(declined, "w1", "input too large", T0 + 0.1))
    # w1 is free again: the declined task may not go back to it (w2 is busy), so the next queued task does
    ((next_task, to),) = out
    assert to == "w1"
    assert next_task not in first
    assert coord.tasks[declined].attempts == {}


def test_queued_tasks_wait_for_busy_workers_past_the_queue_timeout() -> None:
    net = Net({"w1": 1})
    coord = coordinator(net, 10, queue_timeout_s=5.0)
    coord.start(T0)
    coord.on_accepted("j/t0", "w1", T0)  # w1 runs it (its answer is due after the task's wall limit)
    # this peer has no slot, so the queued tasks have no local-fallback timer to wake for
    for k in range(1, 20):  # looked at again every second, nothing frees up: past 5 s they wait, not fail
        assert coord.next_deadline(T0 + k - 1) == T0 + k * RELOOK_S
        assert coord.tick(T0 + k * RELOOK_S) == []
    assert coord.state is JobState.RUNNING
    assert not coord.failed


def test_a_checked_job_runs_a_waiting_task_here_after_the_fallback_delay() -> None:
    net = Net({"w1": 1}, local_slots=1)
    coord = coordinator(net, 3, policy="spot:1")
    assert dispatches(coord.start(T0)) == [("j/t0", "w1")]  # spot checks: this peer does not take tasks first
    assert coord.tick(T0 + 1.0) == []
    assert coord.next_deadline(T0 + 1.0) == T0 + 2.0
    local = [e.task.task_id for e in coord.tick(T0 + 2.0) if isinstance(e, RunLocal)]
    assert local == ["j/t1"]  # one local slot: the other waits on


def test_a_failed_attempt_is_retried_elsewhere_when_its_backoff_ends() -> None:
    net = Net({"w1": 1, "w2": 1})
    coord = coordinator(net, 1)
    ((tid, first),) = dispatches(coord.start(T0))
    assert dispatches(coord.on_transport_error(tid, first, "stream reset", T0 + 0.1)) == []  # backing off
    when = coord.next_deadline(T0 + 0.1)
    assert when is not None
    assert T0 + 0.1 < when <= T0 + 0.1 + 0.3  # 0.2 s x (0.5 .. 1.5)
    other = "w2" if first == "w1" else "w1"
    assert dispatches(coord.tick(when)) == [(tid, other)]


def test_a_checked_job_looks_here_again_when_this_peer_was_busy_at_the_fallback_delay() -> None:
    net = Net({"w1": 1}, local_slots=1)
    coord = coordinator(net, 3, policy="spot:1")
    coord.start(T0)
    net.inflight["submitter"] = 1  # this peer is busy (another job) when the waiting tasks may fall back
    assert [e for e in coord.tick(T0 + 2.0) if isinstance(e, RunLocal)] == []
    del net.inflight["submitter"]
    assert coord.next_deadline(T0 + 2.0) == T0 + 2.0 + RELOOK_S  # the workers are looked at again: still busy
    assert [e for e in coord.tick(T0 + 2.0 + RELOOK_S) if isinstance(e, RunLocal)] == []
    when = coord.next_deadline(T0 + 3.0)
    assert when == T0 + 4.0  # and this peer at its own timer
    local = [e.task.task_id for e in coord.tick(when) if isinstance(e, RunLocal)]
    assert local == ["j/t1"]


def test_a_task_queued_behind_another_job_goes_out_within_a_second_of_the_slot_freeing_up() -> None:
    # The slot frees up in another coordinator (another job of this peer): this one hears nothing of it, and
    # finds it when it looks at the workers again (every RELOOK_S while tasks wait), not at its queue timeout.
    net = Net({"w1": 1})
    first = coordinator(net, 1)
    ((tid, _),) = dispatches(first.start(T0))
    second = coordinator(net, 1)
    assert dispatches(second.start(T0)) == []  # w1's only slot is taken
    first.on_transport_error(tid, "w1", "stream reset", T0 + 0.3)  # the slot is free again
    when = second.next_deadline(T0 + 0.3)
    assert when == T0 + RELOOK_S
    assert dispatches(second.tick(when)) == [("j/t0", "w1")]


def test_explain_says_a_first_tasks_time_is_a_bound_and_bases_the_next_on_measured_fuel() -> None:
    # one worker with one slot: t0 goes out before anything was measured, t1 and t2 after t0's result (1000
    # fuel a chunk, on a worker of 1e9 fuel/s: 1 µs of work and 1 ms of round trip, not the 1 s of the budget)
    d = Driver([FakeWorker("a", slots=1)], chunks_for(3), limits=LIMITS_1S)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    sent = {t: next(r for r in reasons if r.startswith("sent to ")) for t, reasons in d.job.explain(done=True).items()}
    assert sent["job/t0"] == (f"sent to {pid('a')} (attempt 1, expected at most 1.001 s, from the fuel budget: no "
                              "result measured yet)")
    assert sent["job/t1"] == f"sent to {pid('a')} (attempt 1, expected 0.001 s from the fuel 1 measured result(s) used)"
    assert sent["job/t2"] == f"sent to {pid('a')} (attempt 1, expected 0.001 s from the fuel 2 measured result(s) used)"
