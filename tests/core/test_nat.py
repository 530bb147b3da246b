"""Reachability from dial-back evidence and the choice of circuit relays (core/nat.py), pure and synchronous."""

from __future__ import annotations

import pytest

from pangea_p2p.core.capacity import LocalCapacity, decode_advert, encode_advert
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.nat import (
    CircuitLimit,
    DialBackConfig,
    DialBackThrottle,
    Reachability,
    ReachabilityConfig,
    ReachabilityModel,
    RelayBook,
    RelayCandidate,
    RelayConfig,
    circuit_addrs_of,
    relay_candidates,
    reservation_refusal,
)
from pangea_p2p.errors import ConfigError

T0 = 1_700_000_000.0


def test_reachability_is_unknown_until_someone_dials_back() -> None:
    m = ReachabilityModel()
    assert m.status(T0) is Reachability.UNKNOWN
    assert m.confidence(T0) == 0
    assert m.next_probe_at(T0) == T0  # never asked: ask now


def test_successful_dial_backs_make_a_peer_public_with_growing_confidence() -> None:
    m = ReachabilityModel(ReachabilityConfig(confidence_max=3))
    for i, dialer in enumerate(["a", "b", "c", "d"]):
        m.observe(dialer, True, T0 + i)
        assert m.status(T0 + i) is Reachability.PUBLIC
        assert m.confidence(T0 + i) == min(i + 1, 3)


def test_one_dialer_counts_once_however_often_it_answers() -> None:
    m = ReachabilityModel()
    m.observe("a", False, T0)
    m.observe("b", False, T0 + 1)
    for i in range(10):  # one peer repeating "I got through" cannot outvote two that did not
        m.observe("liar", True, T0 + 2 + i)
    assert m.status(T0 + 12) is Reachability.PRIVATE
    assert m.confidence(T0 + 12) == 2


def test_a_tie_goes_to_the_newest_answer() -> None:
    m = ReachabilityModel()
    m.observe("a", True, T0)
    m.observe("b", False, T0 + 1)
    assert m.status(T0 + 1) is Reachability.PRIVATE
    m.observe("a", True, T0 + 2)
    assert m.status(T0 + 2) is Reachability.PUBLIC


def test_evidence_expires_back_to_unknown() -> None:
    m = ReachabilityModel(ReachabilityConfig(evidence_ttl_s=100.0))
    m.observe("a", False, T0)
    m.observe("b", True, T0 + 50)
    assert m.status(T0 + 60) is Reachability.PUBLIC  # tie, newest wins
    assert m.status(T0 + 100) is Reachability.PUBLIC  # a's answer expired; b's alone
    assert m.status(T0 + 150) is Reachability.UNKNOWN


def test_evidence_is_bounded_to_the_newest_dialers() -> None:
    m = ReachabilityModel(ReachabilityConfig(evidence_max=3, confidence_max=3))
    for i in range(3):
        m.observe(f"old{i}", False, T0 + i)
    for i in range(3):
        m.observe(f"new{i}", True, T0 + 10 + i)
    assert m.status(T0 + 20) is Reachability.PUBLIC
    assert m.confidence(T0 + 20) == 3


def test_probes_come_often_while_unsure_and_rarely_once_sure() -> None:
    cfg = ReachabilityConfig(confidence_max=2, probe_interval_s=300.0, probe_interval_unknown_s=15.0)
    m = ReachabilityModel(cfg)
    m.probed(T0)
    assert m.next_probe_at(T0) == T0 + 15
    m.observe("a", True, T0 + 1)
    assert m.next_probe_at(T0 + 1) == T0 + 15  # confidence 1 of 2: still unsure
    m.observe("b", True, T0 + 2)
    assert m.next_probe_at(T0 + 2) == T0 + 300
    assert m.next_probe_at(T0 + 400) == T0 + 400  # overdue: now


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"evidence_max": 0}, "nat.evidence_max"), ({"confidence_max": 99}, "nat.confidence_max"),
     ({"probe_interval_unknown_s": 500.0}, "nat.probe_interval_s"), ({"evidence_ttl_s": 0.0}, "nat.evidence_ttl_s")],
)
def test_reachability_config_rejects_bad_values(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ReachabilityConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "key"), [({"relays_wanted": 0}, "relay.relays_wanted"),
                                             ({"renew_before_s": 4000.0}, "relay.renew_before_s")])
def test_relay_config_rejects_bad_values(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        RelayConfig(**kwargs)  # type: ignore[arg-type]


def cand(peer: str, rtt_s: float | None = 0.01, trust: float = 0.0) -> RelayCandidate:
    return RelayCandidate(peer, (f"/ip4/10.0.0.{len(peer)}/tcp/4001",), rtt_s, trust)


def test_relays_are_chosen_by_rtt_and_trust() -> None:
    book = RelayBook(RelayConfig(relays_wanted=2))
    plan = book.plan([cand("far", 0.2), cand("near", 0.01), cand("mid", 0.05), cand("bad", 0.001, trust=-50.0)], T0)
    assert [c.peer_id for c in plan.reserve] == ["near", "mid"]  # "bad" is below the trust floor
    assert not plan.drop
    assert not plan.renew
    trusted = RelayBook(RelayConfig(relays_wanted=1)).plan([cand("x", 0.011), cand("y", 0.010, trust=0.0),
                                                            cand("z", 0.011, trust=100.0)], T0)
    assert [c.peer_id for c in trusted.reserve] == ["z"]  # a long record outweighs a millisecond


def test_pending_reservations_are_not_asked_twice() -> None:
    book = RelayBook(RelayConfig(relays_wanted=2))
    first = book.plan([cand("a"), cand("b"), cand("c")], T0)
    assert len(first.reserve) == 2
    assert not book.plan([cand("a"), cand("b"), cand("c")], T0 + 1)


def test_a_relay_that_goes_away_is_replaced_and_one_that_refused_cools_down() -> None:
    cfg = RelayConfig(relays_wanted=2, failure_cooldown_s=60.0)
    book = RelayBook(cfg)
    a, b, c = cand("a", 0.01), cand("b", 0.02), cand("c", 0.03)
    plan = book.plan([a, b, c], T0)
    assert [x.peer_id for x in plan.reserve] == ["a", "b"]
    book.reserved(a, T0 + 3600, T0)
    book.failed("b", T0)  # b refused the reservation
    assert [x.peer_id for x in book.plan([a, b, c], T0 + 1).reserve] == ["c"]
    book.reserved(c, T0 + 3600, T0 + 1)
    assert book.held() == ["a", "c"]
    gone = book.plan([c, b], T0 + 2)  # a's advert expired: drop it; b still cools down, so nobody to add
    assert gone.drop == ("a",)
    assert not gone.reserve
    assert book.held() == ["c"]
    later = book.plan([c, b], T0 + 61)
    assert [x.peer_id for x in later.reserve] == ["b"]


def test_reservations_are_renewed_before_they_end_and_dropped_when_they_do() -> None:
    book = RelayBook(RelayConfig(relays_wanted=1, reservation_ttl_s=600.0, renew_before_s=60.0))
    a = cand("a")
    book.plan([a], T0)
    book.reserved(a, T0 + 600, T0)
    assert book.next_deadline() == T0 + 540
    assert not book.plan([a], T0 + 539)
    assert book.plan([a], T0 + 540).renew == (a,)
    assert not book.plan([a], T0 + 541)  # the renewal is out
    book.reserved(a, T0 + 1140, T0 + 541)
    assert book.next_deadline() == T0 + 1080
    assert book.plan([a], T0 + 1140).drop == ("a",)  # not renewed in time: gone, and ...
    assert book.held() == []


def test_a_relay_is_kept_while_it_qualifies_even_if_a_better_one_appears() -> None:
    book = RelayBook(RelayConfig(relays_wanted=1))
    slow = cand("slow", 0.5)
    book.plan([slow], T0)
    book.reserved(slow, T0 + 3600, T0)
    assert not book.plan([slow, cand("fast", 0.001)], T0 + 10)


def test_the_advertised_circuit_limit_is_the_least_any_held_relay_granted() -> None:
    book = RelayBook(RelayConfig(relays_wanted=3))
    a, b, c = cand("a", 0.01), cand("b", 0.02), cand("c", 0.03)
    assert book.circuit_limit() == CircuitLimit()  # no relay: nothing stated
    book.plan([a, b, c], T0)
    book.reserved(a, T0 + 3600, T0, CircuitLimit(600, 64 << 20))
    book.reserved(b, T0 + 3600, T0, CircuitLimit(120, 128 << 20))
    book.reserved(c, T0 + 3600, T0)  # a relay that stated no limit constrains nothing
    assert book.circuit_limit() == CircuitLimit(120, 64 << 20)
    book.failed("b", T0 + 1)  # b went away: its limit no longer counts
    assert book.circuit_limit() == CircuitLimit(600, 64 << 20)
    assert book.plan([b, c], T0 + 2).drop == ("a",)  # a's advert expired
    assert book.circuit_limit() == CircuitLimit()


def test_relay_addrs_name_the_relay_and_this_peer() -> None:
    book = RelayBook()
    a = RelayCandidate("R1", ("/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4002"))
    book.plan([a], T0)
    book.reserved(a, T0 + 3600, T0)
    assert book.relay_addrs("ME") == ["/ip4/10.0.0.1/tcp/4001/p2p/R1/p2p-circuit/p2p/ME",
                                      "/ip4/10.0.0.1/tcp/4002/p2p/R1/p2p-circuit/p2p/ME"]


BASE = LocalCapacity(cores=2, memory_free_bytes=1 << 30, task_slots_total=2, task_slots_free=2, speed_fuel_per_s=1e9,
                     fuel_max=10**12, memory_bytes_max=1 << 30, wall_time_s_max=60.0, software_version="0.1.0",
                     addrs=("/ip4/10.0.0.1/tcp/4001",))


def test_relay_candidates_are_public_peers_with_free_relay_slots() -> None:
    import dataclasses

    def adv(seed: bytes, **changes: object) -> tuple[str, object]:
        ident = Identity(seed * 32)
        cap = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
        return ident.peer_id, decode_advert(encode_advert(ident, 1, T0, T0 + 30, cap))

    me, mine = adv(b"m", reachability="public", relay_slots_free=5)
    relay, relay_ad = adv(b"r", reachability="public", relay_slots_free=5)
    _, full = adv(b"f", reachability="public", relay_slots_free=0)
    _, private = adv(b"p", reachability="private", relay_slots_free=5)
    _, unknown = adv(b"u", relay_slots_free=5)
    _, no_addr = adv(b"n", reachability="public", relay_slots_free=5, addrs=())
    got = relay_candidates([mine, relay_ad, full, private, unknown, no_addr], me,  # type: ignore[list-item]
                           rtt_s={relay: 0.02}, trust={relay: 3.0})
    assert got == [RelayCandidate(relay, BASE.addrs, 0.02, 3.0)]


def test_a_relay_grants_live_slots_within_its_limit_and_a_share_per_address() -> None:
    held = {"a": "1.2.3.4", "b": "1.2.3.4", "c": "5.6.7.8"}
    assert reservation_refusal("d", "9.9.9.9", held, 4, 2) is None
    full = reservation_refusal("d", "9.9.9.9", {**held, "x": None}, 4, 2)
    assert full == "all 4 reservation slots are taken"
    crowded = reservation_refusal("d", "1.2.3.4", held, 32, 2)
    assert crowded == "2 reservations are held from 1.2.3.4 already"
    assert reservation_refusal("a", "1.2.3.4", held, 3, 1) is None  # renewing its own: never refused
    # no direct connection (only a relayed one): no reservation, not even a renewal
    assert reservation_refusal("a", None, held, 32, 2) == "a reservation needs a direct connection to the relay"


def test_dial_back_requests_are_budgeted_per_address_and_in_all() -> None:
    throttle = DialBackThrottle(DialBackConfig(per_ip_burst=2, per_ip_rate_per_s=0.1, global_burst=3,
                                               global_rate_per_s=0.1, ips_max=2))
    assert throttle.refusal("1.1.1.1", T0) is None
    assert throttle.refusal("1.1.1.1", T0) is None
    assert throttle.refusal("1.1.1.1", T0) == "more than 2 dial-back requests from 1.1.1.1 lately"
    assert throttle.refusal("1.1.1.1", T0 + 10) is None  # one token back after 10 s
    assert throttle.refusal("2.2.2.2", T0 + 10) is None
    assert throttle.refusal("3.3.3.3", T0 + 10) == "too many dial-back requests lately"  # 4 served of 3 + 1
    assert throttle.refusal("3.3.3.3", T0 + 20) is None
    assert len(throttle._ips) == 2  # the least recent address is forgotten
    assert throttle.refusal(None, T0 + 30) is None  # loopback: counted in all only
    assert throttle.refusal(None, T0 + 30) == "too many dial-back requests lately"


def test_circuit_addrs_of_keeps_only_ways_to_that_peer() -> None:
    me, other, relay = (Identity(s * 32).peer_id for s in (b"a", b"o", b"r"))
    via = f"/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit"
    got = circuit_addrs_of(me, [
        "/ip4/10.0.0.9/tcp/4001",  # a direct address
        via,  # identify's form: the peer's own id left off
        f"{via}/p2p/{me}",  # the same, with it: one entry
        f"{via}/p2p/{other}",  # someone else's circuit address
        f"/ip4/10.0.0.2/tcp/1/p2p-circuit/p2p/{me}",  # no relay named
        f"/ip4/10.0.0.3/tcp/1/p2p/{relay}/p2p-circuit/p2p/{me}/p2p/{other}",  # a tail after the circuit
        f"/ip6/::1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}",
    ])
    assert got == [f"{via}/p2p/{me}", f"/ip6/::1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}"]


def test_circuit_addrs_of_is_bounded() -> None:
    me, relay = Identity(b"a" * 32).peer_id, Identity(b"r" * 32).peer_id
    many = [f"/ip4/10.0.0.1/tcp/{port}/p2p/{relay}/p2p-circuit" for port in range(1, 100)]
    assert len(circuit_addrs_of(me, many)) == 16
    assert circuit_addrs_of(me, many, limit=2) == [f"{a}/p2p/{me}" for a in many[:2]]


def test_forgetting_the_evidence_makes_a_probe_due_at_once() -> None:
    # a UPnP mapping came (or went): answers about the old addresses say nothing about the new ones
    m = ReachabilityModel()
    m.probed(T0)
    m.observe("a", False, T0)
    assert m.next_probe_at(T0 + 1) > T0 + 1
    m.forget()
    assert m.status(T0 + 1) is Reachability.UNKNOWN
    assert m.next_probe_at(T0 + 1) == T0 + 1


def test_a_peer_that_became_public_releases_its_relays() -> None:
    book = RelayBook(RelayConfig(relays_wanted=1))
    (relay,) = book.plan([cand("R1")], T0).reserve
    book.reserved(relay, T0 + 3600, T0)
    assert book.relay_addrs("ME")
    book.release()
    assert (book.held(), book.relay_addrs("ME")) == ([], [])
    assert book.plan([cand("R1")], T0 + 1).reserve == (relay,)  # private again: reserves afresh
