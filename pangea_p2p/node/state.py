"""A running peer's state (``Peer``): its host, DHT and gossipsub, its capacity directory and advert, the
round-trip times it measured, its compute service. What the API reads and the peer's tasks (node/peer.py) change.

Adverts use the wall clock (``time.time()``: they are compared across machines); timers use trio's clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from pangea_p2p import __version__
from pangea_p2p.core.capacity import (
    TOPIC,
    AdvertPublisher,
    AdvertRejected,
    AdvertRejection,
    CapacityAdvert,
    CapacityDirectory,
    LocalCapacity,
)
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify import fraud
from pangea_p2p.logs import RecentRecords, get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.nat import NatService
from pangea_p2p.net.traffic import Traffic
from pangea_p2p.node import resources
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.config import NodeConfig
from pangea_p2p.node.protocols import capacity_sync, ping

log = get_logger("peer")


def task_slots(config: NodeConfig) -> int:
    """The tasks this peer runs at once (``capacity.task_slots``, else one per core)."""
    return config.capacity.task_slots or resources.cpu_cores()


@dataclass
class BootstrapState:
    """One ``--bootstrap`` address: "connecting" (first dials), "connected", "retrying" (a dial failed; the next
    after a backoff), "disconnected" (the connection was lost; redialing)."""

    addr: str
    peer_id: str = ""
    status: str = "connecting"
    attempts: int = 0
    last_error: str = ""


class ConnectionEvents(INotifee):
    """py-libp2p's network notifee: logs every peer connect and disconnect (one line each, with the peer id,
    its address and who dialed) and wakes the peer's tasks that wait on connections (``Peer.notify``)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        log.info("peer.connected", **_conn_fields(conn))
        self.peer.notify()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        log.info("peer.disconnected", **_conn_fields(conn))
        self.peer.notify()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def _conn_fields(conn: INetConn) -> dict[str, str]:
    muxed = conn.muxed_conn
    try:
        remote = muxed.get_remote_address()  # type: ignore[attr-defined]
        addr = f"{remote[0]}:{remote[1]}" if remote else "?"
    except Exception:
        addr = "?"
    direction = getattr(getattr(conn, "direction", None), "name", "") or "?"
    return {"peer_id": str(muxed.peer_id), "addr": addr, "direction": direction.lower()}


@dataclass
class Peer:
    """A running peer. Attributes are read by the API and by tests; the tasks in ``open_peer`` mutate them."""

    config: NodeConfig
    identity: Identity
    host: IHost
    dht: KadDHT
    pubsub: Pubsub
    directory: CapacityDirectory
    publisher: AdvertPublisher
    speed_fuel_per_s: float
    started_at: float = field(default_factory=time.time)
    api_port: int = 0
    bootstrap: dict[str, BootstrapState] = field(default_factory=dict)
    rtt_s: dict[str, float] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)
    compute: ComputeService | None = None
    health_status: str = "starting"  # the last status logged (``check_health``)
    recent: RecentRecords = field(default_factory=RecentRecords)  # its recent warnings and errors (dashboard)
    traffic: Traffic = field(default_factory=Traffic)  # bytes on its connections and its streams (/metrics)
    nat: NatService | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def addrs(self) -> list[str]:
        """Full dialable multiaddrs (what another peer passes as --bootstrap)."""
        return hostlib.full_addrs(self.host)

    def local_capacity(self) -> LocalCapacity:
        slots = task_slots(self.config)
        free = slots if self.compute is None else self.compute.admission.free_slots()
        cfg = self.config.compute
        return LocalCapacity(
            cores=resources.cpu_cores(),
            memory_free_bytes=resources.memory_free_bytes(),
            task_slots_total=slots,
            task_slots_free=free,
            speed_fuel_per_s=self.speed_fuel_per_s,
            fuel_max=cfg.fuel_max,
            memory_bytes_max=cfg.memory_bytes_max,
            wall_time_s_max=cfg.wall_time_s_max,
            software_version=__version__,
            addrs=tuple((self.nat.own_addrs() if self.nat else hostlib.dialable_addrs(self.host))[:16]),
            **self._nat_fields(),
        )

    def _nat_fields(self) -> dict[str, Any]:
        if self.nat is None:
            return {}
        now = time.time()
        limit = self.nat.book.circuit_limit()
        return {"reachability": self.nat.status(now).value, "relay_slots_free": self.nat.relay_slots_free(),
                "relay_addrs": tuple(self.nat.book.relay_addrs(self.peer_id)[:16]),
                "relay_circuit_s": limit.duration_s, "relay_circuit_bytes": limit.bytes}

    def nat_json(self) -> dict[str, Any]:
        """Reachability and relays, as `pangea id`, `pangea health` and the API show them."""
        if self.nat is None:
            return {"reachability": "unknown"}
        now = time.time()
        return {"reachability": self.nat.status(now).value, "confidence": self.nat.model.confidence(now),
                "relay_service": self.nat.serving_relay, "relay_slots_free": self.nat.relay_slots_free(),
                "relays": self.nat.book.held(), "relay_addrs": self.nat.book.relay_addrs(self.peer_id),
                "links": {p: str(link) for p in self.connected_peers() if (link := self.nat.link(p)) is not None},
                "upnp": None if self.nat.upnp is None else self.nat.upnp.to_json()}

    def routing_table_peers(self) -> list[str]:
        return sorted(str(p) for p in self.dht.routing_table.get_peer_ids())

    def connected_peers(self) -> list[str]:
        return sorted(str(p) for p in self.host.get_connected_peers())

    def is_connected(self, peer_id: str) -> bool:
        return any(str(p) == peer_id for p in self.host.get_connected_peers())

    def health(self) -> dict[str, Any]:
        """What ``GET /v1/health`` answers: "ok", or "degraded" with the problems that make it so (no peer
        connected; a bootstrap address not connected, with why), and the figures they come from."""
        connected = self.connected_peers()
        problems = []
        if not connected:
            hint = "" if self.bootstrap else " (no --bootstrap given: waiting for another peer to dial this one)"
            problems.append("no peer connected" + hint)
        bootstrap = {}
        for addr, state in self.bootstrap.items():
            status = state.status
            if status == "connected" and not self.is_connected(state.peer_id):
                status = "disconnected"  # the bootstrap task notices within a moment; say it already
            bootstrap[addr] = {"status": status, "attempts": state.attempts, "last_error": state.last_error}
            if status != "connected":
                problems.append(f"bootstrap {addr} {status}" + (f": {state.last_error}" if state.last_error else ""))
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "peer_id": self.peer_id,
            "uptime_s": round(time.time() - self.started_at, 3),
            "connected_peers": len(connected),
            "routing_table_size": len(self.routing_table_peers()),
            "directory_size": len(self.directory),
            "nat": self.nat_json(),
            "bootstrap": bootstrap,
        }

    def check_health(self) -> None:
        """Log the health when its status changes (called by the peer's maintenance task)."""
        doc = self.health()
        if doc["status"] != self.health_status:
            emit = log.warning if self.health_status == "ok" else log.info  # a peer starts degraded: no warning
            self.health_status = doc["status"]
            emit("health.changed", status=doc["status"], problems=doc["problems"],
                 connected_peers=doc["connected_peers"])

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_until(self, predicate: Any, timeout_s: float) -> None:
        """Wait until ``predicate()`` is true, re-checking on every state change; TooSlowError after timeout."""
        with trio.fail_after(timeout_s):
            while not predicate():
                with trio.move_on_after(0.05):  # also re-check periodically: DHT tables change without events
                    await self.changed.wait()

    # --- gossip -----------------------------------------------------------------------------------------

    def validate_advert(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """gossipsub topic validator: accept into the directory, or reject (and gossipsub drops it)."""
        try:
            source = str(ID(msg.from_id))
        except Exception:
            self.directory.rejections[AdvertRejection.MALFORMED] += 1
            return False
        try:
            advert = self.directory.offer(msg.data, now=time.time(), source=source)
        except AdvertRejected as exc:
            log.debug("advert.rejected", reason=str(exc.reason), forwarder=str(forwarder), detail=exc.detail)
            return False
        self._learn_addrs(advert)
        self.notify()
        return True

    def _learn_addrs(self, advert: CapacityAdvert) -> None:
        if advert.peer_id == self.peer_id:
            return
        if self.nat is not None:
            self.nat.learn_relay_addrs(advert.peer_id, list(advert.capacity.relay_addrs))
        if not advert.capacity.addrs:
            return
        try:
            addrs = [multiaddr.Multiaddr(a) for a in advert.capacity.addrs]
            ttl = max(1, int(advert.expires_at - time.time()))
            self.host.get_peerstore().add_addrs(ID.from_base58(advert.peer_id), addrs, ttl)
        except Exception as exc:  # a signed but unparsable address: keep the advert, skip the address
            log.debug("advert.bad_addr", peer=advert.peer_id, error=repr(exc))

    def validate_proof(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """gossipsub validator of the fraud topic. Our own publishes pass. A proof from another peer goes to the
        compute behaviour, which checks it (rate limits, format, one re-execution) and publishes it again itself
        only if it holds: so gossipsub never relays a proof this peer has not verified, and a false proof
        travels one hop (its author's). A proof above the size cap is refused before anything is decoded."""
        try:
            source = str(ID(msg.from_id))
        except Exception:
            return False
        if source == self.peer_id:
            return True
        if len(msg.data) > fraud.PROOF_BYTES_MAX:
            log.debug("fraud_proof.oversized", author=source, forwarder=str(forwarder), bytes=len(msg.data))
        elif self.compute is not None:
            try:
                self.compute.on_proof(source, bytes(msg.data))
            except Exception as exc:  # a bug here must not break gossipsub's reading of this peer
                log.error("fraud_proof.internal_error", author=source, error=repr(exc)[:300])
        return False

    async def publish_proof(self, data: bytes) -> None:
        await self.pubsub.publish(fraud.TOPIC, data)

    async def publish_advert(self) -> None:
        data = self.publisher.make(time.time(), self.local_capacity(), network_size=len(self.directory))
        await self.pubsub.publish(TOPIC, data)

    def topic_peer_count(self) -> int:
        return len(self.pubsub.peer_topics.get(TOPIC, ()))

    def mesh_peer_count(self) -> int:
        """Peers in our gossipsub mesh for the capacity topic: those our own publishes go to."""
        router = self.pubsub.router
        return len(getattr(router, "mesh", {}).get(TOPIC, ()))

    # --- capacity sync: a joining peer copies a neighbour's directory (node/protocols/capacity_sync.py) -----

    async def sync_capacity_from(self, peer: ID) -> int:
        """Fetch ``peer``'s directory and offer each advert to ours; the number accepted."""
        accepted = await capacity_sync.sync_from(self.host, peer, self.config.capacity.directory.advert_bytes_max,
                                                 self._offer_copy)
        if accepted:
            self.notify()
        return accepted

    def _offer_copy(self, data: bytes) -> bool:
        try:
            advert = self.directory.offer(data, now=time.time(), copy=True)
        except AdvertRejected:
            return False  # stale or expired copies are normal here; forgeries are counted
        self._learn_addrs(advert)
        return True

    # --- ping: round-trip times to neighbours (node/protocols/ping.py) -------------------------------------

    async def ping(self, peer: ID, count: int = 1) -> float:
        """Median round-trip time to ``peer`` in seconds over ``count`` pings on one stream (remembered)."""
        rtt = await ping.ping(self.host, peer, count)
        self.rtt_s[str(peer)] = rtt
        return rtt
