"""Peers on 127.0.0.1 in one trio process: DHT membership, advert propagation, forged adverts, the API."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import trio

from pangea_p2p.core.capacity import TOPIC, AdvertRejection, LocalCapacity, encode_advert
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.sdk.client import Client
from pangea_p2p.testing import open_network, wait_for

pytestmark = pytest.mark.slow


def forged_capacity() -> LocalCapacity:
    return LocalCapacity(
        cores=64, memory_free_bytes=1 << 40, task_slots_total=64, task_slots_free=64, speed_fuel_per_s=1e10,
        fuel_max=10**12, memory_bytes_max=1 << 30, wall_time_s_max=60.0, software_version="0.1.0",
    )


async def test_eight_peers_join_dht_and_share_adverts(tmp_path: Path) -> None:
    async with open_network(8, tmp_path) as peers:
        ids = {p.peer_id for p in peers}

        def all_in_tables() -> bool:
            return all(set(p.routing_table_peers()) == ids - {p.peer_id} for p in peers)

        def all_adverts() -> bool:
            return all(set(p.directory.peers(time.time())) == ids for p in peers)

        await wait_for(all_in_tables, 60)
        await wait_for(all_adverts, 60)
        for p in peers:  # honest adverts are never rejected (an older advert arriving late is only stale)
            wrong = {r: n for r, n in p.directory.rejections.items() if r != AdvertRejection.STALE_SEQUENCE}
            assert wrong == {}, p.directory.rejections

        # A forged advert: peer 7 publishes an advert claiming to be a peer it is not (signed with that key,
        # so the signature is fine, but the gossipsub author is peer 7): every peer rejects it.
        victim = Identity(b"v" * 32)
        now = time.time()
        forged = encode_advert(victim, 1, now, now + 10, forged_capacity())
        before = [p.directory.rejections[AdvertRejection.SOURCE_MISMATCH] for p in peers]
        await peers[7].pubsub.publish(TOPIC, forged)
        # A tampered advert (valid signature of peer 7 over different bytes) from peer 7 itself.
        good = encode_advert(peers[7].identity, int(now * 1000) + 10**6, now, now + 10, forged_capacity())
        tampered = good.replace(b"0.1.0", b"6.6.6")
        await peers[7].pubsub.publish(TOPIC, tampered)

        # The publisher's own validator rejects both, so gossipsub never forwards them; every directory stays
        # free of the victim, and the author's advert is unchanged.
        assert peers[7].directory.rejections[AdvertRejection.SOURCE_MISMATCH] == before[7] + 1
        assert peers[7].directory.rejections[AdvertRejection.BAD_SIGNATURE] >= 1
        for p in peers:
            assert victim.peer_id not in p.directory.peers(time.time())
            advert = p.directory.get(peers[7].peer_id, time.time())
            assert advert is not None
            assert advert.capacity.cores != 64


async def test_forged_advert_from_a_peer_without_validator_is_rejected_by_every_other_peer(tmp_path: Path) -> None:
    async with open_network(4, tmp_path) as peers:
        ids = {p.peer_id for p in peers}
        await wait_for(lambda: all(set(p.directory.peers(time.time())) == ids for p in peers), 60)
        liar = peers[3]
        liar.pubsub.remove_topic_validator(TOPIC)  # a modified peer that does not check its own messages
        victim = Identity(b"w" * 32)
        now = time.time()
        await liar.pubsub.publish(TOPIC, encode_advert(victim, 1, now, now + 10, forged_capacity()))
        honest = peers[:3]
        await wait_for(
            lambda: all(p.directory.rejections[AdvertRejection.SOURCE_MISMATCH] >= 1
                        for p in honest if liar.peer_id in p.connected_peers()),
            30,
        )
        assert any(liar.peer_id in p.connected_peers() for p in honest)
        for p in honest:
            assert victim.peer_id not in p.directory.peers(time.time())


async def test_api_endpoints(tmp_path: Path) -> None:
    async with open_network(2, tmp_path) as peers:
        a, b = peers
        await wait_for(lambda: b.peer_id in a.directory.peers(time.time()), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.api_port}", trust_env=False) as http:
            ident = (await http.get("/v1/id")).json()
            assert ident["peer_id"] == a.peer_id
            assert ident["addrs"] == a.addrs()
            peers_doc = (await http.get("/v1/peers")).json()
            row = next(r for r in peers_doc["peers"] if r["peer_id"] == b.peer_id)
            assert row["connected"]
            assert row["has_advert"]
            cap = (await http.get("/v1/capacity")).json()
            assert {x["peer_id"] for x in cap["adverts"]} == {a.peer_id, b.peer_id}
            health = (await http.get("/v1/health")).json()
            assert health["status"] == "ok"
            assert health["directory_size"] == 2
            missing = await http.get("/v1/nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"
            unauthorised = await http.post("/v1/id")  # a change needs the token, before anything else
            assert (unauthorised.status_code, unauthorised.json()["error"]["code"]) == (401, "token_required")
            token = (a.config.data_dir / "api_token").read_text().strip()
            wrong = await http.post("/v1/id", headers={"authorization": f"Bearer {token}"})
            assert wrong.status_code == 405
        # garbage instead of HTTP gets a 400, and the API keeps serving
        stream = await trio.open_tcp_stream("127.0.0.1", a.api_port)
        await stream.send_all(b"\x00\x01garbage\r\n\r\n")
        reply = await stream.receive_some(4096)
        await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 400")
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"http://127.0.0.1:{a.api_port}/v1/health")).status_code == 200


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc/self/fd (Linux)")
async def test_idle_api_connections_never_starve_the_peer(tmp_path: Path) -> None:
    """cap + 50 idle connections to a peer's API: the user's SDK client still gets its answers (a read, and an
    upload with the token from the data dir) and the peer keeps publishing its adverts."""
    cap = 16
    async with open_network(2, tmp_path, {"api.connections_max": cap, "api.idle_timeout_s": 60}) as peers:
        a, b = peers
        await wait_for(lambda: a.peer_id in b.directory.peers(time.time()), 30)
        assert (a.config.data_dir / "api_token").stat().st_mode & 0o777 == 0o600
        before = len(os.listdir("/proc/self/fd"))
        idle = [await trio.open_tcp_stream("127.0.0.1", a.api_port) for _ in range(cap + 50)]
        try:
            # the API side holds at most `cap` of them (this process has both ends; a little slack for the peers)
            await wait_for(lambda: len(os.listdir("/proc/self/fd")) - before <= len(idle) + cap + 10, 10)
            advert = b.directory.get(a.peer_id, time.time())
            assert advert is not None

            def as_a_user() -> tuple[dict[str, object], str]:
                with Client.for_data_dir(a.config.data_dir, timeout_s=10) as client:
                    return client.health(), client.upload_block(b"still here")

            with trio.fail_after(10):
                health, cid = await trio.to_thread.run_sync(as_a_user)
            assert health["peer_id"] == a.peer_id
            assert cid == cid_of(b"still here")

            def newer() -> bool:
                latest = b.directory.get(a.peer_id, time.time())
                return latest is not None and latest.seq > advert.seq

            await wait_for(newer, 30)
        finally:
            for stream in idle:
                await stream.aclose()


async def test_ping_measures_rtt(tmp_path: Path) -> None:
    async with open_network(2, tmp_path) as peers:
        a, b = peers
        await wait_for(lambda: b.peer_id in a.connected_peers(), 30)
        from libp2p.peer.id import ID

        rtt = await a.ping(ID.from_base58(b.peer_id), count=5)
        assert 0 < rtt < 1.0
        assert a.rtt_s[b.peer_id] == rtt
