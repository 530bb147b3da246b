"""Process-wide workarounds for py-libp2p 0.8.1 (../shared/notes/py-libp2p-0.8.1.md §9).

``apply()`` is idempotent and runs before any host, DHT or pubsub object is created. Each workaround below says
why it exists; ``tests/net/test_workarounds.py`` has a test per workaround that fails without it. The ones that
are constructor arguments rather than patches live in ``pangea_p2p.net.host`` (connection config) and
``pangea_p2p.net.overlay`` (gossipsub parameters), with the same kind of comment.

Not applied, because pangea does not use the affected feature: the ``request_response`` >6.5 MiB fix (§9.5;
our protocols use their own framing, ``pangea_p2p.net.framing``) and the relay v2 discovery fix (§9.9:
``pangea_p2p.net.nat`` picks relays from the capacity directory and reserves on them itself, so py-libp2p's
``RelayDiscovery`` is not used).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from libp2p.custom_types import TProtocol

DHT_PROTOCOL_ID = TProtocol("/pangea/kad/1.0.0")
GOSSIP_QUEUE_SIZE = 4096

_applied = False


def apply() -> None:
    """Apply every workaround once per process."""
    global _applied
    if _applied:
        return
    _applied = True
    _quiet_libp2p_logging()
    _private_dht_protocol()
    _larger_pubsub_queues()
    _no_auto_connector()
    _drop_tasks_scheduled_during_shutdown()
    _window_updates_at_half_window()
    _autonat_dials_back_afresh()
    _announced_circuit_addrs_keep_their_relay()
    _peerstore_keeps_only_a_peers_own_addrs()
    _reservations_are_for_the_requester()


def _quiet_libp2p_logging() -> None:
    # §9.7: the "libp2p" logger has no handler and propagate=False, so Python's last-resort handler prints its
    # WARNINGs to stderr: thousands of "Failed to read DHT message from stream" lines per run (a clean EOF
    # logged as a warning). A NullHandler stops the last-resort handler. `pangea node --libp2p-log LEVEL`
    # attaches a real handler when someone wants to see them.
    logging.getLogger("libp2p").addHandler(logging.NullHandler())


def _private_dht_protocol() -> None:
    # KadDHT takes a `protocol_prefix` argument but ignores it: every module uses the constant PROTOCOL_ID
    # ("/ipfs/kad/1.0.0") imported by name. Left alone, a pangea peer would answer the public IPFS DHT and
    # could fill its routing table with IPFS nodes that run no pangea protocol. So the constant is replaced in
    # each module that imported it, before any KadDHT exists. (compute-network-references.md §1.3: "use a
    # private protocol prefix".)
    import libp2p.kad_dht.common as common
    import libp2p.kad_dht.kad_dht as kad_dht
    import libp2p.kad_dht.peer_routing as peer_routing
    import libp2p.kad_dht.provider_store as provider_store
    import libp2p.kad_dht.value_store as value_store

    for module in (common, kad_dht, peer_routing, provider_store, value_store):
        module.PROTOCOL_ID = DHT_PROTOCOL_ID  # type: ignore[attr-defined]


def _no_auto_connector() -> None:
    # §9.2: the swarm's AutoConnector dials every peer in the peerstore until it holds
    # (low_watermark + high_watermark) / 2 connections (150 with pangea's settings), turning any overlay into
    # a full mesh. Config alone cannot stop it: the swarm also calls `maybe_connect` on every disconnect, and
    # setting high_watermark to 0 would make the connection pruner close every connection. So its one entry
    # point becomes a no-op; pangea's connections come from the DHT (lookups dial the peers they query), the
    # bootstrap addresses and task traffic.
    from libp2p.network.auto_connector import AutoConnector

    async def _maybe_connect_disabled(self: AutoConnector) -> None:
        return None

    AutoConnector.maybe_connect = _maybe_connect_disabled  # type: ignore[method-assign]


def _drop_tasks_scheduled_during_shutdown() -> None:
    # §9.3 ("Nursery is closed to new arrivals"): while a pubsub service stops, its stream readers still run
    # and schedule a task per incoming message; TrioManager checks `is_running`, but the task nursery may
    # already be closed, and trio raises RuntimeError, which escapes through the host's stream handler and
    # crashes the whole peer. Closing the host first (pangea_p2p.node.peer) avoids most of it; with many
    # peers under load it still happened (seen with 24 peers in one process). A task scheduled into a closed
    # nursery belongs to a service that is stopping, so it is dropped.
    from libp2p.tools.anyio_service.trio_manager import TrioManager

    original = TrioManager._schedule_task

    def _schedule_task(self: TrioManager, task: Any) -> None:
        try:
            original(self, task)
        except RuntimeError as exc:
            if "closed to new arrivals" not in str(exc):
                raise
            logging.getLogger("pangea.net").debug("dropped task %s of a stopping service", task)

    TrioManager._schedule_task = _schedule_task  # type: ignore[method-assign]


def _window_updates_at_half_window() -> None:
    # Yamux flow control: a receiver grants its peer more send window with a WINDOW_UPDATE frame. go-yamux (and
    # rust-yamux) send one once half the window has been consumed: one frame per ~128 KiB read. py-libp2p 0.8.1
    # sends one after almost every read ("partial slack", then PY_YAMUX_RELEASE_ON_READ, on by default): for a
    # stream of small messages, a whole extra frame (Noise encryption, a socket send, and a wake-up of the
    # other process) per message read, each way. That was about a third of the sends of a busy submitter.
    # Here the update follows go-yamux's rule (GrowTo with its half-window hysteresis, and the auto-tuning of
    # the window py-libp2p does with it): the sender never waits, as it still has half a window in hand when
    # the update goes out; a receiver that stops reading still stops its sender, which is what flow control is
    # for.
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    async def _auto_tune_and_send_window_update(self: YamuxStream, *, bytes_read: int = 0) -> None:
        delta = 0
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            grow = self.target_recv_window - (self.recv_window + buffered)
            if grow > 0 and grow >= self._grow_threshold():
                delta = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
                self._pending_recv_release = 0
        if delta > 0:
            await self.send_window_update(delta, skip_lock=True)

    YamuxStream._auto_tune_and_send_window_update = _auto_tune_and_send_window_update  # type: ignore[method-assign]


def _larger_pubsub_queues() -> None:
    # §9.4: pubsub drops messages silently when a 32-slot queue is full: the per-peer outbound RpcQueue and
    # the local subscription channel. Every peer's advert crosses a hub peer within the same second when many
    # peers start together, so 32 is too small. The queues stay bounded (GOSSIP_QUEUE_SIZE).
    import libp2p.pubsub.pubsub as pubsub_module
    import libp2p.pubsub.rpc_queue as rpc_queue

    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = GOSSIP_QUEUE_SIZE
    setattr(pubsub_module, "RpcQueue", functools.partial(rpc_queue.RpcQueue, max_size=GOSSIP_QUEUE_SIZE))  # noqa: B010


AUTONAT_DIAL_BACK_TIMEOUT_S = 10.0


def _autonat_dials_back_afresh() -> None:
    # An AutoNAT server answers "can you dial me back?" by calling `host.connect(peer, addr)`, and
    # `BasicHost.connect` returns at once when a connection to that peer exists already, which it always does
    # (the request came over one). So every peer that sends an address with the IP the server sees it from is
    # told "reachable", whether anything listens there or not: a peer behind a NAT that learned its router's
    # address (identify's observed address, a port mapping that failed) would believe it is public, stop
    # looking for relays, and get no work. The dial-back here opens a new transport connection to the address
    # and runs the security handshake (which proves the peer id), then closes it: a real dial, not added to
    # the swarm (so max_connections_per_peer=1 is kept). go-libp2p's AutoNAT dials back with a separate host
    # for the same reason.
    import multiaddr
    import trio
    from libp2p.host.autonat.autonat import AutoNATService
    from libp2p.peer.id import ID

    async def _try_dial(self: AutoNATService, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        swarm: Any = self.host.get_network()
        for raw in addrs:
            try:
                addr = multiaddr.Multiaddr(raw)
                if addr.get_peer_id() is None:
                    addr = addr.encapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))
                transport = swarm.transport_manager.transport_for_dialing(addr)
                if transport is None:
                    continue
                with trio.fail_after(AUTONAT_DIAL_BACK_TIMEOUT_S):
                    conn = await transport.dial(addr)
                    try:
                        secured = await swarm.upgrader.upgrade_security(conn, True, peer_id)
                        await secured.close()
                    finally:
                        await conn.close()
                return bytes(raw)
            except trio.Cancelled:
                raise
            except Exception:
                continue
        return None

    AutoNATService._try_dial = _try_dial  # type: ignore[method-assign]


def _without_peer_suffix(addr: Any) -> tuple[Any, str | None]:
    """``addr`` without a trailing ``/p2p/<id>``, and that id (None if it has none). Only the *last* component
    counts: the ``/p2p/<relay>`` inside a circuit address stays."""
    from multiaddr.protocols import P_P2P

    last = list(addr.items())[-1:]  # empty for an empty multiaddr
    if not last or last[0][0].code != P_P2P:
        return addr, None
    return addr.decapsulate_code(P_P2P), str(last[0][1])


def _announced_circuit_addrs_keep_their_relay() -> None:
    # BasicHost.get_addrs (basic_host.py:528-536) removes "any existing /p2p/ component" before appending
    # /p2p/<self>, and finds it with value_for_protocol("p2p"), which is the *first* one: for a circuit address
    # <relay addr>/p2p/<relay>/p2p-circuit/p2p/<self> that is the relay's id, and decapsulating it cuts from
    # there on, leaving /ip4/<relay ip>/tcp/<relay port>/p2p/<self>: the relay's address claimed as ours.
    # Identify sends get_addrs as listenAddrs and in the signed peer record, so the DHT would spread that. Here
    # only a trailing /p2p/<id> is replaced by our own, as go-libp2p does; the rest is get_addrs unchanged
    # (listen addresses, confirmed observed ones, then the host's addrs factory: net/nat.py installs one that
    # adds a private peer's circuit addresses).
    import multiaddr
    from libp2p.host.basic_host import BasicHost

    def get_addrs(self: BasicHost) -> list[multiaddr.Multiaddr]:
        own = multiaddr.Multiaddr(f"/p2p/{self.get_id()}")
        candidates = list(self.get_transport_addrs())
        observed = self._observed_addr_manager
        if observed is not None:
            seen = {str(a) for a in candidates}
            for addr in observed.addrs():
                if str(addr) not in seen:
                    seen.add(str(addr))
                    candidates.append(addr)
        factory = self._addrs_factory
        addrs = list(factory(candidates)) if factory is not None else candidates
        return [_without_peer_suffix(a)[0].encapsulate(own) for a in addrs]

    BasicHost.get_addrs = get_addrs  # type: ignore[method-assign]


PEER_ADDRS_MAX = 64


def _peerstore_keeps_only_a_peers_own_addrs() -> None:
    # py-libp2p's peerstore stores whatever addresses it is given for a peer: identify's listenAddrs and signed
    # record (update.py:64-100, also on identify push), the addresses in a DHT answer (peer_routing.py:444-458),
    # each a list that only grows (PeerData.add_addrs). So a peer could announce, as its own, a circuit address
    # ending in /p2p/<someone else>, and a DHT node could hand out, for peer A, addresses ending in another
    # peer's id; every peer that stored them would spread them on in its DHT answers. go-libp2p's address book
    # (pstoremem AddAddrs, cleanAddrs) keeps an address for a peer only if it ends in that peer's id or in no
    # id, and stores it without that suffix; the same here, at the one place every source goes through
    # (PeerStore.add_addr calls add_addrs, consume_peer_record too). A peer's addresses are also bounded: the
    # newest PEER_ADDRS_MAX are kept.
    import multiaddr
    from libp2p.peer.id import ID
    from libp2p.peer.peerstore import PeerStore

    original = PeerStore.add_addrs

    def own_addrs(peer_id: ID, addrs: Any) -> list[multiaddr.Multiaddr]:
        out: list[multiaddr.Multiaddr] = []
        expected = str(peer_id)
        for addr in addrs:
            try:
                if not isinstance(addr, multiaddr.Multiaddr):
                    addr = multiaddr.Multiaddr(addr)
                bare, suffix = _without_peer_suffix(addr)
                if suffix is not None and suffix != expected and ID.from_base58(suffix) != peer_id:
                    continue
            except Exception:  # unparsable, or a suffix that is no peer id
                continue
            if len(bare.to_bytes()) > 0:
                out.append(bare)
        return out

    def add_addrs(self: PeerStore, peer_id: ID, addrs: Any, ttl: int = 0) -> None:
        addrs = list(addrs)
        kept = own_addrs(peer_id, addrs)
        if addrs and not kept:
            return
        original(self, peer_id, kept, ttl)
        data = self.peer_data_map.get(peer_id)
        if data is not None and len(data.addrs) > PEER_ADDRS_MAX:
            data.addrs = data.addrs[-PEER_ADDRS_MAX:]

    PeerStore.add_addrs = add_addrs  # type: ignore[method-assign]


def _reservations_are_for_the_requester() -> None:
    # py-libp2p's relay (CircuitV2Protocol._handle_reserve, protocol.py:509) takes the reservation's peer from
    # the RESERVE message's optional `peer` field when it is set, and only else from the connection. So one
    # connection can reserve slots in the name of any peer id, needing neither their keys nor a connection:
    # a few requests fill every slot of the relay (the count includes reservations of peers that are not
    # connected) and the private peers that need it are refused for the reservation's hour. The circuit relay
    # v2 spec makes the reservation the connection's remote peer's; so does this.
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol

    original = CircuitV2Protocol._handle_reserve

    @functools.wraps(original)
    async def _handle_reserve(self: CircuitV2Protocol, stream: Any, msg: HopMessage) -> None:
        msg.ClearField("peer")
        await original(self, stream, msg)

    CircuitV2Protocol._handle_reserve = _handle_reserve  # type: ignore[method-assign]
