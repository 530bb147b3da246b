"""Reachability and relays in running peers on 127.0.0.1 (one trio process): the nat task, the advert fields,
`pangea id`'s line, a private peer found through the DHT. The NAT itself is in tests/e2e/test_nat_e2e.py
(network namespaces)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from pangea_p2p.cli.info import _nat_line
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.nat import Link
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.nat import NatConfig, NatService
from pangea_p2p.net.overlay import make_dht
from pangea_p2p.node.peer import open_peer
from pangea_p2p.node.protocols.compute import COMPUTE_PROTOCOL, ComputeDialer
from pangea_p2p.testing import local_config, open_network, wait_for
from tests.net.test_nat import LOCAL, addrs_known, behind_a_nat


async def test_loopback_peers_find_themselves_public_and_a_private_one_reserves_on_them(tmp_path: Path) -> None:
    async with open_network(2, tmp_path) as peers:
        # AutoNAT on loopback: every dial-back succeeds, so both are public and serve as relays
        await wait_for(lambda: all(p.nat_json()["reachability"] == "public" and p.nat_json()["relay_service"]
                                   for p in peers), 30)
        cfg = local_config(tmp_path / "home", [peers[0].addrs()[0]], nat__reachability="private")
        async with open_peer(cfg) as home:
            def reserved() -> bool:
                return set(home.nat_json()["relays"]) == {p.peer_id for p in peers}

            await wait_for(reserved, 30)
            circuits = home.nat_json()["relay_addrs"]
            assert all(a.endswith(f"/p2p-circuit/p2p/{home.peer_id}") for a in circuits)

            def advertised() -> bool:
                ad = peers[1].directory.get(home.peer_id, time.time())
                return ad is not None and ad.capacity.relay_addrs == tuple(circuits)

            await wait_for(advertised, 30)
            advert = peers[1].directory.get(home.peer_id, time.time())
            assert advert is not None
            assert advert.capacity.reachability == "private"
            assert advert.capacity.relay_slots_free == 0  # a private peer relays for nobody

            def relay_slots_taken() -> bool:  # the relay's next advert counts the home peer's reservation
                relay = peers[1].directory.get(peers[0].peer_id, time.time())
                return relay is not None and relay.capacity.relay_slots_free == 31

            await wait_for(relay_slots_taken, 30)
            relay = peers[1].directory.get(peers[0].peer_id, time.time())
            assert relay is not None
            assert relay.capacity.reachability == "public"
            assert _nat_line(home.nat_json()) == "reachability: private, reserved on 2 relay(s):"  # `pangea id`
            assert _nat_line(peers[0].nat_json()).startswith("reachability: public (confidence ")


async def test_a_libp2p_peer_without_adverts_finds_a_private_peer_in_the_dht_and_opens_a_task_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The finder runs only libp2p's DHT and circuit relay (like a js-libp2p peer): no gossip, so no advert of
    # the home peer ever reaches it. It knows the home peer's id, looks it up, and dials it through its relay.
    async with open_network(1, tmp_path, {"nat.reachability": "public"}) as [relay]:
        cfg = local_config(tmp_path / "home", [relay.addrs()[0]], nat__reachability="private")
        async with open_peer(cfg) as home:
            behind_a_nat(monkeypatch, home.host)  # from now on reachable only through connections it opened
            await wait_for(lambda: home.nat_json()["relays"] == [relay.peer_id], 30)
            circuit = f"{hostlib.dialable_addrs(relay.host)[0]}/p2p/{relay.peer_id}/p2p-circuit"
            await wait_for(lambda: circuit in addrs_known(relay.host, home.host), 30)  # identify push
            finder = hostlib.make_host(Identity(b"f" * 32))
            async with finder.run([LOCAL]):
                try:
                    dht = make_dht(finder)
                    async with background_trio_service(dht), \
                            NatService(finder, NatConfig(), find_peer=dht.find_peer).running() as nat:
                        boot = hostlib.parse_peer_addr(relay.addrs()[0], "bootstrap")
                        await hostlib.connect(finder, boot)
                        await dht.add_peer(boot.peer_id, skip_server_mode_check=True)
                        assert addrs_known(finder, home.host) == set()
                        with trio.fail_after(40):
                            stream = await ComputeDialer(finder, connect=nat.connect).open(home.peer_id)
                        assert stream.get_protocol() == COMPUTE_PROTOCOL
                        assert stream.muxed_conn.peer_id == ID.from_base58(home.peer_id)
                        assert nat.link(home.peer_id) is Link.RELAYED
                        await stream.close()
                finally:
                    await hostlib.close_hosts([finder])
