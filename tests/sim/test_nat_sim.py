"""Peers behind NAT in the simulator (sim/nat.py): private workers get tasks through relays chosen by core's
RelayBook, the scheduler never dials one it cannot reach, circuits that a relay closes or loses cost no job,
big inputs go only to directly reachable workers, and a run is still fixed by its seed."""

from __future__ import annotations

import re

from pangea_p2p.sim.world import Simulation
from tests.sim.conftest import small


def run(**changes: object) -> tuple[Simulation, dict[str, object]]:
    sim = Simulation(small(keep_trace=True, **changes), "test")
    result = sim.run()
    assert not result.failed, f"{result.failed}\nreplay: {result.replay()}"
    assert result.metrics["jobs_done"] == result.metrics["jobs"], result.replay()
    return sim, result.metrics


def done_by(sim: Simulation) -> list[int]:
    """The worker of every accepted task (from the trace)."""
    return [int(m.group(1)) for line in sim.loop.records if (m := re.search(r" done \S+ by (-?\d+)$", line))]


def test_private_workers_serve_through_relays_and_every_job_finishes() -> None:
    sim, m = run(nat=0.8)
    nat = sim.nat
    assert nat is not None
    assert m["private_peers"] == 48
    assert m["relayed_messages"] > 0  # type: ignore[operator]
    private_done = [w for w in done_by(sim) if w >= sim.config.submitters and nat.private[w]]
    assert private_done, "no private worker got a task"
    # every reservation is on a public peer, within its slots, and each private peer holds at most relays_wanted
    for relay, holders in nat.holders.items():
        assert not nat.private[relay]
        assert len(holders) <= 32
    assert all(len(book.held()) <= 2 for book in nat.books.values())
    assert nat.counts["dials_failed"] == 0


def test_a_private_peer_without_a_relay_is_never_offered_a_task() -> None:
    # one public peer with 32 reservation slots for 59 private peers: 27 hold none
    sim, _ = run(nat=0.99)
    nat = sim.nat
    assert nat is not None
    cut_off = {i for i, book in nat.books.items() if not book.held()}
    assert cut_off
    assert nat.counts["dials_failed"] == 0  # the scheduler saw them unreachable (advert: private, no relay)
    assert not cut_off & {w for w in done_by(sim) if w >= sim.config.submitters}


def test_circuits_the_relays_close_or_lose_cost_no_job() -> None:
    sim, m = run(nat=0.7, relay_circuit_s=4.0, crash=0.3)
    nat = sim.nat
    assert nat is not None
    assert nat.counts["closed_duration"] > 0  # circuits closed at the relays' limit, mid-task for some
    assert nat.counts["relays_lost"] > 0  # crashed relays: their holders moved on
    assert m["wrong_accepted"] == 0


def test_a_circuits_byte_limit_closes_it_and_the_task_goes_on() -> None:
    # a task moves at most 20,000 input + 65,536 output bytes: it fits one circuit, but a few tasks do not
    sim, _ = run(nat=0.7, chunk_bytes=20_000, relay_circuit_bytes=90_000)
    assert sim.nat is not None
    assert sim.nat.counts["closed_bytes"] > 0


def test_big_inputs_go_only_to_directly_reachable_workers() -> None:
    sim, _ = run(nat=0.5, jobs=4, chunk_bytes=300_000)  # above relayed_input_bytes_max (256 KiB)
    nat = sim.nat
    assert nat is not None
    workers = [w for w in done_by(sim) if w >= sim.config.submitters]
    assert workers
    assert not [w for w in workers if nat.private[w]]
    assert nat.counts["relayed_messages"] == 0  # no offer went through a relay at all


def test_a_run_with_nat_is_fixed_by_its_seed() -> None:
    first = Simulation(small(nat=0.7, crash=0.2), "test").run()
    again = Simulation(small(nat=0.7, crash=0.2), "test").run()
    other = Simulation(small(nat=0.7, crash=0.2, seed=2), "test").run()
    assert first.digest == again.digest
    assert first.digest != other.digest
    without = Simulation(small(crash=0.2), "test").run()
    assert without.metrics["private_peers"] == 0
    assert without.digest != first.digest
