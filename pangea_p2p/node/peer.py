"""The trio driver of one peer: a py-libp2p host in the Kademlia DHT and on gossipsub, publishing its signed
capacity advert and keeping a capacity directory, with a local HTTP API.

``open_peer(config)`` is an async context manager that yields a running ``Peer`` and shuts it down cleanly
(listeners closed, services stopped, no leaked tasks) when the block exits or is cancelled. ``run_node`` wraps
it for the CLI with signal handling.

What runs inside (one nursery):

- the bootstrap task per ``--bootstrap`` address: dial, add to the routing table, look ourselves up (which makes
  every peer we query add us too), fetch the bootstrap peer's capacity directory; on failure retry with
  exponential backoff and jitter, for ever, saying so in the log;
- the advert task: publish our advert every ``capacity.advert_interval_s`` and as soon as a first neighbour
  subscribes to the topic;
- the maintenance task: expire adverts, refresh the routing table every ``dht.refresh_interval_s``;
- the API server on 127.0.0.1.

The decisions are the core's (``CapacityDirectory``, ``AdvertPublisher``); this module only moves bytes and
reads clocks. Adverts use the wall clock (``time.time()``: they are compared across machines); timers use
trio's clock.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

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
from pangea_p2p.core.jobs.scheduler import SchedulerConfig
from pangea_p2p.core.jobs.worker import WorkerConfig, WorkerService
from pangea_p2p.core.verify.receipts import ReceiptLimits
from pangea_p2p.errors import PangeaError, RemoteProtocolError, TransportError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, write_frame
from pangea_p2p.net.overlay import make_dht, make_gossip
from pangea_p2p.node import api, resources
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.blockx import BLOCK_PROTOCOL, serve_block
from pangea_p2p.node.compute import COMPUTE_PROTOCOL, ComputeService
from pangea_p2p.node.config import NodeConfig
from pangea_p2p.node.job_routes import add_job_routes
from pangea_p2p.node.journal import Journal
from pangea_p2p.node.keyfile import ensure_data_dir, load_or_create_identity
from pangea_p2p.node.logs import get_logger
from pangea_p2p.node.routes import add_routes
from pangea_p2p.sandbox import Sandbox, SandboxConfig, SandboxLimits, measure_speed, open_sandbox
from pangea_p2p.wire import ping_pb2

log = get_logger("peer")

CAPACITY_SYNC_PROTOCOL = TProtocol("/pangea/capacity-sync/1.0.0")
PING_PROTOCOL = TProtocol("/pangea/ping/1.0.0")
PING_BYTES_MAX = 64
PING_NONCE_BYTES_MAX = 32
SYNC_ADVERTS_MAX = 10_000
SYNC_TIMEOUT_S = 10.0
API_FILE_NAME = "api"
LOCK_FILE_NAME = "repo.lock"


@dataclass
class BootstrapState:
    addr: str
    status: str = "connecting"
    attempts: int = 0
    last_error: str = ""


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

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def addrs(self) -> list[str]:
        """Full dialable multiaddrs (what another peer passes as --bootstrap)."""
        return hostlib.full_addrs(self.host)

    def local_capacity(self) -> LocalCapacity:
        slots = task_slots(self.config)
        free = slots if self.compute is None else self.compute.worker.free_slots()
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
            addrs=tuple(hostlib.dialable_addrs(self.host)[:16]),
        )

    def routing_table_peers(self) -> list[str]:
        return sorted(str(p) for p in self.dht.routing_table.get_peer_ids())

    def connected_peers(self) -> list[str]:
        return sorted(str(p) for p in self.host.get_connected_peers())

    def _notify(self) -> None:
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
        self._notify()
        return True

    def _learn_addrs(self, advert: CapacityAdvert) -> None:
        if advert.peer_id == self.peer_id or not advert.capacity.addrs:
            return
        try:
            addrs = [multiaddr.Multiaddr(a) for a in advert.capacity.addrs]
            ttl = max(1, int(advert.expires_at - time.time()))
            self.host.get_peerstore().add_addrs(ID.from_base58(advert.peer_id), addrs, ttl)
        except Exception as exc:  # a signed but unparsable address: keep the advert, skip the address
            log.debug("advert.bad_addr", peer=advert.peer_id, error=repr(exc))

    async def publish_advert(self) -> None:
        data = self.publisher.make(time.time(), self.local_capacity(), network_size=len(self.directory))
        await self.pubsub.publish(TOPIC, data)

    def topic_peer_count(self) -> int:
        return len(self.pubsub.peer_topics.get(TOPIC, ()))

    def mesh_peer_count(self) -> int:
        """Peers in our gossipsub mesh for the capacity topic: those our own publishes go to."""
        router = self.pubsub.router
        return len(getattr(router, "mesh", {}).get(TOPIC, ()))

    # --- capacity sync: a joining peer asks a neighbour for the adverts it holds ------------------------

    async def handle_capacity_sync(self, stream: INetStream) -> None:
        try:
            for advert in self.directory.adverts(time.time())[:SYNC_ADVERTS_MAX]:
                await write_frame(stream, advert.signed)
        except PangeaError as exc:
            log.debug("sync.serve_failed", error=str(exc))
        finally:
            await stream.close()

    async def sync_capacity_from(self, peer: ID) -> int:
        """Fetch ``peer``'s directory and offer each advert to ours; the number accepted."""
        stream = await hostlib.open_stream(self.host, peer, [CAPACITY_SYNC_PROTOCOL])
        accepted = 0
        try:
            reader = FrameReader(stream, self.config.capacity.directory.advert_bytes_max)
            with trio.move_on_after(SYNC_TIMEOUT_S) as scope:
                for _ in range(SYNC_ADVERTS_MAX):
                    data = await reader.read_frame()
                    if data is None:
                        break
                    try:
                        advert = self.directory.offer(data, now=time.time(), copy=True)
                    except AdvertRejected:
                        continue  # stale or expired copies are normal here; forgeries are counted
                    self._learn_addrs(advert)
                    accepted += 1
            if scope.cancelled_caught:
                raise TransportError(f"capacity sync from {peer} took more than {SYNC_TIMEOUT_S}s")
        finally:
            await stream.close()
        if accepted:
            self._notify()
        return accepted

    # --- ping: round-trip times to neighbours -------------------------------------------------------------

    async def handle_ping(self, stream: INetStream) -> None:
        reader = FrameReader(stream, PING_BYTES_MAX)
        try:
            while (payload := await reader.read_frame()) is not None:
                nonce = _decode_ping(payload)
                await write_frame(stream, ping_pb2.Ping(nonce=nonce).SerializeToString())
        except PangeaError as exc:
            log.debug("ping.serve_failed", error=str(exc))
        finally:
            await stream.close()

    async def ping(self, peer: ID, count: int = 1) -> float:
        """Median round-trip time to ``peer`` in seconds over ``count`` pings on one stream."""
        stream = await hostlib.open_stream(self.host, peer, [PING_PROTOCOL])
        samples: list[float] = []
        try:
            reader = FrameReader(stream, PING_BYTES_MAX)
            for i in range(count):
                frame = ping_pb2.Ping(nonce=i.to_bytes(8, "big")).SerializeToString()
                start = trio.current_time()
                await write_frame(stream, frame)
                if await reader.read_frame() != frame:
                    raise RemoteProtocolError(f"{peer} answered a ping with the wrong bytes")
                samples.append(trio.current_time() - start)
        finally:
            await stream.close()
        rtt = sorted(samples)[len(samples) // 2]
        self.rtt_s[str(peer)] = rtt
        return rtt


# --- the tasks ------------------------------------------------------------------------------------------


async def _bootstrap_task(peer: Peer, info: PeerInfo, state: BootstrapState, rng: random.Random) -> None:
    cfg = peer.config.dht
    delay = cfg.bootstrap_retry_s_min
    while True:
        state.attempts += 1
        try:
            with trio.fail_after(hostlib.STREAM_OPEN_TIMEOUT_S):
                await peer.host.connect(info)
            await peer.dht.add_peer(info.peer_id)
            state.status = "connected"
            peer._notify()
            log.info("bootstrap.connected", addr=state.addr, attempts=state.attempts)
            break
        except trio.Cancelled:
            raise
        except Exception as exc:
            state.status, state.last_error = "retrying", _one_line(exc)
            wait = delay * (0.5 + rng.random())
            log.warning("bootstrap.unreachable", addr=state.addr, error=state.last_error, retry_in_s=round(wait, 2))
            await trio.sleep(wait)
            delay = min(delay * 2, cfg.bootstrap_retry_s_max)
    await _join(peer, info.peer_id)


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
    peer._notify()


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


async def _maintenance_task(peer: Peer) -> None:
    next_refresh = trio.current_time() + peer.config.dht.refresh_interval_s
    while True:
        gone = peer.directory.expire(time.time())
        if gone:
            log.info("capacity.expired", peers=len(gone))
            if peer.compute is not None:
                for peer_id in gone:  # its advert expired: whatever it was running for us is reassigned
                    peer.compute.on_peer_gone(peer_id)
            peer._notify()
        if trio.current_time() >= next_refresh:
            next_refresh = trio.current_time() + peer.config.dht.refresh_interval_s
            try:
                await peer.dht.refresh_routing_table()
            except Exception as exc:
                log.warning("dht.refresh_failed", error=_one_line(exc))
        await trio.sleep(0.5)


async def _drain(subscription: Any) -> None:
    # Adverts are handled by the validator; the subscription only has to be emptied.
    while True:
        await subscription.get()


def _decode_ping(payload: bytes) -> bytes:
    try:
        nonce = bytes(ping_pb2.Ping.FromString(payload).nonce)
    except DecodeError:
        raise RemoteProtocolError("malformed ping frame") from None
    if not 1 <= len(nonce) <= PING_NONCE_BYTES_MAX:
        raise RemoteProtocolError(f"ping nonce of {len(nonce)} bytes, allowed 1..{PING_NONCE_BYTES_MAX}")
    return nonce


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --- lifecycle --------------------------------------------------------------------------------------------


def _lock_data_dir(data_dir: Path) -> int:
    fd = os.open(data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TransportError(f"another pangea peer is already running with data dir {data_dir}") from None
    return fd


async def _open_api_listeners(peer: Peer) -> list[trio.SocketListener]:
    cfg = peer.config.api
    try:
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
    except OSError as exc:
        raise TransportError(f"cannot serve the API on {cfg.host}:{cfg.port}: {exc.strerror}") from None
    peer.api_port = listeners[0].socket.getsockname()[1]
    return list(listeners)


def _serve_api(peer: Peer, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
    cfg = peer.config.api
    router = api.Router()
    add_routes(router, peer)
    if peer.compute is not None:
        add_job_routes(router, peer.compute)
    nursery.start_soon(api.serve, router, listeners, cfg.request_bytes_max)
    (peer.config.data_dir / API_FILE_NAME).write_text(f"{cfg.host}:{peer.api_port}\n")


def task_slots(config: NodeConfig) -> int:
    return config.capacity.task_slots or resources.cpu_cores()


def _sandbox_config(config: NodeConfig) -> SandboxConfig:
    cfg = config.compute
    limits = SandboxLimits(fuel_max=cfg.fuel_max, memory_bytes_max=cfg.memory_bytes_max,
                           wall_time_s=cfg.wall_time_s_max, output_bytes_max=cfg.output_bytes_max)
    # compiled modules (the Python interpreter above all) are compiled once per peer, not once per process
    return SandboxConfig(limits_max=limits, workers=cfg.sandbox_workers or task_slots(config),
                         cache_dir=config.data_dir / "cache" / "modules")


def _start_compute(peer: Peer, sandbox: Sandbox, nursery: trio.Nursery) -> ComputeService:
    cfg, config = peer.config.compute, peer.config
    worker = WorkerService(peer.peer_id, WorkerConfig(
        slots=task_slots(config), queue_max=cfg.queue_max,
        limits_max=ReceiptLimits(cfg.fuel_max, cfg.memory_bytes_max, cfg.wall_time_s_max, cfg.output_bytes_max),
        input_bytes_max=cfg.input_bytes_max, depth_max=cfg.depth_max, speed_fuel_per_s=peer.speed_fuel_per_s,
    ), SchedulerConfig(split_above_s=cfg.split_above_s, parts_max=cfg.split_parts_max))
    blocks = BlockStore(config.data_dir / "blocks")
    journal = Journal(config.data_dir / "jobs.sqlite")
    compute = ComputeService(peer, sandbox, blocks, journal, worker, nursery)
    peer.compute = compute
    peer.host.set_stream_handler(COMPUTE_PROTOCOL, compute.handle_stream)
    peer.host.set_stream_handler(BLOCK_PROTOCOL, lambda stream: serve_block(blocks, stream))
    nursery.start_soon(compute.ticker)
    compute.resume_journal()
    return compute


@asynccontextmanager
async def open_peer(config: NodeConfig, identity: Identity | None = None) -> AsyncIterator[Peer]:
    """Start a peer; yield it running; stop it cleanly. Raises PangeaError subclasses with clear messages."""
    ensure_data_dir(config.data_dir)
    lock_fd = _lock_data_dir(config.data_dir)
    try:
        if identity is None:
            identity, created = load_or_create_identity(config.data_dir)
            if created:
                log.info("identity.created", peer_id=identity.peer_id, data_dir=str(config.data_dir))
        async with _running_peer(config, identity) as peer:
            yield peer
    finally:
        (config.data_dir / API_FILE_NAME).unlink(missing_ok=True)
        os.close(lock_fd)


@asynccontextmanager
async def _running_peer(config: NodeConfig, identity: Identity) -> AsyncIterator[Peer]:
    listen = [hostlib.parse_multiaddr(a, "listen") for a in config.listen]
    boots = {a: hostlib.parse_peer_addr(a, "bootstrap") for a in config.bootstrap}
    for addr in listen:
        hostlib.check_listen_addr_free(addr)
    speed = await trio.to_thread.run_sync(measure_speed)
    host = hostlib.make_host(identity, config.max_connections)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen))
        if not host.get_transport_addrs():
            raise TransportError(f"could not listen on {', '.join(config.listen)}")
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
        )
        await stack.enter_async_context(background_trio_service(pubsub))
        await stack.enter_async_context(background_trio_service(router))
        await stack.enter_async_context(background_trio_service(dht))
        await pubsub.wait_until_ready()
        pubsub.set_topic_validator(TOPIC, peer.validate_advert, False)
        subscription = await pubsub.subscribe(TOPIC)
        host.set_stream_handler(CAPACITY_SYNC_PROTOCOL, peer.handle_capacity_sync)
        host.set_stream_handler(PING_PROTOCOL, peer.handle_ping)
        api_listeners = await _open_api_listeners(peer)
        sandbox_cfg = _sandbox_config(config)
        try:
            async with trio.open_nursery() as nursery, open_sandbox(sandbox_cfg) as sandbox:
                _start_compute(peer, sandbox, nursery)
                _serve_api(peer, api_listeners, nursery)
                rng = random.Random()  # jitter only; nothing depends on its sequence
                for addr, info in boots.items():
                    peer.bootstrap[addr] = state = BootstrapState(addr)
                    nursery.start_soon(_bootstrap_task, peer, info, state, rng)
                nursery.start_soon(_advert_task, peer)
                nursery.start_soon(_maintenance_task, peer)
                nursery.start_soon(_drain, subscription)
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
                try:
                    peer.compute.close_blocks()
                except OSError as exc:  # a full disk: the journal below is still written
                    log.error("blocks.close_failed", error=str(exc))
                finally:
                    if peer.compute.journal is not None:
                        peer.compute.journal.close()
            log.info("peer.stopped", peer_id=identity.peer_id)
