"""Peers behind NAT: AutoNAT dial-back, circuit relay v2 (service and reservations), dialing through relays.

The decisions are core's (``pangea_p2p.core.nat``): ``ReachabilityModel`` turns dial-back answers into
public / private / unknown, ``RelayBook`` says which relays to reserve on, renew or drop. ``NatService`` is
their driver over py-libp2p 0.8.1:

- AutoNAT (``/libp2p/autonat/1.0.0``): every peer answers dial-back requests (with the fresh-dial workaround,
  see ``workarounds._autonat_dials_back_afresh``) and asks up to ``servers_per_probe`` peers it holds a direct
  connection to, when the model says a probe is due. ``OK`` is evidence of being public; ``E_DIAL_ERROR``
  (the dial failed) and ``E_DIAL_REFUSED`` (none of our addresses has the IP the server sees us from: we are
  behind a NAT) of being private; anything else is no evidence.
- Relay service: a peer whose reachability is public (or ``relay_service = "on"``) answers circuit relay v2
  hop requests, bounded by ``relay_reservations_max``, ``relay_circuits_max`` and, per circuit,
  ``relay_circuit_bytes_max`` and ``relay_circuit_duration_s`` (py-libp2p enforces them).
- Reservations: a private peer reserves on the relays ``RelayBook`` picks from the capacity directory and
  advertises ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<self>`` in its advert. The same addresses are in
  what the host announces (``host.get_addrs``, through an addrs factory installed here): identify's listen
  addresses and signed peer record, hence the peerstores of the peers it is connected to and their DHT
  answers. When the set changes (a reservation made, a relay dropped or replaced) the peer sends identify push
  to every connected peer, as go-libp2p does on a local address change.
- Dialing: py-libp2p's swarm never dials ``/p2p-circuit`` addresses (``Swarm.dial_peer`` drops them), so
  ``connect(peer)`` dials a peer's relay addresses itself, through ``CircuitV2Transport``: the ones its advert
  lists, else the circuit addresses in the peerstore (identify, a DHT answer; only those ending in the peer's
  own id, ``core.nat.circuit_addrs_of``). A peer with none is dialed directly. A peer of which nothing is
  known is looked up in the DHT first (``find_peer``). The connection lands in the swarm like any other, and
  streams open on it as usual.
- ``link(peer)`` says how we are connected to a peer now (direct, relayed, or hole-punched).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.connection_types import ConnectionType
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message as AutoNATMessage
from libp2p.host.basic_host import BasicHost
from libp2p.identity.identify_push.identify_push import push_identify_to_peer
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig as Libp2pRelayConfig
from libp2p.relay.circuit_v2.config import RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Status as CircuitStatus
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits, RelayResourceManager
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

from pangea_p2p.core.nat import (
    CIRCUIT_DEFAULT,
    CircuitLimit,
    DialBackThrottle,
    Link,
    Reachability,
    ReachabilityConfig,
    ReachabilityModel,
    RelayBook,
    RelayCandidate,
    RelayConfig,
    circuit_addrs_of,
    reservation_refusal,
)
from pangea_p2p.errors import ConfigError, TransportError
from pangea_p2p.logs import get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net import workarounds
from pangea_p2p.net.upnp import MapState, PortMapper

log = get_logger("nat")

DIAL_TIMEOUT_S = 10.0
RESERVE_TIMEOUT_S = 10.0
FIND_PEER_TIMEOUT_S = 30.0  # a DHT lookup of a peer we know nothing about (py-libp2p's own limit is 30 s too)
IDENTIFY_PUSH_TIMEOUT_S = 10.0  # one round of identify push to every connected peer, in all
IDENTIFY_PUSHES_AT_ONCE = 10

FindPeer = Callable[[ID], Awaitable[PeerInfo | None]]


class ThrottledAutoNAT(AutoNATService):
    """py-libp2p's AutoNAT service with a budget for the dial-backs it serves (``core.nat.DialBackThrottle``;
    py-libp2p serves every request, trying every address in it). A request over the budget is answered
    ``E_INTERNAL_ERROR`` ("rate limited"), which a requester counts as no evidence either way, not
    ``E_DIAL_REFUSED`` (which pangea reads as "behind a NAT")."""

    def __init__(self, host: IHost, throttle: DialBackThrottle) -> None:
        super().__init__(host, serve=True)  # type: ignore[arg-type]  # wants BasicHost
        self.throttle = throttle

    async def _handle_dial(self, message: AutoNATMessage, observed_ip: str | None,
                           is_relayed: bool) -> AutoNATMessage:
        if observed_ip is not None and not is_relayed:
            why = self.throttle.refusal(None if ipaddress.ip_address(observed_ip).is_loopback else observed_ip,
                                        time.monotonic())
            if why is not None:
                log.debug("nat.dial_back_refused", ip=observed_ip, reason=why)
                response = AutoNATMessage(type=AutoNATMessage.DIAL_RESPONSE)
                response.dialResponse.status = AutoNATMessage.E_INTERNAL_ERROR
                response.dialResponse.statusText = f"rate limited: {why}"
                return response
            del message.dial.peer.addrs[self.throttle.config.addrs_max:]
        return await super()._handle_dial(message, observed_ip, is_relayed)


class GuardedReservations(RelayResourceManager):
    """py-libp2p's reservation book with our granting rule (``core.nat.reservation_refusal``): a reservation of
    a peer that is no longer connected is dropped (circuit relay v2: it lives as long as the connection; py-libp2p
    kept counting it against the limit until it expired, an hour), one IP address holds at most ``per_ip_max``
    slots, and ``max_circuit_conns`` bounds the circuits of the whole relay, not of each reservation."""

    def __init__(self, limits: RelayLimits, host: IHost, per_ip_max: int) -> None:
        super().__init__(limits, host)
        self.per_ip_max = per_ip_max

    def live(self, keep: ID | None = None) -> dict[str, str | None]:
        """The reservations in force (peer -> the IP it is connected from), after dropping the expired ones and
        those of peers no longer connected (but ``keep``'s: it is asking again)."""
        self._clean_expired()
        for held in [p for p in self._reservations if p != keep and not self._is_peer_connected(p)]:
            del self._reservations[held]
        return {str(p): _remote_ip(self.host, p) for p in self._reservations}

    def can_accept_connection(self, peer_id: ID) -> bool:
        """A new circuit to ``peer_id``: it must hold a reservation, and the relay carry fewer than
        ``max_circuit_conns`` circuits in all (py-libp2p counts them per reservation only: 32 reservations could
        hold 32 circuits each, 64 MiB apiece, on one home uplink)."""
        circuits = sum(r.active_connections for r in self._reservations.values())
        return circuits < self.limits.max_circuit_conns and super().can_accept_connection(peer_id)

    def can_accept_reservation(self, peer_id: ID) -> bool:
        why = reservation_refusal(str(peer_id), _remote_ip(self.host, peer_id), self.live(keep=peer_id),
                                  self.limits.max_reservations, self.per_ip_max)
        if why is not None:
            log.info("nat.reservation_refused", peer=str(peer_id), reason=why)
        return why is None


def _remote_ip(host: IHost | None, peer: ID) -> str | None:
    """The IP address ``peer`` is connected to us from (its first direct connection), if any."""
    if host is None:
        return None
    for conn in host.get_network().get_connections(peer):
        if _is_relayed(conn):
            continue
        for addr in getattr(conn, "get_transport_addresses", list)():
            for proto in ("ip4", "ip6"):
                try:
                    return str(addr.value_for_protocol(proto))
                except Exception:
                    continue
    return None


@dataclass(frozen=True, slots=True)
class NatConfig:
    """The ``[nat]`` section: how a peer learns its reachability and uses or offers relays."""

    upnp: bool = False  # map the listening port on the home router (UPnP IGD, miniupnpc; net/upnp.py)
    upnp_lease_s: int = 3600  # the mapping's lease; renewed every half of it
    reachability: str = "auto"  # "auto": learn it by AutoNAT; "public" / "private": take it as given
    servers_per_probe: int = 3  # peers asked to dial back per probe round
    relay_service: str = "auto"  # "auto": serve circuit relay v2 while public; "on"; "off"
    relay_reservations_max: int = 32
    relay_reservations_per_ip: int = 4  # slots one IP address may hold (go-libp2p: 8)
    relay_circuits_max: int = 32
    relay_circuit_bytes_max: int = CIRCUIT_DEFAULT.bytes  # per circuit, both directions
    relay_circuit_duration_s: int = CIRCUIT_DEFAULT.duration_s  # per circuit
    relays_wanted: int = 2  # relays a private peer keeps a reservation on
    hole_punching: bool = True  # DCUtR: upgrade relayed connections to direct ones where the NATs allow

    def __post_init__(self) -> None:
        if self.reachability not in {"auto", "public", "private"}:
            raise ConfigError("nat.reachability", f"must be 'auto', 'public' or 'private', got {self.reachability!r}")
        if self.relay_service not in {"auto", "on", "off"}:
            raise ConfigError("nat.relay_service", f"must be 'auto', 'on' or 'off', got {self.relay_service!r}")
        for key, low, high in (("servers_per_probe", 1, 16), ("relay_reservations_max", 1, 4096),
                               ("relay_reservations_per_ip", 1, 4096),
                               ("relay_circuits_max", 1, 4096), ("relay_circuit_bytes_max", 1 << 16, 1 << 40),
                               ("relay_circuit_duration_s", 10, 86400), ("relays_wanted", 1, 8),
                               ("upnp_lease_s", 20, 86400)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"nat.{key}", f"must be an integer in {low}..{high}, got {value!r}")

    def relay_limits(self) -> RelayLimits:
        return RelayLimits(duration=self.relay_circuit_duration_s, data=self.relay_circuit_bytes_max,
                           max_circuit_conns=self.relay_circuits_max, max_reservations=self.relay_reservations_max)


def connection_link(host: IHost, peer: ID) -> Link | None:
    """How we are connected to ``peer`` now (None: not connected). A relayed connection next to a direct one
    to the same peer is a hole punch (DCUtR opens the direct one while the relayed one is up)."""
    conns = host.get_network().get_connections(peer)
    if not conns:
        return None
    relayed = [_is_relayed(c) for c in conns]
    if all(relayed):
        return Link.RELAYED
    return Link.HOLE_PUNCHED if any(relayed) else Link.DIRECT


def _is_relayed(conn: object) -> bool:
    kind = getattr(conn, "get_connection_type", lambda: ConnectionType.UNKNOWN)()
    if kind == ConnectionType.RELAYED:
        return True
    addrs: list[object] = getattr(conn, "get_transport_addresses", list)()
    return any("/p2p-circuit" in str(a) for a in addrs)


class NatService:
    """AutoNAT, relay service and relay reservations of one peer (see the module docstring)."""

    def __init__(self, host: IHost, config: NatConfig, reachability: ReachabilityConfig | None = None,
                 relays: RelayConfig | None = None, find_peer: FindPeer | None = None) -> None:
        workarounds.apply()
        self.host = host
        self.peer_id = str(host.get_id())
        self.find_peer = find_peer  # the DHT's lookup (KadDHT.find_peer), for peers of which nothing is known
        self.config = config
        self.model = ReachabilityModel(reachability)
        self.book = RelayBook(relays or RelayConfig(relays_wanted=config.relays_wanted))
        self.autonat = ThrottledAutoNAT(host, DialBackThrottle())
        self.circuit = CircuitV2Protocol(host, config.relay_limits(), allow_hop=False)
        self.reservations = GuardedReservations(config.relay_limits(), host, config.relay_reservations_per_ip)
        self.circuit.resource_manager = self.reservations
        # Role STOP, not CLIENT: with CLIENT, CircuitV2Transport.dial first makes a reservation *for the dialer*
        # on the relay before every CONNECT (a second round trip, a relay slot taken by a peer that needs none,
        # and in the namespace test the first relayed task offer to a home peer hung for its whole 10 s
        # timeout). Reservations are NatService.reserve's job, for private peers only.
        self.transport = CircuitV2Transport(host, self.circuit, Libp2pRelayConfig(roles=RelayRole.STOP))
        self.serving_relay = False
        self.dcutr = DCUtRProtocol(host) if config.hole_punching else None
        self.relay_addrs_of: dict[str, list[str]] = {}  # peer -> its advertised circuit addresses
        self._dial_locks: dict[str, trio.Lock] = {}
        self._relays_learned: dict[str, trio.Event] = {}  # peers being dialed directly, until relays are known
        self._announced: tuple[tuple[str, ...], list[multiaddr.Multiaddr]] = ((), [])
        self._pushed: list[str] = []  # the circuit addresses the last identify push carried
        self._announce_circuit_addrs()
        self._circuits: dict[str, tuple[object, float]] = {}  # peer -> (relayed connection we opened, when)
        self.upnp = (PortMapper(self._tcp_ports, config.upnp_lease_s, on_change=self.model.forget)
                     if config.upnp else None)

    def _tcp_ports(self) -> list[int]:
        return sorted({int(a.value_for_protocol("tcp")) for a in self.host.get_transport_addrs()
                       if "ip4" in {p.name for p in a.protocols()} and "tcp" in {p.name for p in a.protocols()}})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[NatService]:
        """Run the circuit relay protocol (its STOP handler: accepting relayed connections), DCUtR and the UPnP
        port mapping while inside."""
        async with AsyncExitStack() as stack:
            if self.upnp is not None:
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(self.upnp.run)
                stack.callback(nursery.cancel_scope.cancel)  # runs first at exit: the mapper deletes its mappings
            await stack.enter_async_context(background_trio_service(self.circuit))
            await self.circuit.event_started.wait()
            if self.dcutr is not None:
                await stack.enter_async_context(background_trio_service(self.dcutr))
                await self.dcutr.event_started.wait()
            yield self

    # --- reachability -----------------------------------------------------------------------------------

    def status(self, now: float) -> Reachability:
        if self.config.reachability != "auto":
            return Reachability(self.config.reachability)
        return self.model.status(now)

    async def probe(self, own_addrs: Sequence[str], now: float) -> int:
        """Ask up to ``servers_per_probe`` directly connected peers that speak AutoNAT to dial us back; the
        number of answers that counted as evidence. With nobody to ask, the probe is not counted as made."""
        servers = [p for p in self.host.get_connected_peers()
                   if connection_link(self.host, p) is not Link.RELAYED and _speaks(self.host, p, AUTONAT_PROTOCOL_ID)]
        if not servers:
            return 0
        self.model.probed(now)
        addrs = [multiaddr.Multiaddr(a).to_bytes() for a in own_addrs]
        counted = 0
        for server in sorted(servers, key=str)[: self.config.servers_per_probe]:
            try:
                status, _ = await self.autonat.query_server(server, addrs, timeout=DIAL_TIMEOUT_S)
            except trio.Cancelled:
                raise
            except Exception:
                continue  # the server did not answer: no evidence either way
            if status == AutoNATMessage.OK:
                self.model.observe(str(server), True, now)
            elif status in (AutoNATMessage.E_DIAL_ERROR, AutoNATMessage.E_DIAL_REFUSED):
                self.model.observe(str(server), False, now)
            else:
                continue
            counted += 1
        return counted

    def upnp_pending(self) -> bool:
        """The first UPnP attempt is under way (at most a 4 s search and a few SOAP calls): a dial-back probe now
        would test the addresses without the mapping, and a private answer would make the peer reserve relays."""
        return self.upnp is not None and self.upnp.state is MapState.STARTING

    def own_addrs(self) -> list[str]:
        """Our dialable addresses: the listen ones, and first, while a UPnP port mapping (``nat.upnp``) holds,
        the router's external address with each mapped port (net/upnp.py)."""
        external = self.upnp.external_addrs() if self.upnp is not None else []
        return external + hostlib.dialable_addrs(self.host)

    # --- relay service ------------------------------------------------------------------------------------

    def update_relay_service(self, now: float) -> bool:
        """Serve circuit relay hop requests or stop, by ``relay_service`` and reachability; True if serving."""
        want = self.config.relay_service == "on" or (
            self.config.relay_service == "auto" and self.status(now) is Reachability.PUBLIC)
        if want and not self.serving_relay:
            self.host.set_stream_handler(HOP_PROTOCOL, self.circuit._handle_hop_stream)
        elif not want and self.serving_relay:
            self.host.remove_stream_handler(HOP_PROTOCOL)
        self.serving_relay = want
        return want

    def relay_slots_free(self) -> int:
        if not self.serving_relay:
            return 0
        return max(0, self.config.relay_reservations_max - len(self.reservations.live()))

    # --- reservations (a private peer) ----------------------------------------------------------------------

    async def reserve(self, relay: RelayCandidate) -> tuple[float, CircuitLimit]:
        """Reserve a slot on ``relay`` (dialing it first); the reservation's end (unix seconds) and the limit
        of each circuit through it (as the relay states it). TransportError if the relay cannot be reached or
        refuses."""
        relay_id = ID.from_base58(relay.peer_id)
        try:
            with trio.fail_after(RESERVE_TIMEOUT_S):
                if not self.host.get_network().get_connections(relay_id):
                    await self.host.connect(PeerInfo(relay_id, [multiaddr.Multiaddr(a) for a in relay.addrs]))
                stream = await self.host.new_stream(relay_id, [HOP_PROTOCOL])
                try:
                    await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
                    resp = await read_delimited_msg(stream, HopMessage)
                finally:
                    await stream.close()
        except trio.TooSlowError:
            raise TransportError(
                f"relay {relay.peer_id} did not answer a reservation in {RESERVE_TIMEOUT_S}s") from None
        except (trio.Cancelled, TransportError):
            raise
        except Exception as exc:
            raise TransportError(f"cannot reserve on relay {relay.peer_id}: {exc}") from None
        if resp.HasField("status") and resp.status != CircuitStatus.OK:
            raise TransportError(f"relay {relay.peer_id} refused a reservation (status {resp.status})")
        ends = float(resp.reservation.expire) if resp.HasField("reservation") else time.time() + 3600.0
        if not resp.HasField("limit"):
            return ends, CircuitLimit()
        return ends, CircuitLimit(min(resp.limit.duration, 7 * 86400), min(resp.limit.data, 1 << 50))

    async def keep_relays(self, candidates: list[RelayCandidate], now: float) -> None:
        """One round of ``RelayBook.plan``: drop, renew and reserve (concurrently, each bounded in time); then, if
        our circuit addresses are not the ones last pushed (whatever changed them), tell the connected peers
        (``push_identify``). A reservation lives as long as our connection to its relay (circuit relay v2): a
        relay we are no longer connected to is dropped at once (and cools down), not kept until its advert
        expires."""
        network = self.host.get_network()
        for held in self.book.held():
            if not network.get_connections(ID.from_base58(held)):
                log.info("nat.relay_lost", relay=held)
                self.book.failed(held, now)
        plan = self.book.plan(candidates, now)

        async def one(relay: RelayCandidate) -> None:
            try:
                ends, limit = await self.reserve(relay)
            except TransportError:
                self.book.failed(relay.peer_id, time.time())
            else:
                self.book.reserved(relay, ends, time.time(), limit)

        async with trio.open_nursery() as nursery:
            for relay in (*plan.renew, *plan.reserve):
                nursery.start_soon(one, relay)
        await self._push_if_changed()

    async def release_relays(self) -> None:
        """This peer became public (a UPnP mapping, say): drop its reservations (``RelayBook.release``) and tell
        the connected peers that its circuit addresses are gone."""
        self.book.release()
        await self._push_if_changed()

    async def _push_if_changed(self) -> None:
        current = self.book.relay_addrs(self.peer_id)
        if current != self._pushed:
            self._pushed = current
            await self.push_identify()

    # --- announcing our circuit addresses ---------------------------------------------------------------------

    def _announce_circuit_addrs(self) -> None:
        """Make ``host.get_addrs()`` (what identify sends) end with our current circuit addresses, through the
        addrs factory BasicHost applies to its listen addresses (workarounds keep their relay part intact)."""
        if not isinstance(self.host, BasicHost):  # nothing to hook into
            return
        prior = self.host._addrs_factory

        def factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
            base = list(prior(candidates)) if prior is not None else list(candidates)
            return base + self._circuit_maddrs()

        self.host._addrs_factory = factory

    def _circuit_maddrs(self) -> list[multiaddr.Multiaddr]:
        texts = tuple(self.book.relay_addrs(self.peer_id))
        if texts != self._announced[0]:  # get_addrs runs on every DHT message: parse once per change
            self._announced = (texts, [multiaddr.Multiaddr(a) for a in texts])
        return list(self._announced[1])

    async def push_identify(self) -> int:
        """Send identify push (``/ipfs/id/push/1.0.0``: our addresses, protocols and signed peer record) to every
        connected peer, ``IDENTIFY_PUSHES_AT_ONCE`` at a time, within ``IDENTIFY_PUSH_TIMEOUT_S`` in all; the
        number of peers that took it. Their peerstores, hence their DHT answers, then carry our new addresses."""
        peers = list(self.host.get_connected_peers())
        limit = trio.CapacityLimiter(IDENTIFY_PUSHES_AT_ONCE)
        pushed = 0

        async def one(peer: ID) -> None:
            nonlocal pushed
            if await push_identify_to_peer(self.host, peer, limit=limit):
                pushed += 1

        with trio.move_on_after(IDENTIFY_PUSH_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(one, peer)
        log.debug("nat.identify_pushed", peers=len(peers), took=pushed)
        return pushed

    # --- dialing through relays -----------------------------------------------------------------------------

    def learn_relay_addrs(self, peer_id: str, addrs: list[str]) -> None:
        """``peer_id``'s advert lists these circuit addresses (only those ending in its own id are kept)."""
        mine = [a for a in addrs if a.endswith(f"/p2p-circuit/p2p/{peer_id}")]
        if mine:
            self.relay_addrs_of[peer_id] = mine
            learned = self._relays_learned.pop(peer_id, None)
            if learned is not None:  # a direct dial to it is pending: it gives way to the relays (see _dial)
                learned.set()
        else:
            self.relay_addrs_of.pop(peer_id, None)

    def link(self, peer_id: str) -> Link | None:
        """How we are connected to ``peer_id`` now; a direct connection DCUtR made (which outlives the relayed
        one it replaced) stays ``hole-punched``."""
        peer = ID.from_base58(peer_id)
        link = connection_link(self.host, peer)
        punched = self.dcutr is not None and peer in self.dcutr._direct_connections
        return Link.HOLE_PUNCHED if link is Link.DIRECT and punched else link

    def circuit_age_s(self, peer_id: str, now: float) -> float | None:
        """How long ago (unix ``now``) we opened the relayed connection we hold to ``peer_id``; None if we hold
        none we opened (the relay closes a circuit at its duration limit: the scheduler counts what is left)."""
        held = self._circuits.get(peer_id)
        if held is None:
            return None
        conn, opened = held
        if conn not in self.host.get_network().get_connections(ID.from_base58(peer_id)):
            del self._circuits[peer_id]
            return None
        return max(0.0, now - opened)

    async def connect(self, peer_id: str) -> None:
        """Make sure we hold a connection to ``peer_id``: its direct addresses first, then its relay addresses
        (TransportError if none works). One dial per peer at a time."""
        peer = ID.from_base58(peer_id)
        if self.host.get_network().get_connections(peer):
            return
        lock = self._dial_locks.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                if self.host.get_network().get_connections(peer):
                    return
                await self._dial(peer, peer_id)
        finally:
            if not lock.statistics().tasks_waiting:
                self._dial_locks.pop(peer_id, None)

    def _known_addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        try:
            return list(self.host.get_peerstore().addrs(peer))
        except Exception:  # PeerStoreError: no address of that peer yet
            return []

    async def _find(self, peer: ID, peer_id: str) -> list[multiaddr.Multiaddr]:
        """Look ``peer`` up in the DHT (``find_peer``); its addresses known afterwards."""
        if self.find_peer is None:
            return []
        started = time.monotonic()
        found: list[multiaddr.Multiaddr] = []
        try:
            with trio.move_on_after(FIND_PEER_TIMEOUT_S):
                info = await self.find_peer(peer)
                found = list(info.addrs) if info is not None else []
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.debug("nat.find_peer_failed", peer=peer_id, error=repr(exc)[:200])
        known = self._known_addrs(peer)
        log.debug("nat.found", peer=peer_id, addrs=len(known), took_s=round(time.monotonic() - started, 3))
        return known + [a for a in found if a not in known]

    async def _dial(self, peer: ID, peer_id: str) -> None:
        errors: list[str] = []
        known = self._known_addrs(peer)
        if not known and peer_id not in self.relay_addrs_of:
            known = await self._find(peer, peer_id)
        direct = [a for a in known if "/p2p-circuit" not in str(a)]
        # its advert's relay addresses, else those identify or the DHT gave (only ways to this very peer)
        circuits = self.relay_addrs_of.get(peer_id) or circuit_addrs_of(peer_id, [str(a) for a in known])
        if not circuits:  # a peer without relay addresses is dialed directly, as the stream open does anyway
            started = time.monotonic()
            try:
                if await self._dial_direct(peer, peer_id, direct):
                    return
            except trio.Cancelled:
                raise
            except Exception as exc:
                log.debug("nat.dial_failed", peer=peer_id, via="direct", took_s=round(time.monotonic() - started, 3),
                          error=repr(exc)[:200])
                errors.append(f"direct: {exc}")
            circuits = self.relay_addrs_of.get(peer_id, [])
        # a peer with relay addresses said it is private: its direct addresses are behind a NAT, where a dial
        # waits out its whole timeout; DCUtR is what turns the relayed connection into a direct one
        for addr in circuits:
            started = time.monotonic()
            try:
                with trio.fail_after(DIAL_TIMEOUT_S):
                    conn = await self.transport.dial(multiaddr.Multiaddr(addr))
                self._circuits[peer_id] = (conn, time.time())
                log.debug("nat.dialed", peer=peer_id, via=addr, took_s=round(time.monotonic() - started, 3))
                return
            except trio.Cancelled:
                raise
            except Exception as exc:
                log.debug("nat.dial_failed", peer=peer_id, via=addr, took_s=round(time.monotonic() - started, 3),
                          error=repr(exc)[:200])
                errors.append(f"{addr}: {exc}")
        raise TransportError(f"cannot reach {peer_id} directly or through a relay ({'; '.join(errors)[:300]})")


    async def _dial_direct(self, peer: ID, peer_id: str, addrs: list[multiaddr.Multiaddr]) -> bool:
        """Dial ``addrs`` (True once connected); give up early (False) if the peer's relay addresses arrive
        meanwhile. A peer's first advert, sent before it knows it is private, has no relay addresses, and a dial
        to an address behind a NAT hangs until its timeout (10 s, measured in the namespace test), when its
        next advert, a second later, says how to reach it. Exceptions: the dial's (TooSlowError at the timeout)."""
        learned = self._relays_learned.setdefault(peer_id, trio.Event())
        connected = False
        failure: Exception | None = None
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    async def dial() -> None:
                        nonlocal connected, failure
                        try:
                            await self.host.connect(PeerInfo(peer, addrs))
                            connected = True
                        except Exception as exc:
                            failure = exc
                        nursery.cancel_scope.cancel()

                    async def give_way() -> None:
                        await learned.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(dial)
                    nursery.start_soon(give_way)
        finally:
            if self._relays_learned.get(peer_id) is learned:
                del self._relays_learned[peer_id]
        if failure is not None:
            raise failure
        return connected


def _speaks(host: IHost, peer: ID, protocol: str) -> bool:
    try:
        return protocol in host.get_peerstore().get_protocols(peer)
    except Exception:
        return False


__all__ = ["NatConfig", "NatService", "connection_link"]
