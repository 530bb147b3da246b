"""The capacity directory as synchronous core tests: acceptance, expiry, sequence numbers, each rejection."""

from __future__ import annotations

import dataclasses

import pytest

from pangea_p2p.core.capacity import (
    AdvertCache,
    AdvertPublisher,
    AdvertRejected,
    AdvertRejection,
    CapacityDirectory,
    DirectoryConfig,
    LocalCapacity,
    decode_advert,
    encode_advert,
)
from pangea_p2p.core.identity import Identity
from pangea_p2p.errors import ConfigError
from pangea_p2p.wire import capacity_pb2

ALICE = Identity(b"a" * 32)
BOB = Identity(b"b" * 32)
T0 = 1_700_000_000.0
CAP = LocalCapacity(
    cores=4, memory_free_bytes=8 << 30, task_slots_total=4, task_slots_free=3, speed_fuel_per_s=5e8,
    fuel_max=10_000_000_000, memory_bytes_max=100 << 20, wall_time_s_max=30.0, software_version="0.1.0",
    addrs=("/ip4/127.0.0.1/tcp/4001",),
)


def advert(ident: Identity = ALICE, seq: int = 1, issued: float = T0, ttl: float = 30.0, **changes: object) -> bytes:
    return encode_advert(ident, seq, issued, issued + ttl, dataclasses.replace(CAP, **changes))  # type: ignore[arg-type]


def rejected(directory: CapacityDirectory, data: bytes, now: float = T0, source: str | None = None) -> str:
    with pytest.raises(AdvertRejected) as info:
        directory.offer(data, now=now, source=source)
    return info.value.reason


def test_accepts_and_lists_a_valid_advert() -> None:
    d = CapacityDirectory()
    got = d.offer(advert(), now=T0, source=ALICE.peer_id)
    assert got.peer_id == ALICE.peer_id
    assert got.capacity == CAP
    assert d.get(ALICE.peer_id, T0) == got
    assert d.peers(T0) == [ALICE.peer_id]
    assert d.accepted_total == 1


def test_newer_advert_replaces_older() -> None:
    d = CapacityDirectory()
    d.offer(advert(seq=1), now=T0)
    d.offer(advert(seq=2, issued=T0 + 1, task_slots_free=0), now=T0 + 1)
    current = d.get(ALICE.peer_id, T0 + 1)
    assert current is not None
    assert current.seq == 2
    assert current.capacity.task_slots_free == 0


def test_expiry_removes_adverts_and_reports_deadline() -> None:
    d = CapacityDirectory()
    d.offer(advert(ttl=10), now=T0)
    d.offer(advert(BOB, ttl=20), now=T0)
    assert d.next_deadline() == T0 + 10
    assert d.get(ALICE.peer_id, T0 + 10) is None  # expired adverts are never served, even before expire()
    assert d.expire(T0 + 10) == [ALICE.peer_id]
    assert d.peers(T0 + 10) == [BOB.peer_id]
    assert d.next_deadline() == T0 + 20
    assert d.expire(T0 + 25) == [BOB.peer_id]
    assert d.next_deadline() is None


def test_a_refreshed_advert_expires_at_its_new_time_not_its_old_one() -> None:
    d = CapacityDirectory()
    d.offer(advert(seq=1, ttl=10), now=T0)
    d.offer(advert(seq=2, issued=T0 + 5, ttl=10), now=T0 + 5)  # refreshed before it expired
    assert d.next_deadline() == T0 + 15
    assert d.expire(T0 + 12) == []
    assert d.get(ALICE.peer_id, T0 + 12) is not None
    assert d.expire(T0 + 15) == [ALICE.peer_id]
    assert d.next_deadline() is None
    for k in range(1000):  # refreshed many times: it expires once, at its last advert's time
        d.offer(advert(seq=3 + k, issued=T0 + 20 + k, ttl=10), now=T0 + 20 + k)
        assert d.expire(T0 + 20 + k) == []
    assert d.next_deadline() == T0 + 1029
    assert d.expire(T0 + 2000) == [ALICE.peer_id]


def test_stale_sequence_rejected_and_remembered_after_expiry() -> None:
    d = CapacityDirectory()
    old = advert(seq=5, ttl=100)
    d.offer(advert(seq=6, ttl=10), now=T0)
    assert rejected(d, old, now=T0 + 1) == AdvertRejection.STALE_SEQUENCE
    d.expire(T0 + 20)  # seq 6 expired, but a replay of seq 5 (still unexpired) must stay stale
    assert rejected(d, old, now=T0 + 20) == AdvertRejection.STALE_SEQUENCE
    assert rejected(d, advert(seq=6, ttl=100), now=T0 + 20) == AdvertRejection.STALE_SEQUENCE
    assert d.rejections[AdvertRejection.STALE_SEQUENCE] == 3


def test_the_listed_advert_again_is_a_no_op_but_an_older_one_is_stale() -> None:
    d = CapacityDirectory()
    first, second = advert(seq=1), advert(seq=2, issued=T0 + 1)
    d.offer(first, now=T0)
    assert d.offer(first, now=T0 + 0.5).seq == 1  # duplicate delivery
    d.offer(second, now=T0 + 1)
    assert rejected(d, first, now=T0 + 1) == AdvertRejection.STALE_SEQUENCE  # replay of an older one
    assert d.accepted_total == 2
    assert d.rejections[AdvertRejection.STALE_SEQUENCE] == 1


def test_copies_from_a_sync_are_checked_but_known_ones_not_counted() -> None:
    d = CapacityDirectory()
    d.offer(advert(seq=2), now=T0)
    with pytest.raises(AdvertRejected):
        d.offer(advert(seq=1), now=T0 + 1, copy=True)
    assert sum(d.rejections.values()) == 0
    bad = advert(BOB, cores=0)
    with pytest.raises(AdvertRejected):
        d.offer(bad, now=T0, copy=True)
    assert d.rejections[AdvertRejection.ABSURD_VALUE] == 1


def test_bad_signature_rejected() -> None:
    signed = capacity_pb2.SignedAdvert.FromString(advert())
    body = capacity_pb2.AdvertBody.FromString(signed.body)
    body.task_slots_free = 4  # tampered after signing
    signed.body = body.SerializeToString()
    assert rejected(CapacityDirectory(), signed.SerializeToString()) == AdvertRejection.BAD_SIGNATURE


def test_peer_id_not_matching_signing_key_rejected() -> None:
    # Bob signs an advert that claims to be Alice's, carrying his own key.
    body = capacity_pb2.AdvertBody.FromString(capacity_pb2.SignedAdvert.FromString(advert()).body)
    raw = body.SerializeToString()
    forged = capacity_pb2.SignedAdvert(body=raw, public_key=BOB.public_key, signature=BOB.sign(raw))
    assert rejected(CapacityDirectory(), forged.SerializeToString()) == AdvertRejection.KEY_MISMATCH


def test_advert_published_by_another_peer_rejected() -> None:
    d = CapacityDirectory()
    assert rejected(d, advert(ALICE), source=BOB.peer_id) == AdvertRejection.SOURCE_MISMATCH
    assert d.get(ALICE.peer_id, T0) is None


def test_expired_and_future_adverts_rejected() -> None:
    d = CapacityDirectory()
    assert rejected(d, advert(ttl=5), now=T0 + 5) == AdvertRejection.EXPIRED
    assert rejected(d, advert(issued=T0 + 3600), now=T0) == AdvertRejection.FROM_FUTURE
    # small clock skew is tolerated
    d.offer(advert(issued=T0 + 10), now=T0)


def test_too_long_lifetime_rejected() -> None:
    assert rejected(CapacityDirectory(), advert(ttl=10_000)) == AdvertRejection.ABSURD_VALUE


@pytest.mark.parametrize(
    "change",
    [
        {"cores": 0},
        {"cores": 100_000},
        {"task_slots_free": 9},
        {"speed_fuel_per_s": 1e15},
        {"speed_fuel_per_s": float("nan")},
        {"memory_bytes_max": 10},
        {"wall_time_s_max": -1.0},
        {"software_version": "v" * 100},
        {"addrs": ("not-a-multiaddr",)},
        {"addrs": tuple(f"/ip4/10.0.0.{i}/tcp/1" for i in range(40))},
    ],
)
def test_absurd_values_rejected(change: dict[str, object]) -> None:
    d = CapacityDirectory()
    assert rejected(d, advert(**change)) == AdvertRejection.ABSURD_VALUE
    assert d.rejections[AdvertRejection.ABSURD_VALUE] == 1
    assert len(d) == 0


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"garbage" * 10, b"\x0a\x05hello"])
def test_malformed_bytes_rejected(data: bytes) -> None:
    assert rejected(CapacityDirectory(), data) == AdvertRejection.MALFORMED


def test_oversized_advert_rejected_before_parsing() -> None:
    d = CapacityDirectory(DirectoryConfig(advert_bytes_max=256))
    big = advert(addrs=tuple(f"/ip4/10.0.0.{i}/tcp/4001" for i in range(10)))
    assert len(big) > 256
    assert rejected(d, big) == AdvertRejection.MALFORMED


def test_unsupported_version_rejected() -> None:
    signed = capacity_pb2.SignedAdvert.FromString(advert())
    body = capacity_pb2.AdvertBody.FromString(signed.body)
    body.version = 2
    raw = body.SerializeToString()
    v2 = capacity_pb2.SignedAdvert(body=raw, public_key=ALICE.public_key, signature=ALICE.sign(raw))
    assert rejected(CapacityDirectory(), v2.SerializeToString()) == AdvertRejection.UNSUPPORTED_VERSION


def test_too_frequent_adverts_rejected() -> None:
    d = CapacityDirectory(DirectoryConfig(interval_s_min=1.0))
    d.offer(advert(seq=1), now=T0)
    assert rejected(d, advert(seq=2, issued=T0 + 0.5), now=T0 + 2) == AdvertRejection.TOO_FREQUENT
    # spacing is judged on the signed issue times, not on arrival: two adverts issued 1 s apart that arrive
    # together (one delayed, or passed on by a sync) are both fine
    d.offer(advert(seq=3, issued=T0 + 1), now=T0 + 2)


def test_directory_is_bounded() -> None:
    d = CapacityDirectory(DirectoryConfig(peers_max=2))
    d.offer(advert(ALICE, ttl=5), now=T0)
    d.offer(advert(BOB), now=T0)
    carol = Identity(b"c" * 32)
    assert rejected(d, advert(carol), now=T0) == AdvertRejection.DIRECTORY_FULL
    d.offer(advert(carol, issued=T0 + 6), now=T0 + 6)  # Alice's advert expired, room again
    assert d.peers(T0 + 6) == sorted([BOB.peer_id, carol.peer_id])


def test_decode_roundtrip_keeps_signed_bytes() -> None:
    data = advert()
    assert decode_advert(data).signed == data


def test_publisher_schedule_and_increasing_sequence() -> None:
    pub = AdvertPublisher(ALICE, interval_s=2.0, ttl_s=6.0)
    assert pub.due(T0)
    first = decode_advert(pub.make(T0, CAP))
    assert not pub.due(T0 + 1.9)
    assert pub.due(T0 + 2.0)
    assert pub.next_deadline() == T0 + 2.0
    second = decode_advert(pub.make(T0, CAP))  # same clock reading: still a higher seq
    assert second.seq > first.seq
    assert first.expires_at - first.issued_at == 6.0
    pub.publish_soon()  # brought forward, but not closer than gap_s_min (1 s here) to the last advert
    assert not pub.due(T0 + 0.5)
    assert pub.due(T0 + 1.0)
    restarted = AdvertPublisher(ALICE, interval_s=2.0, ttl_s=6.0)  # seq from the clock survives restarts
    assert decode_advert(restarted.make(T0 + 1, CAP)).seq > second.seq


def test_publisher_stretches_interval_with_network_size() -> None:
    pub = AdvertPublisher(ALICE, interval_s=10.0, ttl_s=30.0, network_adverts_per_s_max=10.0, ttl_s_max=600.0)
    assert pub.timing(50) == (10.0, 30.0)  # small network: the configured interval
    assert pub.timing(1000) == (100.0, 300.0)  # 1000 peers share 10 adverts/s
    assert pub.timing(100_000) == (200.0, 600.0)  # capped so the ttl stays within ttl_s_max
    advert = decode_advert(pub.make(T0, CAP, network_size=1000))
    assert advert.expires_at - advert.issued_at == 300.0
    assert pub.next_deadline() == T0 + 100.0


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"capacity\.peers_max"):
        DirectoryConfig(peers_max=0)
    with pytest.raises(ConfigError, match="advert_interval_s"):
        AdvertPublisher(ALICE, interval_s=10, ttl_s=5)
    with pytest.raises(ConfigError, match=r"at least 1\.0s"):
        AdvertPublisher(ALICE, interval_s=0.5, ttl_s=5, gap_s_min=1.0)


def test_advert_cache_skips_decoding_twice_and_is_shared_by_directories() -> None:
    cache = AdvertCache(entries_max=2)
    first, second = CapacityDirectory(cache=cache), CapacityDirectory(cache=cache)
    data = advert()
    assert first.offer(data, now=T0).peer_id == ALICE.peer_id
    assert second.offer(data, now=T0).peer_id == ALICE.peer_id
    assert (cache.misses, cache.hits) == (1, 1)
    # the cache only saves the decode: the directory's own rules still apply to a cached advert
    assert rejected(second, advert(seq=1, issued=T0 - 1), now=T0) == AdvertRejection.STALE_SEQUENCE
    assert rejected(CapacityDirectory(cache=cache), data, now=T0 + 60) == AdvertRejection.EXPIRED
    assert rejected(CapacityDirectory(cache=cache), data, source=BOB.peer_id) == AdvertRejection.SOURCE_MISMATCH


def test_advert_cache_never_stores_a_rejected_advert_and_is_bounded() -> None:
    cache = AdvertCache(entries_max=2)
    signed = capacity_pb2.SignedAdvert.FromString(advert())
    signed.signature = bytes(64)
    forged = signed.SerializeToString()
    for _ in range(2):
        assert rejected(CapacityDirectory(cache=cache), forged) == AdvertRejection.BAD_SIGNATURE
    assert len(cache) == 0
    assert cache.misses == 2
    for seq in range(1, 5):
        cache.decode(advert(seq=seq, issued=T0 + seq))
    assert len(cache) == 2
    assert cache.peek(advert(seq=4, issued=T0 + 4)) is not None
    assert cache.peek(advert(seq=1, issued=T0 + 1)) is None
    with pytest.raises(ConfigError):
        AdvertCache(entries_max=0)


def test_reachability_and_relay_fields_round_trip() -> None:
    relay = f"/ip4/10.0.0.1/tcp/4001/p2p/{BOB.peer_id}/p2p-circuit/p2p/{ALICE.peer_id}"
    got = decode_advert(advert(reachability="private", relay_addrs=(relay,), relay_slots_free=0))
    assert (got.capacity.reachability, got.capacity.relay_addrs) == ("private", (relay,))
    assert decode_advert(advert(reachability="public", relay_slots_free=7)).capacity.relay_slots_free == 7
    limited = decode_advert(advert(reachability="private", relay_addrs=(relay,), relay_circuit_s=120,
                                   relay_circuit_bytes=1 << 17)).capacity
    assert (limited.relay_circuit_s, limited.relay_circuit_bytes) == (120, 1 << 17)


def test_an_advert_from_before_the_reachability_fields_still_decodes() -> None:
    # the body exactly as a peer without fields 16-18 writes it (fields 1-15 only)
    body = capacity_pb2.AdvertBody(
        version=1, peer_id=ALICE.peer_id, seq=1, issued_at=T0, expires_at=T0 + 30, cores=4,
        memory_free_bytes=1 << 30, task_slots_total=4, task_slots_free=3, speed_fuel_per_s=5e8, fuel_max=10**10,
        memory_bytes_max=100 << 20, wall_time_s_max=30.0, software_version="0.0.9", addrs=["/ip4/1.2.3.4/tcp/1"],
    ).SerializeToString()
    assert max(field.number for field, _ in capacity_pb2.AdvertBody.FromString(body).ListFields()) == 15
    signed = capacity_pb2.SignedAdvert(body=body, public_key=ALICE.public_key,
                                       signature=ALICE.sign(b"pangea-capacity-advert-v1\x00" + body))
    got = decode_advert(signed.SerializeToString()).capacity
    assert (got.reachability, got.relay_addrs, got.relay_slots_free) == ("unknown", (), 0)
    # and a peer of unknown reachability without relay service writes exactly the old body (fields 1-15)
    ours = capacity_pb2.SignedAdvert.FromString(encode_advert(ALICE, 1, T0, T0 + 30, CAP)).body
    assert max(field.number for field, _ in capacity_pb2.AdvertBody.FromString(ours).ListFields()) == 15


@pytest.mark.parametrize(
    ("changes", "why"),
    [({"reachability": "maybe"}, "reachability"), ({"relay_addrs": ("/ip4/1.2.3.4/tcp/1",)}, "p2p-circuit"),
     ({"relay_addrs": ("/p2p-circuit",) * 17}, "relay_addrs"), ({"relay_slots_free": 5000}, "relay_slots_free"),
     ({"relay_circuit_s": 8 * 86400}, "relay_circuit_s"), ({"relay_circuit_bytes": 1 << 51}, "relay_circuit_bytes")],
)
def test_absurd_reachability_values_are_rejected(changes: dict[str, object], why: str) -> None:
    with pytest.raises(AdvertRejected, match=why) as info:
        decode_advert(advert(**changes))
    assert info.value.reason == AdvertRejection.ABSURD_VALUE
