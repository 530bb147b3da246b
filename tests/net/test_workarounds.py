"""One test per py-libp2p 0.8.1 workaround (notes/py-libp2p-0.8.1.md §9); each fails without its workaround."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from pangea_p2p.core.identity import Identity
from pangea_p2p.errors import TransportError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net import workarounds
from pangea_p2p.net.config import GossipConfig
from pangea_p2p.net.overlay import make_dht, make_gossip
from pangea_p2p.testing import local_config, wait_for

LOCAL = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


@asynccontextmanager
async def running_hosts(n: int) -> AsyncIterator[list[IHost]]:
    hosts = [hostlib.make_host(Identity(bytes([i + 1]) * 32)) for i in range(n)]
    async with AsyncExitStack() as stack:
        for h in hosts:
            await stack.enter_async_context(h.run([LOCAL]))
        try:
            yield hosts
        finally:
            await hostlib.close_hosts(hosts)


async def connect(a: IHost, b: IHost) -> None:
    await a.connect(info_from_p2p_addr(b.get_addrs()[0]))


async def test_dial_does_not_wait_out_the_happy_eyeballs_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    # §9.1: with more than one connection allowed per peer, every dial sleeps _HAPPY_EYEBALLS_DELAY (250 ms)
    # after its last address. Made 60 s here, so a dial that waits for it cannot finish within the deadline.
    import libp2p.network.swarm as swarm_module

    monkeypatch.setattr(swarm_module, "_HAPPY_EYEBALLS_DELAY", 60.0)
    async with running_hosts(2) as (a, b):
        with trio.fail_after(20):
            await connect(a, b)
        assert b.get_id() in a.get_connected_peers()


async def test_auto_connector_does_not_dial_the_whole_peerstore() -> None:
    # §9.2: the AutoConnector would dial c, a peer a merely knows the address of.
    async with running_hosts(3) as (a, b, c):
        await connect(a, b)
        a.get_peerstore().add_addrs(c.get_id(), c.get_transport_addrs(), 3600)
        await a.get_network().auto_connector.maybe_connect()  # type: ignore[attr-defined]
        await trio.testing.wait_all_tasks_blocked()
        assert c.get_id() not in a.get_connected_peers()
        assert b.get_id() in a.get_connected_peers()


async def test_closing_a_peer_closes_its_listener(tmp_path: Path) -> None:
    # §9.3: leaving host.run() leaves the TCP listener accepting; open_peer closes the host explicitly.
    from pangea_p2p.node.peer import open_peer

    async with open_peer(local_config(tmp_path / "p")) as peer:
        port = int(multiaddr.Multiaddr(peer.addrs()[0]).value_for_protocol("tcp"))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
    with pytest.raises(OSError):  # noqa: PT011 - connection refused is all that can be said
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_gossip_relays_bursts_through_a_hub() -> None:
    # §9.4: a -> b -> c in a line; a publishes 60 messages at once. Without spam_protection off, b drops
    # everything above 10/s from its forwarder a; without the larger queues, 32-slot queues overflow.
    topic = "pangea/test-burst"
    async with running_hosts(3) as hosts, AsyncExitStack() as stack:
        gossips = [make_gossip(h, GossipConfig(heartbeat_interval_s=0.2)) for h in hosts]
        for pubsub, router in gossips:
            await stack.enter_async_context(background_trio_service(pubsub))
            await stack.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
        subs = [await pubsub.subscribe(topic) for pubsub, _ in gossips]
        a, b, c = hosts
        await connect(a, b)
        await connect(b, c)
        await wait_for(lambda: a.get_id() in gossips[1][0].peer_topics.get(topic, ())
                       and c.get_id() in gossips[1][0].peer_topics.get(topic, ()), 20)
        await wait_for(lambda: c.get_id() in gossips[1][1].mesh.get(topic, ())
                       and b.get_id() in gossips[0][1].mesh.get(topic, ()), 20)
        for i in range(60):
            await gossips[0][0].publish(topic, i.to_bytes(2, "big"))
        got = set()
        with trio.fail_after(30):
            while len(got) < 60:
                got.add(int.from_bytes((await subs[2].get()).data, "big"))
        assert got == set(range(60))


def test_gossip_heartbeat_is_explicit_and_not_rewritten_by_adaptive_gossip() -> None:
    # §9.6: the default heartbeat is 120 s; and 0.8.1's adaptive gossip raises it to 30-60 s when the mesh
    # health score is low (e.g. fewer peers than the mesh degree), the opposite of what it documents.
    host = hostlib.make_host(Identity(b"h" * 32))
    _, router = make_gossip(host, GossipConfig(heartbeat_interval_s=1.0))
    assert router.heartbeat_interval == 1.0
    router.network_health_score = 0.3
    router._adapt_gossip_parameters()
    assert router.heartbeat_interval == 1.0


def test_libp2p_warnings_do_not_reach_stderr() -> None:
    # §9.7: py-libp2p logs thousands of warnings per run through Python's last-resort handler. Checked in a
    # fresh interpreter: pytest's own log capture would hide the last-resort handler here.
    code = (
        "import logging\n"
        "from pangea_p2p.net import workarounds\n"
        "import libp2p.kad_dht.kad_dht\n"
        "workarounds.apply()\n"
        "logging.getLogger('libp2p.kad_dht.kad_dht').warning('Failed to read DHT message from stream')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "Failed to read DHT message" not in out.stderr


async def test_open_stream_times_out_instead_of_hanging() -> None:
    # §9.8: new_stream hangs when the remote never completes negotiation (e.g. its stream limit is reached);
    # open_stream gives up at its deadline with a TransportError. The "peer" here is a raw TCP listener that
    # accepts and then says nothing.
    async with running_hosts(1) as (a,):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        other = Identity(b"s" * 32)
        from libp2p.peer.id import ID

        pid = ID.from_base58(other.peer_id)
        a.get_peerstore().add_addrs(pid, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], 3600)
        with trio.fail_after(20), pytest.raises(TransportError, match=r"took more than 0\.5s|cannot open"):
            await hostlib.open_stream(a, pid, [TProtocol("/pangea/none/1.0.0")], timeout_s=0.5)
        silent.close()


async def test_task_scheduled_into_a_closed_nursery_is_dropped() -> None:
    # §9.3: a stopping pubsub service whose stream reader schedules one more task must not crash the peer.
    from libp2p.tools.anyio_service.api import Service
    from libp2p.tools.anyio_service.trio_manager import TrioManager

    class Idle(Service):
        async def run(self) -> None:
            await trio.sleep_forever()

    workarounds.apply()
    ran = []

    async def job() -> None:
        ran.append(1)

    class StillRunning(TrioManager):  # the race: the manager says running, its nursery is already closed
        is_running = property(lambda self: True)  # type: ignore[assignment]

    manager = StillRunning(Idle())
    async with trio.open_nursery() as closed:
        pass
    manager._task_nursery = closed
    manager.run_task(job)  # raises RuntimeError("Nursery is closed to new arrivals") without the patch
    assert ran == []


async def test_dht_speaks_the_private_protocol_id() -> None:
    # KadDHT ignores its protocol_prefix argument; without the patch it would serve /ipfs/kad/1.0.0.
    async with running_hosts(1) as (a,):
        make_dht(a)
        protocols = set(a.get_mux().handlers)
        assert workarounds.DHT_PROTOCOL_ID in protocols
        assert "/ipfs/kad/1.0.0" not in protocols


async def test_yamux_grants_send_window_per_half_window_not_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # py-libp2p sent a WINDOW_UPDATE frame after nearly every read: 200 small request/response round trips cost
    # about 400 extra frames. go-yamux's rule grants window once half of it was consumed: none for these 40 KB,
    # and still enough for a bulk transfer far bigger than the window to flow.
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    updates: list[int] = []
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    proto, bulk = TProtocol("/pangea/test-window/1"), 4 << 20
    received = trio.Event()

    async def handler(stream: Any) -> None:
        for _ in range(200):
            assert await read_exactly(stream, 100) == b"q" * 100
            await stream.write(b"a" * 100)
        got = 0
        while got < bulk:  # bounded: each read returns at least a byte, or raises at EOF
            got += len(await stream.read(bulk - got))
        received.set()

    async with running_hosts(2) as (a, b):
        b.set_stream_handler(proto, handler)
        await connect(a, b)
        stream = await a.new_stream(b.get_id(), [proto])
        with trio.fail_after(30):
            for _ in range(200):
                await stream.write(b"q" * 100)
                assert await read_exactly(stream, 100) == b"a" * 100
            assert updates == []
            await stream.write(b"b" * bulk)  # 16x the initial 256 KiB window: it needs the updates to get through
            await received.wait()
        assert 0 < len(updates) < 64


async def test_a_deliberate_redial_is_not_refused_by_the_negative_dial_cache() -> None:
    # After one failed dial py-libp2p refuses every dial of that peer for 60 s ("recently failed all addresses
    # (negative cache)"): a restarted neighbour could not be redialed for a minute. hostlib.connect lifts it.
    async with running_hosts(1) as (a,):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        addr = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")
        b_identity = Identity(b"\x09" * 32)
        b_info = info_from_p2p_addr(multiaddr.Multiaddr(f"{addr}/p2p/{b_identity.peer_id}"))
        with pytest.raises(Exception):  # noqa: B017, PT011 - b is down: py-libp2p's own error types
            await a.connect(b_info)
        b = hostlib.make_host(b_identity)  # b restarts on the same address
        async with b.run([addr]):
            try:
                with pytest.raises(Exception, match="negative cache"):
                    await a.connect(b_info)  # py-libp2p does not even try
                await hostlib.connect(a, b_info, timeout_s=20)
                assert b.get_id() in a.get_connected_peers()
            finally:
                await hostlib.close_hosts([b])

async def test_autonat_dial_back_opens_a_new_connection() -> None:
    # An AutoNAT server "dials back" with host.connect, which returns at once over the connection the request
    # came on: an address where nothing listens would be confirmed as reachable. With the workaround, the
    # dial-back is a real dial: the closed port fails, the listening one succeeds (and proves the peer id).
    from libp2p.host.autonat.autonat import AutoNATService
    from libp2p.host.autonat.pb.autonat_pb2 import Message

    async with running_hosts(2) as (client, server):
        AutoNATService(server, serve=True)  # type: ignore[arg-type]
        asker = AutoNATService(client, serve=False)  # type: ignore[arg-type]
        await connect(client, server)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a dial there is refused
        dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{closed.getsockname()[1]}")
        try:
            with trio.fail_after(20):
                status, _ = await asker.query_server(server.get_id(), [dead.to_bytes()])
                assert status == Message.E_DIAL_ERROR
                live = client.get_transport_addrs()[0]
                status, addr = await asker.query_server(server.get_id(), [live.to_bytes()])
                assert status == Message.OK
                assert addr == live.to_bytes()
        finally:
            closed.close()
        assert len(server.get_network().get_connections(client.get_id())) == 1  # the dial-back was not kept


RELAY_ID = Identity(b"\x07" * 32).peer_id
OTHER_ID = Identity(b"\x08" * 32).peer_id


async def test_announced_circuit_addresses_keep_their_relay() -> None:
    # BasicHost.get_addrs cut a circuit address at its *first* /p2p/ (the relay's) before appending our id:
    # identify announced /ip4/<relay ip>/tcp/<relay port>/p2p/<us>, the relay's address as ours.
    from libp2p.identity.identify.identify import _mk_identify_protobuf

    async with running_hosts(1) as (a,):
        circuit = f"/ip4/127.0.0.1/tcp/4001/p2p/{RELAY_ID}/p2p-circuit"
        a._addrs_factory = lambda addrs: [*addrs, multiaddr.Multiaddr(circuit)]  # type: ignore[attr-defined]
        announced = [str(x) for x in a.get_addrs()]
        assert announced[-1] == f"{circuit}/p2p/{a.get_id()}"
        assert announced[0] == f"{a.get_transport_addrs()[0]}/p2p/{a.get_id()}"  # a direct one: as before
        sent = [str(multiaddr.Multiaddr(raw)) for raw in _mk_identify_protobuf(a, None).listen_addrs]
        assert sent[-1] == circuit  # identify's form: without our own id


async def test_the_peerstore_keeps_only_a_peers_own_addresses() -> None:
    # py-libp2p stored, for a peer, whatever addresses came: its identify (push) could carry someone else's
    # circuit address, a DHT answer could give peer A addresses ending in B's id; and the list only grew.
    from libp2p.identity.identify.identify import _mk_identify_protobuf
    from libp2p.identity.identify_push.identify_push import ID_PUSH
    from libp2p.peer.id import ID
    from libp2p.utils import varint

    async with running_hosts(2) as (a, b):
        await connect(a, b)
        store = b.get_peerstore()
        mine = f"/ip4/127.0.0.1/tcp/4001/p2p/{RELAY_ID}/p2p-circuit"
        theirs = f"/ip4/127.0.0.1/tcp/4002/p2p/{RELAY_ID}/p2p-circuit/p2p/{OTHER_ID}"
        msg = _mk_identify_protobuf(a, None)
        msg.ClearField("signedPeerRecord")  # the listen addresses alone (a signed record goes the same way)
        del msg.listen_addrs[:]
        msg.listen_addrs.extend([multiaddr.Multiaddr(f"{mine}/p2p/{a.get_id()}").to_bytes(),
                                 multiaddr.Multiaddr(theirs).to_bytes(), b"\xff\x00garbage",
                                 multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4003").to_bytes()])
        body = msg.SerializeToString()
        stream = await a.new_stream(b.get_id(), [ID_PUSH])  # what a lying peer sends as identify push
        await stream.write(varint.encode_uvarint(len(body)) + body)
        await stream.close()

        def pushed() -> bool:
            return "/ip4/127.0.0.1/tcp/4003" in {str(x) for x in store.addrs(a.get_id())}

        await wait_for(pushed, 20)
        assert {str(x) for x in store.addrs(a.get_id())} == {mine, "/ip4/127.0.0.1/tcp/4003"}
        # a DHT answer claiming, for OTHER, an address that ends in RELAY's id
        other = ID.from_base58(OTHER_ID)
        store.add_addrs(other, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/4004/p2p/{RELAY_ID}"),
                                multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/4005/p2p/{OTHER_ID}")], 60)
        assert [str(x) for x in store.addrs(other)] == ["/ip4/127.0.0.1/tcp/4005"]
        store.add_addrs(other, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{p}") for p in range(5000, 5100)], 60)
        kept = [str(x) for x in store.addrs(other)]
        assert len(kept) == workarounds.PEER_ADDRS_MAX
        assert kept[-1] == "/ip4/127.0.0.1/tcp/5099"  # the newest stay
