"""NatService over loopback: AutoNAT probes, relay service and reservations, dialing a private peer through
its relay, the link reported per connection, the relay's per-circuit byte limit, and a private peer's circuit
addresses in identify (push) and the DHT."""

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
from libp2p.host.autonat.pb.autonat_pb2 import Message as AutoNATMessage
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from pangea_p2p.core.identity import Identity
from pangea_p2p.core.nat import CircuitLimit, DialBackConfig, DialBackThrottle, Link, Reachability, RelayCandidate
from pangea_p2p.errors import ConfigError, TransportError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.nat import NatConfig, NatService
from pangea_p2p.net.overlay import make_dht
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


def addrs_known(host: IHost, of: IHost) -> set[str]:
    """What ``host``'s peerstore holds for ``of`` (empty if nothing)."""
    try:
        return {str(a) for a in host.get_peerstore().addrs(of.get_id())}
    except Exception:
        return set()


def behind_a_nat(monkeypatch: pytest.MonkeyPatch, host: IHost) -> None:
    """From now on no TCP dial reaches ``host``'s listening ports (a NAT drops them; refused here, to be quick):
    it is reachable only over connections it opened itself, such as the one to its relay."""
    from libp2p.transport.tcp.tcp import TCP

    ports = {a.value_for_protocol("tcp") for a in host.get_transport_addrs()}
    original = TCP.dial

    async def dial(self: TCP, maddr: multiaddr.Multiaddr) -> object:
        if maddr.value_for_protocol("tcp") in ports:
            raise OSError(f"{maddr} is behind a NAT")
        return await original(self, maddr)

    monkeypatch.setattr(TCP, "dial", dial)


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


async def test_a_private_peer_announces_its_circuit_addrs_and_pushes_each_change() -> None:
    public, private = NatConfig(reachability="public"), NatConfig(reachability="private", relays_wanted=1)
    async with nat_hosts(public, public, private, NatConfig()) as [
            (relay1, nat_r1), (relay2, nat_r2), (home, nat_h), (other, _)]:
        for nat in (nat_r1, nat_r2):
            nat.update_relay_service(time.time())
        await other.connect(info_from_p2p_addr(home.get_addrs()[0]))
        await wait_for(lambda: AUTONAT_PROTOCOL_ID in other.get_peerstore().get_protocols(home.get_id()), 20)
        via1, via2 = (f"{hostlib.dialable_addrs(r)[0]}/p2p/{r.get_id()}/p2p-circuit" for r in (relay1, relay2))

        def known() -> set[str]:  # the circuit addresses the other peer holds for the home peer
            return {a for a in addrs_known(other, home) if "/p2p-circuit" in a}

        with trio.fail_after(20):  # reserve
            await nat_h.keep_relays([relay_of(relay1)], time.time())
        assert f"{via1}/p2p/{home.get_id()}" in {str(a) for a in home.get_addrs()}  # what identify sends
        # identify push: the peers connected to it learn the address (identify ran once, before it existed)
        await wait_for(lambda: known() == {via1} and via1 in addrs_known(relay1, home), 20)
        with trio.fail_after(20):  # move: relay1 stops qualifying, relay2 is taken in the same round
            await nat_h.keep_relays([relay_of(relay2)], time.time())
        assert nat_h.book.held() == [str(relay2.get_id())]
        await wait_for(lambda: known() == {via2}, 20)
        with trio.fail_after(20):  # drop: no relay qualifies
            await nat_h.keep_relays([], time.time())
        assert nat_h.book.held() == []
        assert not any("/p2p-circuit" in str(a) for a in home.get_addrs())
        await wait_for(lambda: known() == set(), 20)
        assert addrs_known(other, home)  # its direct addresses stay


async def test_a_peer_that_never_saw_the_advert_finds_a_private_peer_in_the_dht_and_dials_its_relay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The finder knows the home peer by id only (no advert: a non-pangea libp2p peer, say). The DHT answers a
    # lookup with what the relay's peerstore holds for it, which identify push keeps up to date.
    public, private = NatConfig(reachability="public"), NatConfig(reachability="private")
    async with nat_hosts(public, private, NatConfig()) as [(relay, nat_r), (home, nat_h), (finder, nat_f)], \
            AsyncExitStack() as stack:
        dhts = [make_dht(h) for h in (relay, home, finder)]
        for dht in dhts:
            await stack.enter_async_context(background_trio_service(dht))
        nat_f.find_peer = dhts[2].find_peer
        behind_a_nat(monkeypatch, home)
        nat_r.update_relay_service(time.time())
        for peer, dht in ((home, dhts[1]), (finder, dhts[2])):
            await peer.connect(info_from_p2p_addr(relay.get_addrs()[0]))
            await dht.add_peer(relay.get_id(), skip_server_mode_check=True)
        with trio.fail_after(20):
            await nat_h.keep_relays([relay_of(relay)], time.time())
        circuit = f"{hostlib.dialable_addrs(relay)[0]}/p2p/{relay.get_id()}/p2p-circuit"
        await wait_for(lambda: circuit in addrs_known(relay, home), 20)
        assert addrs_known(finder, home) == set()
        with trio.fail_after(40):
            await nat_f.connect(str(home.get_id()))
            assert circuit in addrs_known(finder, home)
            assert nat_f.link(str(home.get_id())) is Link.RELAYED
            assert len(await echo(finder, home, 1000)) == 1000


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


async def test_a_relay_we_lost_the_connection_to_is_replaced_at_once() -> None:
    public = NatConfig(reachability="public")
    async with nat_hosts(public, public, NatConfig(reachability="private", relays_wanted=1)) as [
            (first, nat_1), (second, nat_2), (home, nat_h)]:
        now = time.time()
        nat_1.update_relay_service(now)
        nat_2.update_relay_service(now)
        first_id = str(first.get_id())
        candidates = [dataclasses.replace(relay_of(first), rtt_s=0.001),
                      dataclasses.replace(relay_of(second), rtt_s=0.002)]
        with trio.fail_after(20):
            await nat_h.keep_relays(candidates, now)
        assert nat_h.book.held() == [first_id]
        # the relay's connection goes (it restarted, or a router dropped it): so did the reservation on it;
        # its advert is still in every directory, but the home peer moves to the other relay at the next round
        await home.disconnect(first.get_id())
        with trio.fail_after(20):
            await nat_h.keep_relays(candidates, now + 1)
        assert nat_h.book.held() == [str(second.get_id())]
        # and the peers it is connected to hear of the move (identify push; identify itself ran on connecting,
        # before the reservation)
        via2 = f"{hostlib.dialable_addrs(second)[0]}/p2p/{second.get_id()}/p2p-circuit"
        await wait_for(lambda: via2 in addrs_known(second, home), 20)


async def test_a_circuit_carries_at_most_its_byte_limit() -> None:
    small = NatConfig(reachability="public", relay_circuit_bytes_max=1 << 16, relay_circuit_duration_s=90)
    async with nat_hosts(small, NatConfig(reachability="private"), NatConfig()) as [
            (relay, nat_r), (home, nat_h), (issuer, nat_i)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await nat_h.keep_relays([relay_of(relay)], time.time())
        # the reservation states the relay's circuit limits: the home peer's advert passes them on
        assert nat_h.book.circuit_limit() == CircuitLimit(90, 1 << 16)
        home_id = str(home.get_id())
        nat_i.learn_relay_addrs(home_id, nat_h.book.relay_addrs(home_id))
        assert nat_i.circuit_age_s(home_id, time.time()) is None
        with trio.fail_after(30):
            await nat_i.connect(home_id)
            opened = time.time()
            age = nat_i.circuit_age_s(home_id, opened + 5.0)  # the scheduler counts what is left of the 90 s
            assert age is not None
            assert 5.0 <= age < 35.0
            assert len(await echo(issuer, home, 1000)) == 1000
            with pytest.raises(Exception):  # noqa: B017,PT011  # a reset stream, whatever py-libp2p calls it
                await echo(issuer, home, 200_000)
        # the relay closed that circuit: no age any more (a fresh circuit has its whole lifetime)
        await wait_for(lambda: nat_i.circuit_age_s(home_id, time.time()) is None, 20)


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


# --- the relay's reservation rules (GuardedReservations, workarounds._reservations_are_for_the_requester) ----


async def raw_reserve(host: IHost, relay: IHost, in_the_name_of: str | None = None) -> int:
    """Send a RESERVE by hand (optionally naming another peer, as a forger would); the relay's status."""
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

    msg = HopMessage(type=HopMessage.RESERVE)
    if in_the_name_of is not None:
        msg.peer.CopyFrom(PeerId(id=ID.from_base58(in_the_name_of).to_bytes()))
    stream = await host.new_stream(relay.get_id(), [HOP])
    await write_delimited_msg(stream, msg)
    resp = await read_delimited_msg(stream, HopMessage)
    await stream.close()
    return int(resp.status)


async def test_a_reservation_is_the_requesters_whatever_peer_it_names() -> None:
    async with nat_hosts(NatConfig(reachability="public"), NatConfig()) as [(relay, nat_r), (forger, _)]:
        nat_r.update_relay_service(time.time())
        await forger.connect(info_from_p2p_addr(relay.get_addrs()[0]))
        with trio.fail_after(20):
            for k in range(5):  # made-up peers: no key, no connection
                await raw_reserve(forger, relay, Identity(bytes([100 + k]) * 32).peer_id)
        assert set(nat_r.reservations.live()) == {str(forger.get_id())}
        assert nat_r.relay_slots_free() == 31


async def test_a_reservation_ends_with_its_peers_connection() -> None:
    one_slot = NatConfig(reachability="public", relay_reservations_max=1)
    async with nat_hosts(one_slot, NatConfig(reachability="private"), NatConfig(reachability="private")) as [
            (relay, nat_r), (first, nat_1), (second, nat_2)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await nat_1.reserve(relay_of(relay))
            with pytest.raises(TransportError, match="refused"):  # the one slot is taken
                await nat_2.reserve(relay_of(relay))
            await first.disconnect(relay.get_id())
            await wait_for(lambda: not relay.get_network().get_connections(first.get_id()), 10)
            assert nat_r.relay_slots_free() == 1
            await nat_2.reserve(relay_of(relay))  # the slot of a peer that left is free again
        assert set(nat_r.reservations.live()) == {str(second.get_id())}


async def test_one_address_holds_at_most_its_share_of_the_slots() -> None:
    per_ip = NatConfig(reachability="public", relay_reservations_per_ip=2)
    private = NatConfig(reachability="private")
    async with nat_hosts(per_ip, private, private, private) as [(relay, nat_r), (_, a), (_, b), (_, c)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await a.reserve(relay_of(relay))
            await b.reserve(relay_of(relay))
            with pytest.raises(TransportError, match="refused"):  # all three come from 127.0.0.1
                await c.reserve(relay_of(relay))
            await a.reserve(relay_of(relay))  # renewing one's own reservation is never refused
        assert nat_r.relay_slots_free() == 30


async def test_the_circuit_limit_holds_for_the_whole_relay() -> None:
    one_circuit = NatConfig(reachability="public", relay_circuits_max=1)
    private = NatConfig(reachability="private")
    async with nat_hosts(one_circuit, private, private, NatConfig()) as [
            (relay, nat_r), (home_a, nat_a), (home_b, nat_b), (issuer, nat_i)]:
        nat_r.update_relay_service(time.time())
        with trio.fail_after(20):
            await nat_a.keep_relays([relay_of(relay)], time.time())
            await nat_b.keep_relays([relay_of(relay)], time.time())
        for home, nat in ((home_a, nat_a), (home_b, nat_b)):
            nat_i.learn_relay_addrs(str(home.get_id()), nat.book.relay_addrs(str(home.get_id())))
        with trio.fail_after(30):
            await nat_i.connect(str(home_a.get_id()))
            assert len(await echo(issuer, home_a, 1000)) == 1000
            with pytest.raises(TransportError):  # a second circuit, to another reserved peer: over the limit
                await nat_i.connect(str(home_b.get_id()))


async def test_dial_back_requests_beyond_the_budget_are_refused_as_no_evidence() -> None:
    async with nat_hosts(NatConfig(), NatConfig()) as [(a, nat_a), (b, nat_b)]:
        # loopback requests count in the total only: a total of three
        nat_b.autonat.throttle = DialBackThrottle(DialBackConfig(global_burst=3, global_rate_per_s=1e-4))
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        await wait_for(lambda: AUTONAT_PROTOCOL_ID in a.get_peerstore().get_protocols(b.get_id()), 20)
        addrs = [multiaddr.Multiaddr(x).to_bytes() for x in hostlib.dialable_addrs(a)]
        statuses = []
        with trio.fail_after(60):
            for _ in range(5):  # a flood: the server dials back three times, then refuses
                status, _ = await nat_a.autonat.query_server(b.get_id(), addrs, timeout=20)
                statuses.append(status)
        assert statuses == [AutoNATMessage.OK] * 3 + [AutoNATMessage.E_INTERNAL_ERROR] * 2
        # a probe that meets the refusal counts it as nothing (not as "behind a NAT")
        now = time.time()
        with trio.fail_after(30):
            assert await nat_a.probe(hostlib.dialable_addrs(a), now) == 0
        assert nat_a.status(now) is Reachability.UNKNOWN
