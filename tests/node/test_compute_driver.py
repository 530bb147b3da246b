"""The compute driver's own logic (node/compute.py), over trio memory streams under ``autojump_clock``: two or
three ``ComputeService``s with real behaviours, a fake sandbox and in-memory block stores
(tests/node/compute_harness.py). What the protocol decides is tested in core; here, that the driver carries it
out: streams, timers, cancellation, the journal, the block writer, and faults at the stream level."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.config import OFFER_TIMEOUT_S
from pangea_p2p.core.jobs.events import Event, Tick
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.net.framing import encode_uvarint, frame
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.journal import Journal
from pangea_p2p.node.protocols.compute import SEND_TIMEOUT_S

from .compute_harness import MemoryNet, Node, clock, output_of

ISSUER_MEMORY = 16 << 20  # below the 64 MiB the test jobs ask: the issuer cannot run them itself


@asynccontextmanager
async def memory_net() -> AsyncIterator[MemoryNet]:
    async with trio.open_nursery() as nursery:
        yield MemoryNet(nursery)
        nursery.cancel_scope.cancel()


def issuer(net: MemoryNet, **kw: Any) -> Node:
    return net.add("a", memory_bytes_max=ISSUER_MEMORY, serves=False, **kw)


def task_of(run: Any, i: int = 0) -> str:
    return str(run.spec.task_ids()[i])


async def test_an_offer_and_its_result_go_round_trip_and_the_journal_and_watch_follow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = Journal(tmp_path / "jobs.sqlite")
    async with memory_net() as net:
        a, b = issuer(net, journal=journal), net.add("b")
        run = a.submit([b"one", b"two"])
        watch = a.service.watch(run.spec.job_id)
        placed = watch.version  # the tasks sent out
        assert placed > 0
        assert not watch.done.is_set()
        await a.finished(run)
        assert a.outputs(run) == [frame_chunks([output_of(b"one")]), frame_chunks([output_of(b"two")])]
        assert dict(run.workers) == {b.peer_id: 2}
        assert sorted(s.message.ref.task_id for s in net.sent(codec.Offer, "a", "b")) == run.spec.task_ids()
        assert sorted(s.message.task_id for s in net.sent(codec.Result, "b", "a")) == run.spec.task_ids()
        assert b.sandbox.runs == [[b"one"], [b"two"]] or b.sandbox.runs == [[b"two"], [b"one"]]
        assert a.sandbox.runs == []
        # the API's long poll: every change bumps the version, the end sets done
        assert watch.done.is_set()
        assert watch.version >= placed + 3  # a task done, the other, the job's end
        (record,) = journal.jobs()
        assert record.spec == run.spec
        assert record.state is JobState.DONE
        assert {t: (r.state, r.output_cid, r.worker) for t, r in record.tasks.items()} == {
            t: (TaskState.DONE, run.task(t).output_cid, b.peer_id) for t in run.spec.task_ids()}
        assert a.network.provided == [run.spec.module_cid]  # the module announced, for workers to fetch
        a.service.close()


async def test_task_accepted_goes_out_only_for_a_task_still_unanswered_after_the_accept_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        b.sandbox.run_s = 2.0
        slow = a.submit([b"slow"])
        await a.finished(slow)
        (offer,) = net.sent(codec.Offer, "a", "b")
        (accepted,) = net.sent(codec.Accepted, "b", "a")
        (result,) = net.sent(codec.Result, "b", "a")
        assert accepted.at - offer.at == pytest.approx(b.config.accept_delay_s, abs=1e-6)
        assert result.at - offer.at == pytest.approx(2.0, abs=0.01)

        b.sandbox.run_s = 0.2  # answered within the delay: the result stands for the acceptance
        fast = a.submit([b"fast"])
        await a.finished(fast)
        assert net.sent(codec.Result, "b", "a", where=lambda s: s.message.task_id == task_of(fast))
        assert not net.sent(codec.Accepted, where=lambda s: s.message.task_id == task_of(fast))


async def test_commit_then_reveal_goes_across_the_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_net() as net:
        a, _, _ = issuer(net), net.add("b"), net.add("c")
        run = a.submit([b"vote"], verification="replicas:2")
        await a.finished(run)
        assert a.outputs(run) == [frame_chunks([output_of(b"vote")])]
        wire = net.wire
        for worker in ("b", "c"):
            (commit,) = net.sent(codec.Commitment, worker, "a")
            (reveal,) = net.sent(codec.RevealRequest, "a", worker)
            (result,) = net.sent(codec.Result, worker, "a")
            assert wire.index(commit) < wire.index(reveal) < wire.index(result), worker
            assert result.message.nonce, "a revealed result carries the nonce of its commitment"


async def test_a_broken_worker_stream_fails_its_tasks_over(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_net() as net:
        a, b, c = issuer(net), net.add("b", speed_fuel_per_s=4e9), net.add("c")
        b.sandbox.hold = trio.Event()  # b takes the task (the fastest) and sits on it
        run = a.submit([b"x"])
        await b.sandbox.started.wait()
        assert [s.dst for s in net.sent(codec.Offer)] == ["b"]
        net.link("a", "b").reset()
        await a.finished(run)
        assert dict(run.workers) == {c.peer_id: 1}
        reasons = run.task(task_of(run)).reasons
        assert any(r.startswith(f"{b.peer_id} unreachable: stream read failed") for r in reasons), reasons
        assert b.peer_id not in a.service.sessions
        assert b.sandbox.cancelled == 1  # b lost its issuer's stream too: the run is not wanted


async def test_an_issuer_stream_that_closes_aborts_its_tasks(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        b.sandbox.hold = trio.Event()
        run = a.submit([b"x"])
        await b.sandbox.started.wait()
        slots = b.config.worker.slots
        assert b.service.admission.free_slots() == slots - 1
        assert b.service.behaviour.serving(task_of(run)) is not None
        await net.link("a", "b").dialer.close()  # the issuer goes away
        await trio.testing.wait_all_tasks_blocked()
        assert b.sandbox.cancelled == 1
        assert b.sandbox.running == 0
        assert b.service.admission.free_slots() == slots
        assert b.service.behaviour.serving(task_of(run)) is None
        assert not net.sent(codec.Result, "b")


async def test_a_worker_that_stops_reading_is_given_up_after_the_offer_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_net() as net:
        a, _, c = issuer(net), net.add_deaf("d", speed_fuel_per_s=4e9), net.add("c")
        # an attempt expected to take 5 s at d: its deadline (offer + wall limit + grace) lies beyond the send timeout
        run = a.submit([b"x"], fuel_per_chunk_estimate=2 * 10**10)
        await a.finished(run)
        (to_d,) = net.sent(codec.Offer, "a", "d")
        (to_c,) = net.sent(codec.Offer, "a", "c")
        # the offer got no answer (not even TaskAccepted) by OFFER_TIMEOUT_S, before the send timeout: d counts as
        # unreachable and the task goes to c
        assert OFFER_TIMEOUT_S <= to_c.at - to_d.at < OFFER_TIMEOUT_S + 1.0 < SEND_TIMEOUT_S
        assert dict(run.workers) == {c.peer_id: 1}
        reasons = run.task(task_of(run)).reasons
        assert any("timed out answering the offer" in r for r in reasons), reasons


async def test_a_malformed_frame_lowers_trust_and_the_driver_keeps_serving(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        first = a.submit([b"first"])
        await a.finished(first)
        assert b.service.trust.score(a.peer_id, clock()) == 0
        with caplog.at_level(logging.WARNING, logger="pangea.compute"):
            await net.link("a", "b").dialer.write(frame(b"\xff\xff\xff not a compute message"))
            await trio.testing.wait_all_tasks_blocked()
        assert b.service.trust.score(a.peer_id, clock()) < 0
        assert any(r.getMessage() == "compute.bad_message" for r in caplog.records)
        second = a.submit([b"second"])  # on the same stream, which b still reads
        await a.finished(second)
        assert dict(second.workers) == {b.peer_id: 1}
        assert len(net.links) == 1


async def test_a_frame_over_the_size_cap_counts_as_malformed_and_ends_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        b.sandbox.hold = trio.Event()
        run = a.submit([b"x"])
        await b.sandbox.started.wait()
        link = net.link("a", "b")
        await link.dialer.write(encode_uvarint(codec.MESSAGE_BYTES_MAX + 1))
        await trio.testing.wait_all_tasks_blocked()
        assert b.service.trust.score(a.peer_id, clock()) < 0
        assert b.sandbox.cancelled == 1  # the stream ended: its issuer's tasks with it
        assert b.peer_id not in a.service.sessions  # b closed the stream: a heard of its end
        assert run.state is JobState.RUNNING


async def test_a_fetch_that_fails_is_answered_with_a_refusal_and_the_task_goes_elsewhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_net() as net:
        a, b, c = issuer(net), net.add("b", speed_fuel_per_s=4e9), net.add("c")
        b.network.broken = True
        big = bytes(range(256)) * ((codec.INPUT_INLINE_MAX >> 8) + 1)  # too big to ride in the offer: fetched
        run = a.submit([big])
        await a.finished(run)
        (refusal,) = net.sent(codec.Rejected, "b", "a")
        assert refusal.message.reason.startswith("gave up: could not fetch its input")
        assert "cannot fetch" in refusal.message.reason
        assert b.network.fetched == [(run.task(task_of(run)).ref.input_cid, (a.peer_id,))]
        assert b.sandbox.runs == []
        assert dict(run.workers) == {c.peer_id: 1}
        assert a.outputs(run) == [frame_chunks([output_of(big)])]


async def test_tasks_that_need_the_same_block_at_once_fetch_it_once(autojump_clock: trio.testing.MockClock) -> None:
    # Every task of a job names the same module: a worker given several at once fetched it once per task, so a
    # slow issuer failed them all at the same time.
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        run = a.submit([b"one", b"two"])
        await a.finished(run)
        module = run.task(task_of(run)).ref.module_cid
        assert len(b.sandbox.runs) == 2  # both ran on b, at the same time (two slots)
        assert [cid for cid, _ in b.network.fetched].count(module) == 1


async def test_blocks_kept_with_persist_are_written_by_the_writer(tmp_path: Path) -> None:
    # the real clock: the writer runs in a worker thread, which a virtual clock would race
    store = BlockStore(tmp_path / "blocks")
    written = trio.Event()
    taken: list[set[str]] = []
    real_written = store.written

    def spy(batch: dict[str, bytes]) -> None:
        real_written(batch)
        taken.append(set(batch))
        written.set()

    store.written = spy  # type: ignore[method-assign]
    async with memory_net() as net:
        a, _ = issuer(net, blocks=store), net.add("b")
        run = a.submit([b"p1", b"p2"])
        inputs = {t.ref.input_cid for t in run.tasks()}
        assert store.unwritten >= len(inputs)  # queued for the writer, not written on the event loop
        with trio.fail_after(30):
            await written.wait()
        assert inputs <= taken[0]
        reread = BlockStore(tmp_path / "blocks", memory_bytes_max=0)  # what a restarted peer reads
        assert all(reread.get(cid) is not None for cid in inputs)
        reread.close()
        a.service.close()


async def test_the_ticker_wakes_at_the_next_deadline_and_not_before(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_net() as net:
        a, b = issuer(net), net.add("b")
        handled: list[tuple[float, type, float | None]] = []
        behaviour = b.service.behaviour
        real_handle = behaviour.handle

        def spy(now: float, event: Event) -> Any:
            handled.append((now, type(event), behaviour.next_deadline()))
            return real_handle(now, event)

        behaviour.handle = spy  # type: ignore[method-assign]
        b.sandbox.run_s = 3.0
        await trio.sleep(100)  # idle: nothing is due, the ticker sleeps through it
        assert handled == []
        run = a.submit([b"x"])
        await a.finished(run)
        (offer,) = net.sent(codec.Offer, "a", "b")
        ticks = [(now, due) for now, kind, due in handled if kind is Tick]
        assert ticks, "the ticker never woke"
        for now, due in ticks:
            assert due is not None, f"a tick at {now} with nothing due"
            assert now >= due, f"a tick at {now}, before the deadline {due}"
        # the first: the TaskAccepted due one accept delay after the offer (the offer moved the deadline up)
        assert ticks[0][0] == pytest.approx(offer.at + b.config.accept_delay_s, abs=1e-6)
        assert len(ticks) <= 2
