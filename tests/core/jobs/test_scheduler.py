"""Task scheduling: complexity scoring, the local-or-delegate decision, worker choice, capacity, load."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pangea_p2p.core.jobs import scheduler
from pangea_p2p.core.jobs.scheduler import PlaceRequest, SchedulerConfig, place, split_sizes
from tests.core.jobs.helpers import task, worker

CFG = SchedulerConfig()


def test_complexity_grows_with_fuel_and_input() -> None:
    small, big_input = task(input_bytes=1_000), task(input_bytes=100_000_000)
    assert scheduler.complexity_s(small, 1e9) == pytest.approx(1.0, rel=1e-3)
    assert scheduler.complexity_s(big_input, 1e9) > scheduler.complexity_s(small, 1e9) + 1.9
    assert scheduler.complexity_s(small, 4e9) == pytest.approx(4.0, rel=1e-3)


def test_fuel_estimate_prefers_the_jobs_hint_then_what_was_learned_then_the_budget() -> None:
    t = task(chunks=4, fuel=10**9)
    assert scheduler.fuel_estimate(t, None) == 10**9
    assert scheduler.fuel_estimate(t, 1000.0) == 4000
    assert scheduler.fuel_estimate(task(chunks=4, fuel_estimate=500), 1000.0) == 2000
    assert scheduler.fuel_estimate(task(chunks=4, fuel=100, fuel_estimate=500), None) == 100  # capped by budget


def test_expected_duration_accounts_for_speed_transfer_and_queue() -> None:
    t = task(input_bytes=50_000_000)
    fast, slow = worker("a", speed=2e9), worker("b", speed=1e9)
    assert scheduler.expected_s(t, 2e9, fast, CFG) < scheduler.expected_s(t, 2e9, slow, CFG)
    queued = worker("c", speed=2e9, outstanding=2, free=4, total=2)
    assert scheduler.expected_s(t, 2e9, queued, CFG) > scheduler.expected_s(t, 2e9, fast, CFG)
    assert scheduler.expected_s(t, 2e9, fast, CFG, local=True) == pytest.approx(1.0)  # no transfer when local


@pytest.mark.parametrize(
    ("view", "why"),
    [
        (worker("w", fuel_max=10), "accepts at most 10 fuel"),
        (worker("w", memory_max=1 << 20), "accepts at most 1 MiB"),
        (worker("w", wall_max=1.0), "accepts at most 1 s"),
        (worker("w", free=0), "no free task slot"),
        (worker("w", free=2, outstanding=2), "no free task slot"),
        (worker("w", trust=-50.0), "trust -50.0 below"),
    ],
)
def test_worker_capacity_and_limits_are_respected(view: scheduler.WorkerView, why: str) -> None:
    problem = scheduler.ineligible(task(), view, CFG)
    assert problem is not None
    assert why in problem


def test_workers_ranked_by_speed_and_trust() -> None:
    t = task()
    ranked = scheduler.rank(t, 1e9, [worker("slow", speed=5e8), worker("fast", speed=2e9), worker("mid")], CFG)
    assert [w.peer_id for _, w in ranked] == ["fast", "mid", "slow"]
    # at equal speed, the trusted worker wins
    ranked = scheduler.rank(t, 1e9, [worker("new"), worker("trusted", trust=50.0)], CFG)
    assert ranked[0][1].peer_id == "trusted"


def test_delegation_decision_local_when_free_and_not_slower() -> None:
    t = task()
    local = worker("me", speed=1e9, rtt_s=0.0)
    assert place(PlaceRequest(t, 1e9, [worker("a", speed=1e9)], local), CFG).kind == "local"
    # a much faster neighbour wins over running here
    p = place(PlaceRequest(t, 1e9, [worker("a", speed=1e10)], local), CFG)
    assert p.kind == "delegate"
    assert p.workers == ("a",)
    # no local slot: delegate
    assert place(PlaceRequest(t, 1e9, [worker("a")], None), CFG).kind == "delegate"


def test_replicas_go_to_distinct_workers_and_never_to_excluded_ones() -> None:
    t = task()
    workers = [worker(p) for p in "abcd"]
    p = place(PlaceRequest(t, 1e9, workers, None, exclude=frozenset({"a"}), replicas=3), CFG)
    assert p.kind == "delegate"
    assert len(set(p.workers)) == 3
    assert "a" not in p.workers


def test_peers_on_the_task_path_are_never_chosen() -> None:
    t = task(path=("submitter", "b"))
    p = place(PlaceRequest(t, 1e9, [worker("b", speed=1e12), worker("c")], None), CFG)
    assert p.workers == ("c",)


def test_queue_with_a_reason_when_nobody_fits() -> None:
    t = task(memory=512 << 20)
    p = place(PlaceRequest(t, 1e9, [worker("a", memory_max=64 << 20), worker("b", free=0)], None), CFG)
    assert p.kind == "queue"
    assert "accepts at most 64 MiB" in p.reason
    assert "no free task slot" in p.reason
    assert "no worker is known yet" in place(PlaceRequest(t, 1e9, [], None), CFG).reason


def test_big_multi_chunk_task_is_split_when_allowed() -> None:
    t = task(chunks=8, fuel=10**12)  # ~1000 s on one 1e9-fuel/s worker
    workers = [worker(p) for p in "abcd"]
    p = place(PlaceRequest(t, 1e12, workers, worker("me"), may_split=True), CFG)
    assert p.kind == "split"
    assert 2 <= p.parts <= 5
    # not when the depth is used up, when there is one chunk, or when splitting is not allowed here
    deep = task(chunks=8, fuel=10**12, depth=2, depth_max=2)
    assert place(PlaceRequest(deep, 1e12, workers, None), CFG).kind != "split"
    assert place(PlaceRequest(task(chunks=1, fuel=10**12), 1e12, workers, None), CFG).kind != "split"
    assert place(PlaceRequest(t, 1e12, workers, None, may_split=False), CFG).kind != "split"


def test_load_distribution_over_repeated_placements() -> None:
    """Placing tasks one after another while counting what is out spreads them over equal workers."""
    workers = {p: worker(p, free=4, total=4) for p in "abcd"}
    outstanding = dict.fromkeys(workers, 0)
    for i in range(16):
        views = [replace(w, outstanding=outstanding[w.peer_id]) for w in workers.values()]
        p = place(PlaceRequest(task(f"j/t{i}"), 1e9, views, None), CFG)
        outstanding[p.workers[0]] += 1
    assert sorted(outstanding.values()) == [4, 4, 4, 4]


@pytest.mark.parametrize(
    ("chunks", "parts", "sizes"), [(8, 3, [3, 3, 2]), (2, 5, [1, 1]), (7, 1, [7]), (4, 4, [1] * 4)]
)
def test_split_sizes(chunks: int, parts: int, sizes: list[int]) -> None:
    assert split_sizes(chunks, parts) == sizes
    assert sum(split_sizes(chunks, parts)) == chunks


# --- defences against lying adverts (Sybils) ---------------------------------------------------------------


def test_an_unverified_advertised_speed_counts_at_most_the_cap() -> None:
    honest = [worker(p, speed=1e9) for p in "abcd"]
    liar = worker("liar", speed=1e11)  # advertises 100x
    assert scheduler.speed_cap([*honest, liar], CFG) == pytest.approx(2e9)  # 2 x the median
    measured = replace(worker("measured", speed=3e9), speed_verified=True)
    p = place(PlaceRequest(task(), 1e9, [*honest, liar, measured], None), CFG)
    assert p.workers == ("measured",)  # the liar ranks as a 2e9 worker, below a verified 3e9 one
    # a verified speed is never capped, an unverified one below the cap is left alone
    views = scheduler.capped([liar, replace(liar, peer_id="v", speed_verified=True), honest[0]], 2e9)
    assert [w.speed_fuel_per_s for w in views] == [2e9, 1e11, 1e9]


def test_replicas_with_an_rng_are_drawn_at_random_not_taken_by_rank() -> None:
    liars = [worker(f"s{i}", speed=1e11, free=64, total=64) for i in range(2)]
    honest = [worker(f"h{i}", speed=1e9) for i in range(8)]
    views = liars + honest
    # by rank (no rng) the two liars get two of the three replicas every time
    ranked = place(PlaceRequest(task(), 1e9, views, None, replicas=3), CFG)
    assert {"s0", "s1"} <= set(ranked.workers)
    rng = random.Random(7)
    both = 0
    picks: dict[str, int] = {}
    n = 2000
    for _ in range(n):
        p = place(PlaceRequest(task(), 1e9, views, None, replicas=3, rng=rng), CFG)
        assert p.kind == "delegate"
        assert len(set(p.workers)) == 3
        assert "drawn at random" in p.reason
        both += {"s0", "s1"} <= set(p.workers)
        for w in p.workers:
            picks[w] = picks.get(w, 0) + 1
    # each worker is drawn with probability 3/10; both liars together in 3*2*8/(10*9*8) = 1/15 of the tasks
    assert all(abs(c / n - 0.3) < 0.05 for c in picks.values()), picks
    assert abs(both / n - 1 / 15) < 0.02
    # the draw depends on the rng and the set of workers, not on their order
    a = place(PlaceRequest(task(), 1e9, views, None, replicas=3, rng=random.Random(1)), CFG)
    b = place(PlaceRequest(task(), 1e9, views[::-1], None, replicas=3, rng=random.Random(1)), CFG)
    assert a.workers == b.workers


def test_replica_draws_are_weighted_by_trust_within_bounds() -> None:
    assert scheduler.replica_weight(0.0, CFG) == 1.0
    assert scheduler.replica_weight(4.0, CFG) == pytest.approx(2.0)
    assert scheduler.replica_weight(1000.0, CFG) == CFG.replica_weight_max
    assert scheduler.replica_weight(-4.0, CFG) == pytest.approx(0.5)
    views = [worker("trusted", trust=40.0), worker("new"), worker("suspect", trust=-8.0)]
    rng = random.Random(3)
    firsts: dict[str, int] = {}
    for _ in range(3000):
        (w,) = place(PlaceRequest(task(), 1e9, views, None, rng=rng), CFG).workers
        firsts[w] = firsts.get(w, 0) + 1
    assert firsts["trusted"] > 2.5 * firsts["new"] > 2.5 * firsts["suspect"] > 0  # weights 4 : 1 : 1/3


def test_replica_draws_never_take_excluded_busy_or_distrusted_workers() -> None:
    views = [worker("a"), worker("b", free=0), worker("c", trust=-50.0), worker("d"), worker("e")]
    rng = random.Random(5)
    for _ in range(200):
        p = place(PlaceRequest(task(), 1e9, views, None, exclude=frozenset({"d"}), replicas=2, rng=rng), CFG)
        assert set(p.workers) == {"a", "e"}


def test_a_relayed_worker_gets_small_inputs_only() -> None:
    relayed = replace(worker("home"), link=scheduler.Link.RELAYED)
    cfg = SchedulerConfig(relayed_input_bytes_max=10_000)
    assert scheduler.ineligible(task(input_bytes=10_000), relayed, cfg) is None
    problem = scheduler.ineligible(task(input_bytes=10_001), relayed, cfg)
    assert problem is not None
    assert "only through a relay" in problem
    for link in (scheduler.Link.DIRECT, scheduler.Link.HOLE_PUNCHED):  # any size once the link is direct
        assert scheduler.ineligible(task(input_bytes=10**8), replace(relayed, link=link), cfg) is None


def test_a_big_input_goes_to_the_direct_worker_even_when_the_relayed_one_is_faster() -> None:
    fast_home = replace(worker("home", speed=4e9), link=scheduler.Link.RELAYED)
    slow_public = worker("public", speed=1e9)
    cfg = SchedulerConfig(relayed_input_bytes_max=10_000)
    small = place(PlaceRequest(task(input_bytes=1_000), 1e9, [fast_home, slow_public], None), cfg)
    assert small.workers == ("home",)
    big = place(PlaceRequest(task(input_bytes=1_000_000), 1e9, [fast_home, slow_public], None), cfg)
    assert big.workers == ("public",)
    alone = place(PlaceRequest(task(input_bytes=1_000_000), 1e9, [fast_home], None), cfg)
    assert alone.kind == "queue"
    assert "only through a relay" in alone.reason


def test_the_link_of_a_worker_follows_its_advert_unless_a_connection_says_otherwise() -> None:
    from pangea_p2p.core.capacity import LocalCapacity, decode_advert, encode_advert
    from pangea_p2p.core.identity import Identity

    ident = Identity(b"h" * 32)
    base = LocalCapacity(cores=2, memory_free_bytes=1 << 30, task_slots_total=2, task_slots_free=2,
                         speed_fuel_per_s=1e9, fuel_max=10**12, memory_bytes_max=1 << 30, wall_time_s_max=60.0,
                         software_version="0.1.0")
    relay = f"/ip4/10.0.0.1/tcp/4001/p2p/{Identity(b'r' * 32).peer_id}/p2p-circuit/p2p/{ident.peer_id}"

    def view(link: scheduler.Link | None = None, **changes: object) -> scheduler.WorkerView:
        data = encode_advert(ident, 1, 100.0, 130.0, replace(base, **changes))  # type: ignore[arg-type]
        return scheduler.WorkerView.from_advert(decode_advert(data), 0.0, None, 0, link)

    assert view().link is scheduler.Link.DIRECT  # unknown reachability: tried directly, as before
    assert view(reachability="public").link is scheduler.Link.DIRECT
    assert view(reachability="private", relay_addrs=(relay,)).link is scheduler.Link.RELAYED
    assert view(scheduler.Link.HOLE_PUNCHED, reachability="private", relay_addrs=(relay,)).link is (
        scheduler.Link.HOLE_PUNCHED)
    # private without a relay address yet, and no connection: it cannot be dialed (waits, like a busy worker)
    assert view(reachability="private").link is scheduler.Link.UNREACHABLE
    assert view(scheduler.Link.DIRECT, reachability="private").link is scheduler.Link.DIRECT  # it dialed us
    limited = view(reachability="private", relay_addrs=(relay,), relay_circuit_s=120, relay_circuit_bytes=1 << 20)
    assert (limited.relay_circuit_s, limited.relay_circuit_bytes) == (120.0, 1 << 20)


def test_a_private_worker_without_a_relay_gets_nothing_yet_and_its_task_waits() -> None:
    cut_off = replace(worker("home", speed=4e9), link=scheduler.Link.UNREACHABLE)
    problem = scheduler.ineligible(task(), cut_off, CFG)
    assert problem is not None
    assert "no relay reservation yet" in problem
    # it may hold one soon: the task waits for it (it does not fail as one no known peer could ever take)
    assert scheduler.ineligible(task(), cut_off, CFG, busy_ok=True) is None
    p = place(PlaceRequest(task(), 1e9, [cut_off, worker("public")], None), CFG)
    assert p.workers == ("public",)
    alone = place(PlaceRequest(task(), 1e9, [cut_off], None), CFG)
    assert alone.kind == "queue"


def test_a_relayed_worker_gets_only_tasks_that_fit_its_relays_circuits() -> None:
    cfg = SchedulerConfig(relayed_bandwidth_bytes_per_s=1e6)
    relayed = replace(worker("home", speed=1e9), link=scheduler.Link.RELAYED, relay_circuit_s=120.0,
                      relay_circuit_bytes=4 << 20)
    short = task(fuel=10**10, input_bytes=100_000)  # 10 s of fuel, 1.1 MB moved at most: ~11 s
    assert scheduler.ineligible(short, relayed, cfg) is None
    assert scheduler.longest_s(short, relayed, cfg) == pytest.approx(0.001 + 1.148576 + 10.0)
    long_run = task(fuel=2 * 10**11, chunks=20, input_bytes=100_000)  # 200 s of fuel, longer than a circuit lives
    problem = scheduler.ineligible(long_run, relayed, cfg)
    assert problem is not None
    assert "circuits live 120 s" in problem
    assert scheduler.ineligible(long_run, replace(relayed, link=scheduler.Link.DIRECT), cfg) is None
    # the whole fuel budget is capped by the wall-time limit over the chunks (10 s each in these tasks)
    assert scheduler.ineligible(task(fuel=2 * 10**11, chunks=3, input_bytes=100_000), relayed, cfg) is None
    # input plus the largest output must fit the circuit's bytes
    small_circuit = replace(relayed, relay_circuit_bytes=1 << 20)
    problem = scheduler.ineligible(short, small_circuit, cfg)
    assert problem is not None
    assert "carry 1048576 bytes" in problem
    # an advert that states no limit: this config's assumption (our relays' defaults)
    unstated = replace(relayed, relay_circuit_s=0.0, relay_circuit_bytes=0)
    assert scheduler.ineligible(long_run, unstated, SchedulerConfig(relay_circuit_s=100.0)) is not None
    assert scheduler.ineligible(long_run, unstated, SchedulerConfig(relay_circuit_s=300.0)) is None
    # even a fitting task cannot be relayed by a relay that takes no input this big
    assert scheduler.ineligible(task(input_bytes=300_000), relayed, cfg) is not None


def test_the_circuit_we_hold_must_live_long_enough_else_the_worker_waits_for_a_fresh_one() -> None:
    relayed = replace(worker("home"), link=scheduler.Link.RELAYED, relay_circuit_s=120.0)
    t = task(fuel=10**10)  # ~11 s at most on it
    assert scheduler.ineligible(t, replace(relayed, relay_circuit_age_s=100.0), CFG) is None  # 20 s left
    old = replace(relayed, relay_circuit_age_s=115.0)  # 5 s left: the relay closes it mid-task
    problem = scheduler.ineligible(t, old, CFG)
    assert problem is not None
    assert "closes in 5 s" in problem
    assert scheduler.ineligible(t, old, CFG, busy_ok=True) is None  # a fresh circuit will do: the task waits


def test_relayed_transfers_count_at_the_relayed_bandwidth() -> None:
    cfg = SchedulerConfig(relayed_bandwidth_bytes_per_s=1e6, relayed_input_bytes_max=1 << 20)
    t = task(input_bytes=800_000)
    direct = worker("direct", speed=1e9)
    relayed = replace(worker("relayed", speed=2e9), link=scheduler.Link.RELAYED)
    assert scheduler.expected_s(t, 1e9, relayed, cfg) == pytest.approx(0.001 + 0.8 + 0.5)
    assert scheduler.expected_s(t, 1e9, direct, cfg) == pytest.approx(0.001 + 0.016 + 1.0)
    # twice as fast, but its 800 kB crawl through the relay: the direct worker is expected sooner
    assert place(PlaceRequest(t, 1e9, [direct, relayed], None), cfg).workers == ("direct",)
    assert place(PlaceRequest(task(input_bytes=1000), 1e9, [direct, relayed], None), cfg).workers == ("relayed",)
