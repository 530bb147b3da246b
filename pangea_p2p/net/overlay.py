"""The two py-libp2p overlays a peer joins: the Kademlia DHT and gossipsub, configured explicitly.

Workarounds (notes/py-libp2p-0.8.1.md §9; tests in tests/net/test_workarounds.py):

- ``heartbeat_interval`` is set (§9.6): the default is 120 s, so a mesh would repair itself every two minutes.
- ``adaptive_gossip_enabled=False``: 0.8.1's "adaptive gossip" rewrites the heartbeat interval every 30 s from
  a health score, and its formula *lengthens* it to 30–60 s exactly when the mesh is unhealthy (e.g. a small
  network where the mesh cannot reach degree 6), the opposite of its docstring ("more frequent heartbeats").
- ``spam_protection_enabled=False`` (§9.4): its 10 msg/s limit is counted per *forwarder* and topic, so a hub
  peer relaying the adverts of more than 10 peers in one second is penalised and its messages dropped. Abuse
  is limited per *author* instead, by the capacity directory (``interval_s_min``, sequence numbers) through the
  topic validator.
- py-libp2p's peer scoring is left at its defaults and not relied upon (§9: P3 is not wired, P4's sign is
  inverted); validators and the directory's own checks are what reject bad adverts.
"""

from __future__ import annotations

from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from pangea_p2p.net import workarounds
from pangea_p2p.net.config import GossipConfig


def make_gossip(host: IHost, config: GossipConfig) -> tuple[Pubsub, GossipSub]:
    """A strict-signing Pubsub over a GossipSub router (run both as services)."""
    workarounds.apply()
    router = GossipSub(
        # v1.1, not v1.2: v1.2's IDONTWANT sends one control message per received message to every mesh
        # peer, which doubled the RPC count for pangea's small (~300-byte) adverts in measurements (it pays
        # off only for large messages).
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=config.mesh_degree,
        degree_low=config.mesh_degree_low,
        degree_high=config.mesh_degree_high,
        heartbeat_interval=config.heartbeat_interval_s,  # type: ignore[arg-type]  # typed int, used as a float
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router, strict_signing=True, seen_ttl=config.seen_ttl_s)
    return pubsub, router


def make_dht(host: IHost, server_mode: bool = True) -> KadDHT:
    """A Kademlia DHT speaking pangea's private protocol id (see workarounds._private_dht_protocol)."""
    workarounds.apply()
    return KadDHT(host, DHTMode.SERVER if server_mode else DHTMode.CLIENT, enable_random_walk=False)
