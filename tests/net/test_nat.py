"""NatService over loopback: AutoNAT probes, relay service and reservations, dialing a private peer through
its relay, the link reported per connection, and the relay's per-circuit byte limit."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import info_from_p2p_addr

from pangea_p2p.core.identity import Identity
from pangea_p2p.core.nat import Link, Reachability, RelayCandidate
from pangea_p2p.errors import ConfigError, TransportError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.nat import NatConfig, NatService
from pangea_p2p.net.upnp import PortMapper
from pangea_p2p.testing import wait_for

LOCAL = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
ECHO = TProtocol("/pangea-test/echo/1")


async def _echo(stream: INetStream) -> None:
    try:
        while True:
            size = int.from_bytes(await read_exactly(stream, 4), "big")
            await stream.write(await read_exactly(stream, size))
    except Exception:
        await stream.reset()


@asynccontextmanager
async def nat_hosts(*configs: NatConfig) -> AsyncIterator[list[tuple[IHost, NatService]]]:
    hosts = [hostlib.make_host(Identity(bytes([i + 1]) * 32)) for i in range(len(configs))]
    async with AsyncExitStack() as stack:
        out = []
        for host, cfg in zip(hosts, configs, strict=True):
            await stack.enter_async_context(host.run([LOCAL]))
            host.set_stream_handler(ECHO, _echo)
            out.append((host, await stack.enter_async_context(NatService(host, cfg).running())))
        try:
            yield out
        finally:
            await hostlib.close_hosts(hosts)


async def echo(host: IHost, peer: IHost, size: int) -> bytes:
    stream = await hostlib.open_stream(host, peer.get_id(), [ECHO])
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await stream.write(len(payload).to_bytes(4, "big") + payload)
    got = await read_exactly(stream, size)
    await stream.close()
    return got


def relay_of(host: IHost) -> RelayCandidate:
    return RelayCandidate(str(host.get_id()), tuple(hostlib.dialable_addrs(host)))


async def test_autonat_probe_finds_a_loopback_peer_public() -> None:
    async with nat_hosts(NatConfig(), NatConfig()) as [(a, nat_a), (b, _)]:
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        await wait_for(lambda: AUTONAT_PROTOCOL_ID in a.get_peerstore().get_protocols(b.get_id()), 20)  # identify
        now = time.time()
        assert nat_a.status(now) is Reachability.UNKNOWN
        with trio.fail_after(20):
            assert await nat_a.probe(hostlib.dialable_addrs(a), now) == 1
        assert nat_a.status(now) is Reachability.PUBLIC
        assert nat_a.model.confidence(now) == 1


async def test_a_private_peer_is_reached_through_its_relay() -> None:
    public, private = NatConfig(reachability="public"), NatConfig(reachability="private")
    async with nat_hosts(public, private, NatConfig()) as [(relay, nat_r), (home, nat_h), (issuer, nat_i)]:
        now = time.time()
        assert nat_r.update_relay_service(now)
        assert not nat_h.update_relay_service(now)  # a private peer offers no relay
        assert nat_r.relay_slots_free() == 32
        with trio.fail_after(20):
            await nat_h.keep_relays([relay_of(relay)], now)
        assert nat_h.book.held() == [str(relay.get_id())]
        assert nat_r.relay_slots_free() == 31
        circuits = nat_h.book.relay_addrs(str(home.get_id()))
        assert circuits == [f"{a}/p2p/{relay.get_id()}/p2p-circuit/p2p/{home.get_id()}"
                            for a in hostlib.dialable_addrs(relay)]
        # the issuer knows the home peer only by its advertised relay addresses
        nat_i.learn_relay_addrs(str(home.get_id()), circuits)
        with trio.fail_after(20):
            await nat_i.connect(str(home.get_id()))
            assert nat_i.link(str(home.get_id())) is Link.RELAYED
            # dialing through the relay takes no reservation for the dialer (py-libp2p's CLIENT role would)
            assert nat_r.relay_slots_free() == 31
            assert await echo(issuer, home, 10_000) == (bytes(range(256)) * 39 + b"x" * 16)
        assert nat_i.link(str(relay.get_id())) is Link.DIRECT


async def test_a_pending_direct_dial_gives_way_when_the_peers_relay_addresses_arrive() -> None:
    # A peer's first advert comes before it knows it is private: an issuer dials its address behind the NAT,
    # which hangs (here: a port that completes TCP handshakes and then never speaks). When the peer's next
    # advert brings its relay addresses, the dial goes through the relay at once instead of timing out.
    public, private = NatConfig(reachability="public"), NatConfig(reachability="private")
    async with nat_hosts(public, private, NatConfig()) as [(relay, nat_r), (home, nat_h), (issuer, nat_i)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await nat_h.keep_relays([relay_of(relay)], time.time())
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted: the kernel completes the handshake, nothing answers the Noise hello
        try:
            port = silent.getsockname()[1]
            issuer.get_peerstore().add_addrs(home.get_id(), [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")],
                                             60)
            with trio.fail_after(5):  # the direct dial alone would take 10 s
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(nat_i.connect, str(home.get_id()))
                    await wait_for(lambda: str(home.get_id()) in nat_i._relays_learned, 5)  # the dial is under way
                    nat_i.learn_relay_addrs(str(home.get_id()), nat_h.book.relay_addrs(str(home.get_id())))
            assert nat_i.link(str(home.get_id())) is Link.RELAYED
        finally:
            silent.close()


async def test_a_relay_that_refuses_is_cooled_down_and_another_is_used() -> None:
    off = NatConfig(reachability="public", relay_service="off")
    async with nat_hosts(off, NatConfig(reachability="public"), NatConfig(reachability="private")) as [
            (no_relay, nat_n), (relay, nat_r), (_, nat_h)]:
        now = time.time()
        assert not nat_n.update_relay_service(now)
        nat_r.update_relay_service(now)
        fast = dataclasses.replace(relay_of(no_relay), rtt_s=0.001)
        slow = dataclasses.replace(relay_of(relay), rtt_s=0.01)
        nat_h.book.config = dataclasses.replace(nat_h.book.config, relays_wanted=1)
        with trio.fail_after(30):
            await nat_h.keep_relays([fast, slow], now)  # tries the fast one: it speaks no hop protocol
            assert nat_h.book.held() == []
            await nat_h.keep_relays([fast, slow], now + 1)  # the refusal cools down; the other one is used
        assert nat_h.book.held() == [str(relay.get_id())]


async def test_a_circuit_carries_at_most_its_byte_limit() -> None:
    small = NatConfig(reachability="public", relay_circuit_bytes_max=1 << 16)
    async with nat_hosts(small, NatConfig(reachability="private"), NatConfig()) as [
            (relay, nat_r), (home, nat_h), (issuer, nat_i)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await nat_h.keep_relays([relay_of(relay)], time.time())
        nat_i.learn_relay_addrs(str(home.get_id()), nat_h.book.relay_addrs(str(home.get_id())))
        with trio.fail_after(30):
            await nat_i.connect(str(home.get_id()))
            assert len(await echo(issuer, home, 1000)) == 1000
            with pytest.raises(Exception):  # noqa: B017,PT011  # a reset stream, whatever py-libp2p calls it
                await echo(issuer, home, 200_000)


async def test_connect_says_why_a_peer_cannot_be_reached() -> None:
    async with nat_hosts(NatConfig()) as [(_, nat)]:
        ghost = Identity(b"g" * 32).peer_id
        relay = Identity(b"r" * 32).peer_id
        nat.learn_relay_addrs(ghost, [f"/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{ghost}"])
        with trio.fail_after(30), pytest.raises(TransportError, match="directly or through a relay"):
            await nat.connect(ghost)


async def test_a_upnp_mapping_adds_the_routers_address_with_the_mapped_port() -> None:
    from tests.net.test_upnp import FakeGateway

    async with nat_hosts(NatConfig()) as [(host, nat)]:  # nat.upnp off: no SSDP from a test outside namespaces
        port = int(host.get_transport_addrs()[0].value_for_protocol("tcp"))
        assert nat.own_addrs() == hostlib.dialable_addrs(host)  # no mapping: the listen addresses
        gw = FakeGateway(external="203.0.114.7")
        nat.upnp = PortMapper(nat._tcp_ports, 600, gateway=lambda: gw, on_change=nat.model.forget)
        nat.model.observe("someone", False, time.time())
        await nat.upnp.step()
        assert list(gw.mappings.values()) == [("192.168.1.2", port, 600)]
        assert nat.own_addrs() == [f"/ip4/203.0.114.7/tcp/{port}", *hostlib.dialable_addrs(host)]
        assert nat.status(time.time()) is Reachability.UNKNOWN  # the old answers are forgotten: probe again
        gw.refuse = "Action not authorized"  # the router refuses the renewal: the address is withdrawn
        await nat.upnp.step()
        assert nat.own_addrs() == hostlib.dialable_addrs(host)


@pytest.mark.parametrize(("kwargs", "key"), [({"reachability": "maybe"}, "nat.reachability"),
                                             ({"relay_service": "yes"}, "nat.relay_service"),
                                             ({"relay_circuit_bytes_max": 10}, "nat.relay_circuit_bytes_max"),
                                             ({"relays_wanted": True}, "nat.relays_wanted")])
def test_nat_config_rejects_bad_values(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        NatConfig(**kwargs)  # type: ignore[arg-type]
