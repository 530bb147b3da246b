"""PortMapper (net/upnp.py) against a fake IGD: the states it reports, what it announces and what it leaves
on the router. The real IGD (miniupnpd in a router namespace) is tests/e2e/test_upnp_e2e.py."""

from __future__ import annotations

import pytest
import trio

from pangea_p2p.net.upnp import MapState, PortMapper


class FakeGateway:
    def __init__(self, found: int | str = 1, external: str = "203.0.114.7", refuse: str = "",
                 taken: frozenset[int] = frozenset()) -> None:
        self.discoverdelay = 0
        self.lanaddr = "192.168.1.2"
        self.found, self.external, self.refuse, self.taken = found, external, refuse, taken
        self.mappings: dict[int, tuple[str, int, int]] = {}  # external port -> (host, internal port, lease)
        self.adds = 0

    def discover(self) -> int:
        if isinstance(self.found, str):
            raise Exception(self.found)  # miniupnpc raises bare Exception
        return self.found

    def selectigd(self) -> str:
        if not self.found:
            raise Exception("No UPnP device discovered")
        return "http://192.168.1.1:5000/ctl/IPConn"

    def externalipaddress(self) -> str:
        return self.external

    def addportmapping(self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str,
                       lease: int) -> bool:
        self.adds += 1
        if self.refuse:
            raise Exception(self.refuse)
        if eport in self.taken:
            raise Exception("ConflictInMappingEntry")
        self.mappings[eport] = (host, iport, lease)
        return True

    def addanyportmapping(self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str,
                          lease: int) -> int:
        free = next(p for p in range(eport + 1, 65536) if p not in self.taken and p not in self.mappings)
        self.mappings[free] = (host, iport, lease)
        return free

    def deleteportmapping(self, eport: int, proto: str) -> bool:
        del self.mappings[eport]
        return True


def mapper(gw: FakeGateway, ports: tuple[int, ...] = (4001,)) -> tuple[PortMapper, list[int]]:
    changes: list[int] = []
    m = PortMapper(lambda: list(ports), lease_s=600, gateway=lambda: gw, on_change=lambda: changes.append(1))
    return m, changes


async def test_a_mapping_is_announced_renewed_and_removed() -> None:
    gw = FakeGateway()
    m, changes = mapper(gw)
    await m.step()
    assert m.state is MapState.MAPPED
    assert m.external_addrs() == ["/ip4/203.0.114.7/tcp/4001"]
    assert gw.mappings == {4001: ("192.168.1.2", 4001, 600)}  # a lease, not a permanent mapping
    assert changes == [1]  # the addresses changed: reachability is learned again
    await m.step()
    assert (m.renewals, gw.adds, changes) == (1, 2, [1])
    await m.unmap()
    assert gw.mappings == {}


async def test_a_taken_port_is_mapped_to_another_external_port() -> None:
    gw = FakeGateway(taken=frozenset({4001}))
    m, _ = mapper(gw)
    await m.step()
    assert m.external_addrs() == ["/ip4/203.0.114.7/tcp/4002"]
    await m.step()  # the renewal keeps the external port it got
    assert list(gw.mappings) == [4002]


@pytest.mark.parametrize("external", ["10.77.1.2", "192.168.0.1", "100.64.3.4", "", "0.0.0.0"])
async def test_a_gateway_without_a_public_address_is_not_used(external: str) -> None:
    gw = FakeGateway(external=external)  # double NAT (or CGNAT): a mapping there reaches nobody
    m, changes = mapper(gw)
    await m.step()
    assert (m.state, m.external_addrs(), gw.adds, changes) == (MapState.UNUSABLE, [], 0, [])
    assert "double NAT" in m.reason


async def test_a_refused_mapping_announces_nothing() -> None:
    gw = FakeGateway(refuse="Action not authorized")
    m, _ = mapper(gw)
    await m.step()
    assert (m.state, m.external_addrs()) == (MapState.REFUSED, [])
    assert "Action not authorized" in m.reason


async def test_no_gateway_on_the_lan() -> None:
    m, _ = mapper(FakeGateway(found="Success"))  # what miniupnpc raises when nobody answered
    await m.step()
    assert (m.state, m.external_addrs()) == (MapState.NO_GATEWAY, [])
    assert "no answer to the SSDP search" in m.reason


async def test_a_renewal_the_gateway_refuses_withdraws_the_address() -> None:
    gw = FakeGateway()
    m, changes = mapper(gw)
    await m.step()
    gw.refuse = "ConflictWithOtherMechanisms"
    await m.step()
    assert (m.state, m.external_addrs(), changes) == (MapState.REFUSED, [], [1, 1])


async def test_the_mapping_is_removed_when_the_mapper_is_cancelled(autojump_clock: trio.abc.Clock) -> None:
    gw = FakeGateway()
    mapped = trio.Event()
    m = PortMapper(lambda: [4001], lease_s=600, gateway=lambda: gw, on_change=mapped.set, in_thread=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.run)
        with trio.fail_after(5):
            await mapped.wait()
        assert m.state is MapState.MAPPED
        await trio.sleep(1000)  # past a lease: renewed meanwhile
        assert m.renewals >= 3
        nursery.cancel_scope.cancel()
    assert gw.mappings == {}
