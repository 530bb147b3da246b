"""Reachability and relays in running peers on 127.0.0.1 (one trio process): the nat task, the advert fields,
`pangea id`'s line. The NAT itself is in tests/e2e/test_nat_e2e.py (network namespaces)."""

from __future__ import annotations

import time
from pathlib import Path

from pangea_p2p.cli.info import _nat_line
from pangea_p2p.node.peer import open_peer
from pangea_p2p.testing import local_config, open_network, wait_for


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
