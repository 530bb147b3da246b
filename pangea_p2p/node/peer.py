"""The trio driver of one peer: a py-libp2p host in the Kademlia DHT and on gossipsub, publishing its signed
capacity advert and keeping a capacity directory, serving its stream protocols, its compute service and a
local HTTP API.

``open_peer(config)`` is an async context manager that yields a running ``Peer`` (node/state.py) and shuts it
down cleanly (listeners closed, services stopped, no leaked tasks) when the block exits or is cancelled.
``run_node`` wraps it for the CLI with signal handling.

What runs inside (one nursery):

- the bootstrap task per ``--bootstrap`` address: dial, add to the routing table, look ourselves up (which makes
  every peer we query add us too), fetch the bootstrap peer's capacity directory; on failure retry with
  exponential backoff and jitter (at most ``dht.bootstrap_retry_s_max`` apart), for ever, saying so in the log;
  and when the connection is lost, the same again from the shortest backoff;
- the known-peers task: dial the peers this one was connected to before it stopped (node/known_peers.py,
  DATA_DIR/peers.json) at once, and again whenever it has no connection at all: a restarted peer, even one with
  no --bootstrap, is back with its neighbours in seconds instead of waiting for their next DHT refresh;
- the advert task: publish our advert every ``capacity.advert_interval_s`` and as soon as a first neighbour
  subscribes to the topic;
- the maintenance task: expire adverts, refresh the routing table every ``dht.refresh_interval_s``, note the
  connected peers in DATA_DIR/peers.json, log the health (``Peer.health``) when its status changes;
- the ping task: the round-trip time to each connected peer, when it connects and every PING_INTERVAL_S;
- the stream protocols (node/protocols/) and the compute service (node/compute.py), whose ports
  (node/ports.py) are built here from the host, the DHT, the sandbox pool and the capacity directory;
- the API server on 127.0.0.1 (on 5101 or the next free port unless ``api.port`` says which; DATA_DIR/api
  says where), guarded by DATA_DIR/api_token (node/keyfile.py; who may use it: node/api.py).

Every peer connect and disconnect is a log line (``ConnectionEvents`` in node/state.py).

The decisions are the core's (``CapacityDirectory``, ``AdvertPublisher``, ``ComputeBehaviour``); this module
only moves bytes and reads clocks. Adverts use the wall clock (``time.time()``: they are compared across
machines); timers use trio's clock.
"""

from __future__ import annotations

import errno
import math
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from pangea_p2p.core.capacity import TOPIC, AdvertPublisher, CapacityAdvert, CapacityDirectory
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.context import BehaviourConfig
from pangea_p2p.core.nat import Link, Reachability, relay_candidates
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify import fraud
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.errors import PangeaError, TransportError
from pangea_p2p.logs import get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.nat import NatService
from pangea_p2p.net.overlay import make_dht, make_gossip
from pangea_p2p.net.traffic import Traffic, count_connections
from pangea_p2p.node import api, datadir, known_peers
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.config import (
    DEFAULT_API_PORT,
    DEFAULT_LISTEN,
    DEFAULT_LISTEN_PORT,
    DEFAULT_PORTS_TRIED,
    NodeConfig,
)
from pangea_p2p.node.dashboard import add_dashboard_routes
from pangea_p2p.node.job_routes import add_job_routes
from pangea_p2p.node.journal import Journal
from pangea_p2p.node.keyfile import ensure_data_dir, load_or_create_api_token, load_or_create_identity
from pangea_p2p.node.known_peers import KnownPeer, KnownPeers
from pangea_p2p.node.ports import ComputePorts
from pangea_p2p.node.protocols.block import BLOCK_PROTOCOL, NetworkBlocks, serve_block
from pangea_p2p.node.protocols.capacity_sync import CAPACITY_SYNC_PROTOCOL, serve_capacity_sync
from pangea_p2p.node.protocols.compute import COMPUTE_PROTOCOL, ComputeDialer, remote_peer
from pangea_p2p.node.protocols.ping import PING_PROTOCOL, serve_ping
from pangea_p2p.node.routes import add_routes
from pangea_p2p.node.state import BootstrapState, ConnectionEvents, Peer, task_slots
from pangea_p2p.node.trust_store import TrustStore
from pangea_p2p.sandbox import Sandbox, SandboxConfig, SandboxLimits, measure_speed, open_sandbox

__all__ = ["Peer", "open_peer", "run_node", "task_slots"]

log = get_logger("peer")

PING_INTERVAL_S = 15.0  # each connected peer's round-trip time is measured again after this
PING_TIMEOUT_S = 2.0
PING_PEERS_MAX = 64  # peers pinged per round (a round every second)
NAT_TICK_S = 1.0
TRUST_FILE_NAME = "trust.sqlite"
KNOWN_PEER_DIAL_TIMEOUT_S = 5.0


# --- the tasks ------------------------------------------------------------------------------------------


async def _bootstrap_task(peer: Peer, info: PeerInfo, state: BootstrapState, rng: random.Random) -> None:
    """Stay connected to one bootstrap peer: dial it (backoff with jitter from ``bootstrap_retry_s_min`` up to
    ``bootstrap_retry_s_max`` between failed dials), join through it, and when the connection is lost (the peer
    restarted, the network failed) dial it again from the shortest backoff."""
    cfg = peer.config.dht
    state.peer_id = str(info.peer_id)
    while True:
        delay = cfg.bootstrap_retry_s_min
        while not await _dial(peer, info, state):
            wait = delay * (0.5 + rng.random())
            log.warning("bootstrap.unreachable", addr=state.addr, error=state.last_error, retry_in_s=round(wait, 2))
            await trio.sleep(wait)
            delay = min(delay * 2, cfg.bootstrap_retry_s_max)
        log.info("bootstrap.connected", addr=state.addr, attempts=state.attempts)
        await _join(peer, info.peer_id)
        await _wait_disconnected(peer, state.peer_id)
        state.status, state.last_error = "disconnected", "connection lost"
        log.warning("bootstrap.disconnected", addr=state.addr)
        peer.notify()


async def _dial(peer: Peer, info: PeerInfo, state: BootstrapState) -> bool:
    state.attempts += 1
    try:
        await hostlib.connect(peer.host, info)
        await peer.dht.add_peer(info.peer_id)
    except trio.Cancelled:
        raise
    except Exception as exc:
        state.status, state.last_error = "retrying", _one_line(exc)
        peer.notify()
        return False
    state.status, state.last_error = "connected", ""
    peer.notify()
    return True


async def _wait_disconnected(peer: Peer, peer_id: str) -> None:
    while peer.is_connected(peer_id):
        with trio.move_on_after(1.0):  # the notifee wakes us; the timeout is a safety net
            await peer.changed.wait()


async def _known_peers_task(peer: Peer, known: KnownPeers, rng: random.Random) -> None:
    """Dial the peers this one knows (node/known_peers.py: those it was connected to, in this run or before it
    stopped) at once; and again, with a backoff, whenever it has no connection at all."""
    cfg = peer.config.dht
    boot_ids = {s.peer_id for s in peer.bootstrap.values()}
    delay, attempt = cfg.bootstrap_retry_s_min, 0
    while True:
        targets = [k for k in known.ordered() if k.peer_id != peer.peer_id and k.peer_id not in boot_ids]
        if targets and not peer.host.get_connected_peers():
            attempt += 1
            if await _dial_known(peer, targets, attempt):
                delay, attempt = cfg.bootstrap_retry_s_min, 0
        await peer.wait_until(lambda: not peer.host.get_connected_peers(), float("inf"))
        await trio.sleep(delay * (0.5 + rng.random()))  # after a loss too: the neighbours may be restarting
        delay = min(delay * 2, cfg.bootstrap_retry_s_max)


async def _dial_known(peer: Peer, targets: list[KnownPeer], attempt: int) -> int:
    reached: list[ID] = []

    async def dial(known: KnownPeer) -> None:
        try:
            info = PeerInfo(ID.from_base58(known.peer_id), [multiaddr.Multiaddr(a) for a in known.addrs])
            await hostlib.connect(peer.host, info, KNOWN_PEER_DIAL_TIMEOUT_S)
            await peer.dht.add_peer(info.peer_id)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.debug("known_peer.unreachable", peer_id=known.peer_id, error=_one_line(exc))
            return
        reached.append(info.peer_id)

    async with trio.open_nursery() as nursery:
        for known in targets:
            nursery.start_soon(dial, known)
    emit = log.info if reached or attempt == 1 else log.debug  # not a line every 10 s while nobody answers
    emit("known_peers.dialed", peers=len(targets), reached=len(reached), attempt=attempt)
    if reached:
        await _join(peer, reached[0])
    return len(reached)


def _remember_connected(peer: Peer, known: KnownPeers) -> None:
    """Note the connected peers and their addresses (from their adverts, else the peerstore) in ``known``."""
    now = time.time()
    store = peer.host.get_peerstore()
    for pid in peer.host.get_connected_peers():
        advert = peer.directory.get(str(pid), now)
        if advert is not None and advert.capacity.addrs:
            addrs = list(advert.capacity.addrs)
        else:
            try:
                addrs = [str(a) for a in store.addrs(pid)]
            except Exception:  # py-libp2p raises when it has no address of the peer
                addrs = []
        known.update(str(pid), [a for a in addrs if "/tcp/" in a], now)


async def _join(peer: Peer, via: ID) -> None:
    """After the first connection: fill the routing table and the capacity directory, then advertise."""
    try:
        await peer.dht.refresh_routing_table()
    except Exception as exc:
        log.warning("dht.refresh_failed", error=_one_line(exc))
    try:
        count = await peer.sync_capacity_from(via)
        log.info("capacity.synced", via=str(via), adverts=count)
    except PangeaError as exc:
        log.warning("capacity.sync_failed", via=str(via), error=str(exc))
    peer.publisher.publish_soon()
    peer.notify()


async def _advert_task(peer: Peer) -> None:
    # gossipsub sends our own messages only to our mesh peers for the topic; until a heartbeat grafts one, a
    # publish reaches nobody, and right after joining the mesh holds one or two peers from which the advert
    # may not reach everyone. So after being alone, the advert is published again when the mesh gets a first
    # peer and once more when it first reaches mesh_degree_low.
    alone, full = True, False
    degree_low = peer.config.gossip.mesh_degree_low
    while True:
        mesh = peer.mesh_peer_count()
        if mesh == 0:
            alone, full = True, False
        elif alone or (not full and mesh >= degree_low):
            alone, full = False, mesh >= degree_low
            peer.publisher.publish_soon()
        if peer.publisher.due(time.time()):
            try:
                await peer.publish_advert()
            except Exception as exc:
                log.warning("advert.publish_failed", error=_one_line(exc))
        await trio.sleep(min(0.25, peer.publisher.interval_s))


async def _maintenance_task(peer: Peer, known: KnownPeers) -> None:
    next_refresh = trio.current_time() + peer.config.dht.refresh_interval_s
    next_save = trio.current_time()
    while True:
        gone = peer.directory.expire(time.time())
        if gone:
            log.info("capacity.expired", peers=len(gone))
            for peer_id in gone:
                if peer.nat is not None:
                    peer.nat.learn_relay_addrs(peer_id, [])
                if peer.compute is not None:  # its advert expired: whatever it was running for us is reassigned
                    peer.compute.on_peer_gone(peer_id)
            peer.notify()
        peer.check_health()
        if trio.current_time() >= next_save:
            next_save = trio.current_time() + known_peers.SAVE_INTERVAL_S
            _remember_connected(peer, known)
            await trio.to_thread.run_sync(known.save)
        if trio.current_time() >= next_refresh:
            next_refresh = trio.current_time() + peer.config.dht.refresh_interval_s
            try:
                await peer.dht.refresh_routing_table()
            except Exception as exc:
                log.warning("dht.refresh_failed", error=_one_line(exc))
        await trio.sleep(0.5)


async def _ping_task(peer: Peer) -> None:
    """Measure the round-trip time to each connected peer (``peer.rtt_s``: the scheduler prefers close workers,
    the dashboard shows it) soon after it connects and every PING_INTERVAL_S; forget it when it disconnects."""
    pinged: dict[str, float] = {}  # peer -> when it was last pinged (trio's clock)
    while True:
        connected = peer.connected_peers()
        for gone in pinged.keys() - set(connected):
            del pinged[gone]
            peer.rtt_s.pop(gone, None)
        now = trio.current_time()
        due = [p for p in connected if now - pinged.get(p, -math.inf) >= PING_INTERVAL_S][:PING_PEERS_MAX]
        for peer_id in due:
            pinged[peer_id] = now
            try:
                with trio.fail_after(PING_TIMEOUT_S):
                    await peer.ping(ID.from_base58(peer_id))
            except Exception as exc:  # a peer that does not answer keeps its last measurement until it leaves
                log.debug("ping.failed", peer=peer_id, error=_one_line(exc))
        await trio.sleep(1.0)

async def _nat_task(peer: Peer) -> None:
    """Reachability and relays (net/nat.py): probe when the model says so, serve as a relay while public,
    keep reservations on relays while private; publish the advert again when any of it changes."""
    nat = peer.nat
    if nat is None:
        return
    shown: tuple[object, ...] = ()
    while True:
        now = time.time()
        if (nat.config.reachability == "auto" and nat.model.next_probe_at(now) <= now and peer.connected_peers()
                and not nat.upnp_pending()):
            try:
                await nat.probe(nat.own_addrs(), now)
            except Exception as exc:
                log.warning("nat.probe_failed", error=_one_line(exc))
        now = time.time()
        nat.update_relay_service(now)
        if nat.status(now) is Reachability.PRIVATE:
            adverts = peer.directory.adverts(now)
            trust = peer.compute.trust if peer.compute is not None else None
            scores = {} if trust is None else {a.peer_id: trust.score(a.peer_id, now) for a in adverts}
            await nat.keep_relays(relay_candidates(adverts, peer.peer_id, peer.rtt_s, scores), now)
        elif nat.status(now) is Reachability.PUBLIC and nat.book.held():
            await nat.release_relays()  # reachable directly now: dialers must not keep taking the relay
        state = (nat.status(now), nat.serving_relay, tuple(nat.book.held()))
        if state != shown:
            shown = state
            log.info("nat.changed", reachability=state[0].value, relay_service=state[1], relays=list(state[2]))
            peer.publisher.publish_soon()
            peer.notify()
        await trio.sleep(NAT_TICK_S)


async def _drain(subscription: Any) -> None:
    # Adverts and proofs are handled by their validators; a subscription only has to be emptied.
    while True:
        await subscription.get()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --- lifecycle --------------------------------------------------------------------------------------------


def _listen_addrs(config: NodeConfig) -> list[multiaddr.Multiaddr]:
    """The addresses to listen on: those configured (TransportError saying what to do if one is taken), else
    the default port or, when another local peer has it, the next free one."""
    if config.listen:
        addrs = [hostlib.parse_multiaddr(a, "listen") for a in config.listen]
        for addr in addrs:
            try:
                hostlib.check_listen_addr_free(addr)
            except TransportError as exc:
                raise TransportError(
                    f"{exc}; give this peer (data dir {config.data_dir}) another port: --listen with another "
                    f"port or tcp/0 for any free one (or listen in its config file)"
                ) from None
        return addrs
    for port in range(DEFAULT_LISTEN_PORT, DEFAULT_LISTEN_PORT + DEFAULT_PORTS_TRIED):
        addr = multiaddr.Multiaddr(DEFAULT_LISTEN.format(port=port))
        try:
            hostlib.check_listen_addr_free(addr)
        except TransportError:
            continue
        if port != DEFAULT_LISTEN_PORT:
            log.info("listen.default_port_taken", port=DEFAULT_LISTEN_PORT, using=port)
        return [addr]
    log.info("listen.default_ports_taken", ports=f"{DEFAULT_LISTEN_PORT}..{port}", using="any free port")
    return [multiaddr.Multiaddr(DEFAULT_LISTEN.format(port=0))]


async def _open_api_listeners(peer: Peer) -> list[trio.SocketListener]:
    """The API's listeners: on ``api.port`` if set (TransportError saying what to do if it is taken), else on
    5101 or, when another local peer has it, the next free port (the CLI reads it from DATA_DIR/api)."""
    cfg = peer.config.api
    default = cfg.port is None
    ports = [cfg.port] if cfg.port is not None else [
        *range(DEFAULT_API_PORT, DEFAULT_API_PORT + DEFAULT_PORTS_TRIED), 0]
    for port in ports:
        try:
            listeners = await trio.open_tcp_listeners(port, host=cfg.host)
        except OSError as exc:
            if default and exc.errno == errno.EADDRINUSE:
                continue
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = (f"; another program (another pangea peer?) has it: give this peer (data dir "
                        f"{peer.config.data_dir}) another with --api-port PORT (0 = any free port; or api.port in "
                        f"its config file)")
            raise TransportError(f"cannot serve the API on {cfg.host}:{port}: {exc.strerror}{hint}") from None
        peer.api_port = listeners[0].socket.getsockname()[1]
        if default and port != DEFAULT_API_PORT:
            log.info("api.default_port_taken", port=DEFAULT_API_PORT, using=peer.api_port)
        return list(listeners)
    raise AssertionError("port 0 is always free")  # pragma: no cover


def _serve_api(peer: Peer, listeners: list[trio.SocketListener], nursery: trio.Nursery, token: str) -> None:
    cfg = peer.config.api
    router = api.Router()
    add_routes(router, peer)
    if peer.compute is not None:
        add_job_routes(router, peer.compute)
    unspecified = {"0.0.0.0", "::", ""}  # a browser may reach 0.0.0.0 as this machine: never a name to trust
    gate = api.Gate(token, cfg.allow_remote, frozenset({*cfg.allowed_hosts, cfg.host} - unspecified))
    limits = api.Limits(cfg.request_bytes_max, cfg.connections_max, cfg.idle_timeout_s)
    add_dashboard_routes(router, peer)
    nursery.start_soon(api.serve, router, listeners, gate, limits)
    datadir.write_api_address(peer.config.data_dir, cfg.host, peer.api_port)


def _sandbox_config(config: NodeConfig) -> SandboxConfig:
    cfg = config.compute
    limits = SandboxLimits(fuel_max=cfg.fuel_max, memory_bytes_max=cfg.memory_bytes_max,
                           wall_time_s=cfg.wall_time_s_max, output_bytes_max=cfg.output_bytes_max)
    # compiled modules (the Python interpreter above all) are compiled once per peer, not once per process
    return SandboxConfig(limits_max=limits, workers=cfg.sandbox_workers or task_slots(config),
                         cache_dir=config.data_dir / "cache" / "modules")


class _DirectoryWorkers:
    """The candidate workers (node/ports.py WorkerDirectory): the capacity directory, and the pings measured."""

    def __init__(self, directory: CapacityDirectory, rtts: Mapping[str, float], nat: NatService | None) -> None:
        self.directory = directory
        self.rtts = rtts
        self.nat = nat

    def adverts(self, now: float) -> Sequence[CapacityAdvert]:
        return self.directory.adverts(now)

    def rtt_s(self, peer_id: str) -> float | None:
        return self.rtts.get(peer_id)

    def link(self, peer_id: str) -> Link | None:
        return None if self.nat is None else self.nat.link(peer_id)

    def circuit_age_s(self, peer_id: str, now: float) -> float | None:
        return None if self.nat is None else self.nat.circuit_age_s(peer_id, now)


def _start_compute(peer: Peer, sandbox: Sandbox, nursery: trio.Nursery) -> ComputeService:
    cfg, config = peer.config.compute, peer.config
    behaviour = BehaviourConfig(
        worker=AdmissionConfig(
            slots=task_slots(config), queue_max=cfg.queue_max,
            limits_max=ReceiptLimits(cfg.fuel_max, cfg.memory_bytes_max, cfg.wall_time_s_max, cfg.output_bytes_max),
            input_bytes_max=cfg.input_bytes_max, depth_max=cfg.depth_max, speed_fuel_per_s=peer.speed_fuel_per_s,
        ),
        split=config.coordinator.scheduler,  # split_above_s and parts_max come from [compute]
        coordinator=config.coordinator,
        fraud=config.fraud,
    )
    blocks = BlockStore(config.data_dir / "blocks")
    ports = ComputePorts(
        identity=peer.identity, streams=ComputeDialer(peer.host, peer.traffic, peer.nat.connect if peer.nat else None),
        sandbox=sandbox, blocks=blocks, network=NetworkBlocks(peer.host, peer.dht, peer.traffic),
        workers=_DirectoryWorkers(peer.directory, peer.rtt_s, peer.nat),
        clock=time.time, journal=Journal(config.data_dir / "jobs.sqlite"), publish_proof=peer.publish_proof,
    )
    trust, trust_store = TrustBook(config.trust), TrustStore(config.data_dir / TRUST_FILE_NAME, clock=ports.clock)
    trust_store.load(trust)
    nursery.start_soon(trust_store.keep_saved, trust)  # saves at shutdown too
    compute = ComputeService(ports, behaviour, nursery, trust=trust, faults=config.faults)
    peer.compute = compute
    peer.host.set_stream_handler(
        COMPUTE_PROTOCOL, lambda stream: compute.serve(peer.traffic.wrap(stream, "compute"), remote_peer(stream)))
    peer.host.set_stream_handler(BLOCK_PROTOCOL, lambda stream: serve_block(blocks, peer.traffic.wrap(stream, "block")))
    nursery.start_soon(compute.ticker)
    compute.resume_journal()
    return compute


@asynccontextmanager
async def open_peer(config: NodeConfig, identity: Identity | None = None) -> AsyncIterator[Peer]:
    """Start a peer; yield it running; stop it cleanly. Raises PangeaError subclasses with clear messages."""
    ensure_data_dir(config.data_dir)
    lock_fd = datadir.lock(config.data_dir)
    try:
        if identity is None:
            identity, created = load_or_create_identity(config.data_dir)
            if created:
                log.info("identity.created", peer_id=identity.peer_id, data_dir=str(config.data_dir))
        async with _running_peer(config, identity) as peer:
            yield peer
    finally:
        datadir.unlock(config.data_dir, lock_fd)


async def run_node(config: NodeConfig, started: Callable[[Peer], None]) -> None:
    """Run a peer until SIGINT or SIGTERM (what `pangea node` does); ``started(peer)`` once it is up."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_peer(config) as peer:
            started(peer)
            async for signum in signals:
                log.info("peer.stopping", signal=signal.Signals(signum).name)
                break


@asynccontextmanager
async def _running_peer(config: NodeConfig, identity: Identity) -> AsyncIterator[Peer]:
    boots = {a: hostlib.parse_peer_addr(a, "bootstrap") for a in config.bootstrap}
    listen = _listen_addrs(config)
    api_token = load_or_create_api_token(config.data_dir)
    speed = await trio.to_thread.run_sync(measure_speed)
    host = hostlib.make_host(identity, config.max_connections)
    traffic = Traffic()
    count_connections(host, traffic)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen))
        if not host.get_transport_addrs():
            raise TransportError(f"could not listen on {', '.join(map(str, listen))}")
        dht = make_dht(host, server_mode=config.dht.mode == "server")
        pubsub, router = make_gossip(host, config.gossip)
        peer = Peer(
            config=config, identity=identity, host=host, dht=dht, pubsub=pubsub,
            directory=CapacityDirectory(config.capacity.directory),
            publisher=AdvertPublisher(
                identity, config.capacity.advert_interval_s, config.capacity.advert_ttl_s,
                gap_s_min=AdvertPublisher.DEFAULT_GAP_FACTOR * config.capacity.directory.interval_s_min,
                network_adverts_per_s_max=config.capacity.network_adverts_per_s_max,
                ttl_s_max=config.capacity.directory.ttl_s_max,
            ),
            speed_fuel_per_s=speed,
            traffic=traffic,
        )
        host.get_network().register_notifee(ConnectionEvents(peer))
        peer.nat = await stack.enter_async_context(NatService(host, config.nat, find_peer=dht.find_peer).running())
        await stack.enter_async_context(background_trio_service(pubsub))
        await stack.enter_async_context(background_trio_service(router))
        await stack.enter_async_context(background_trio_service(dht))
        await pubsub.wait_until_ready()
        pubsub.set_topic_validator(TOPIC, peer.validate_advert, False)
        subscription = await pubsub.subscribe(TOPIC)
        pubsub.set_topic_validator(fraud.TOPIC, peer.validate_proof, False)
        proofs = await pubsub.subscribe(fraud.TOPIC)  # proofs are handled by the validator (state.py)
        host.set_stream_handler(CAPACITY_SYNC_PROTOCOL, lambda stream: serve_capacity_sync(peer.directory, stream))
        host.set_stream_handler(PING_PROTOCOL, serve_ping)
        api_listeners = await _open_api_listeners(peer)
        sandbox_cfg = _sandbox_config(config)
        peer.recent.attach()
        try:
            async with trio.open_nursery() as nursery, open_sandbox(sandbox_cfg) as sandbox:
                _start_compute(peer, sandbox, nursery)
                _serve_api(peer, api_listeners, nursery, api_token)
                rng = random.Random()  # jitter only; nothing depends on its sequence
                for addr, info in boots.items():
                    peer.bootstrap[addr] = state = BootstrapState(addr, str(info.peer_id))
                    nursery.start_soon(_bootstrap_task, peer, info, state, rng)
                known = KnownPeers(config.data_dir)
                known.load()
                nursery.start_soon(_known_peers_task, peer, known, rng)
                nursery.start_soon(_advert_task, peer)
                nursery.start_soon(_maintenance_task, peer, known)
                nursery.start_soon(_ping_task, peer)
                nursery.start_soon(_nat_task, peer)
                nursery.start_soon(_drain, subscription)
                nursery.start_soon(_drain, proofs)
                log.info("peer.started", peer_id=peer.peer_id, addrs=peer.addrs(), api=f"127.0.0.1:{peer.api_port}")
                try:
                    yield peer
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            # Close the host before the pubsub/DHT service contexts unwind (notes §6, §9.3).
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await hostlib.close_hosts([host])
            if peer.compute is not None:
                peer.compute.close()
            peer.recent.detach()
            log.info("peer.stopped", peer_id=identity.peer_id)
