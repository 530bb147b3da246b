"""UPnP IGD port mapping (``nat.upnp``): map the listening TCP port on the home router, announce the router's
external address while the mapping holds, remove it when the peer stops.

Theory of operation. ``PortMapper.run`` moves through these states (``state``), logging one line
(``nat.upnp``) each time the state or the mapped addresses change:

- ``no-gateway``: no UPnP IGD answered the SSDP search on the LAN (most networks): the peer carries on with
  AutoNAT and relays, and searches again every ``retry_s``.
- ``unusable``: an IGD answered but reports no external address, or one that is not globally routable (a
  double NAT: the router is itself behind another NAT, so a mapping on it reaches nobody). Nothing is mapped.
- ``refused``: the IGD refused the mapping (its policy, or the port is taken and it offers no other).
- ``mapped``: every port is mapped for ``lease_s`` seconds and renewed every ``lease_s / 2``; ``external_addrs``
  lists ``/ip4/<external IP>/tcp/<external port>``. A failed renewal moves to ``refused`` or ``no-gateway``.

Invariant: ``external_addrs`` is non-empty only in ``mapped``, with a global external IP: a peer never
announces an address no mapping stands behind (AutoNAT would then be asked to dial it for nothing).
At exit the mappings are deleted (shielded, bounded by ``DELETE_TIMEOUT_S``); a peer killed without that
leaves them to expire with their lease.

Why not py-libp2p 0.8.1's ``UpnpManager`` (``new_host(enable_upnp=True)``): it maps with lease 0 (permanent;
miniupnpd 2.3 turns it into a week) and never renews, so a crashed peer's mapping outlives it; its
``get_external_ip()`` returns the router's address even when the mapping failed or the address is private (so
the peer announced an address that leads nowhere); "no gateway" is a debug line; and its discovery runs inside
``host.run``, before the peer starts. miniupnpc (the C library's Python binding) is what both use.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from pangea_p2p.logs import get_logger

log = get_logger("nat")

DISCOVER_DELAY_MS = 1000  # per SSDP search; miniupnpc makes 4 (device types) when nobody answers: 4 s
DELETE_TIMEOUT_S = 5.0
DESCRIPTION = "pangea"

T = TypeVar("T")


class Gateway(Protocol):
    """The part of ``miniupnpc.UPnP`` used here (blocking calls; they raise ``Exception`` with the IGD's error)."""

    discoverdelay: int
    lanaddr: str

    def discover(self) -> int: ...
    def selectigd(self) -> str: ...
    def externalipaddress(self) -> str: ...
    def addportmapping(self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str,
                       lease: int) -> bool: ...
    def addanyportmapping(self, eport: int, proto: str, host: str, iport: int, desc: str, remote: str,
                          lease: int) -> int: ...
    def deleteportmapping(self, eport: int, proto: str) -> bool: ...


def miniupnpc_gateway() -> Gateway:
    import miniupnpc  # type: ignore[import-not-found,unused-ignore]  # no stubs; imported only with nat.upnp on

    gateway: Gateway = miniupnpc.UPnP()
    return gateway


class MapState(enum.StrEnum):
    STARTING = "starting"
    NO_GATEWAY = "no-gateway"
    UNUSABLE = "unusable"
    REFUSED = "refused"
    MAPPED = "mapped"


class PortMapper:
    """Maps ``ports()`` (internal TCP ports) on the LAN's UPnP IGD while ``run`` runs (module docstring)."""

    def __init__(self, ports: Callable[[], list[int]], lease_s: int, retry_s: float = 300.0,
                 gateway: Callable[[], Gateway] = miniupnpc_gateway,
                 on_change: Callable[[], None] = lambda: None, in_thread: bool = True) -> None:
        """``in_thread`` False: gateway calls run on the event loop (a fake gateway in tests on trio's autojump
        clock, which would jump past a thread's work as if nothing were running)."""
        self._ports = ports
        self._in_thread = in_thread
        self.lease_s = lease_s
        self.retry_s = retry_s
        self._make_gateway = gateway
        self._on_change = on_change
        self._gateway: Gateway | None = None
        self._lock = trio.Lock()  # one miniupnpc call at a time (the object is not thread-safe)
        self.state = MapState.STARTING
        self.reason = ""
        self.external_ip = ""
        self.mapped: dict[int, int] = {}  # internal port -> external port
        self.renewals = 0
        self._announced: list[str] = []  # external_addrs() at the last state change

    def external_addrs(self) -> list[str]:
        if self.state is not MapState.MAPPED:
            return []
        return [f"/ip4/{self.external_ip}/tcp/{e}" for _, e in sorted(self.mapped.items())]

    def to_json(self) -> dict[str, object]:
        return {"state": str(self.state), "reason": self.reason, "external_addrs": self.external_addrs(),
                "lease_s": self.lease_s, "renewals": self.renewals}

    async def _call(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            if not self._in_thread:
                return fn()
            # abandon_on_cancel: a SOAP call to a router that went silent must not hold up cancellation (the
            # thread finishes on its own, within miniupnpc's socket timeouts); trio-stubs predate the name
            return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)  # type: ignore[call-arg]

    def _set(self, state: MapState, reason: str) -> None:
        before_state, before_addrs = self.state, self._announced
        self.state, self.reason = state, reason
        self._announced = self.external_addrs()
        if (state, self._announced) != (before_state, before_addrs):
            log.info("nat.upnp", state=str(state), reason=reason, external_addrs=self._announced,
                     fallback="" if state is MapState.MAPPED else "AutoNAT and relays")
        if self._announced != before_addrs:
            self._on_change()

    async def run(self) -> None:
        """Discover, map and renew until cancelled; then delete the mappings."""
        try:
            while True:
                await self.step()
                await trio.sleep(self.lease_s / 2 if self.state is MapState.MAPPED else self.retry_s)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DELETE_TIMEOUT_S):
                await self.unmap()

    async def step(self) -> None:
        """One round: find the gateway if none is known, then map (or renew) every port."""
        if self._gateway is None and not await self._discover():
            return
        assert self._gateway is not None
        gw = self._gateway
        try:
            ip = await self._call(gw.externalipaddress)
        except Exception as exc:  # the gateway went away (router restarted, lease of its address...)
            self._gateway = None
            self.mapped.clear()
            self._set(MapState.NO_GATEWAY, f"the UPnP gateway stopped answering ({_short(exc)})")
            return
        if not _is_global(ip):
            self.mapped.clear()
            self._set(MapState.UNUSABLE, f"the UPnP gateway reports {repr(ip) if ip else 'no'} external address, "
                                         "not a public one (double NAT?): no port mapped")
            return
        self.external_ip = ip
        renewing = self.state is MapState.MAPPED
        mapped: dict[int, int] = {}
        for port in self._ports():
            external = self.mapped.get(port, port)
            try:
                mapped[port] = await self._map(gw, port, external)
            except Exception as exc:
                self.mapped = mapped
                self._set(MapState.REFUSED, f"the UPnP gateway refused to map TCP port {port} ({_short(exc)})")
                return
        if not mapped:
            self._set(MapState.REFUSED, "no IPv4 TCP listening port to map")
            return
        self.mapped = mapped
        if renewing:
            self.renewals += 1
            log.debug("nat.upnp_renewed", external_addrs=self.external_addrs(), lease_s=self.lease_s)
        self._set(MapState.MAPPED, f"mapped for {self.lease_s}s, renewed every {self.lease_s // 2}s")

    async def _discover(self) -> bool:
        gw = self._make_gateway()
        gw.discoverdelay = DISCOVER_DELAY_MS
        try:
            try:
                found = await self._call(gw.discover)
            except Exception as exc:
                # no answer: miniupnpc raises with errno 0's text, "Success" (py-libp2p reads that as a device)
                if str(exc) != "Success":
                    raise
                found = 0
            if found <= 0:
                raise LookupError(f"no answer to the SSDP search in {4 * DISCOVER_DELAY_MS / 1000:g}s")
            await self._call(gw.selectigd)
        except Exception as exc:
            self._set(MapState.NO_GATEWAY, f"no UPnP gateway on the LAN ({_short(exc)})")
            return False
        self._gateway = gw
        return True

    async def _map(self, gw: Gateway, port: int, external: int) -> int:
        lan = gw.lanaddr
        try:
            await self._call(lambda: gw.addportmapping(external, "TCP", lan, port, DESCRIPTION, "", self.lease_s))
            return external
        except Exception as exc:
            if "ConflictInMappingEntry" not in str(exc):  # UPnP error 718: mapped to another host
                raise
        # the port is mapped to another host: take any free one (IGDv2's AddAnyPortMapping)
        return int(await self._call(lambda: gw.addanyportmapping(external, "TCP", lan, port, DESCRIPTION, "",
                                                                 self.lease_s)))

    async def unmap(self) -> None:
        gw, mapped = self._gateway, dict(self.mapped)
        self.mapped.clear()
        if gw is None or not mapped:
            return
        for external in mapped.values():
            try:
                await self._call(_bind(gw.deleteportmapping, external, "TCP"))
                log.info("nat.upnp_unmapped", external=f"{self.external_ip}:{external}")
            except Exception as exc:
                log.warning("nat.upnp_unmap_failed", external=f"{self.external_ip}:{external}", error=_short(exc))


def _bind(fn: Callable[[int, str], bool], port: int, proto: str) -> Callable[[], bool]:
    return lambda: fn(port, proto)


def _is_global(ip: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip).is_global
    except ValueError:
        return False


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:120]


__all__ = ["Gateway", "MapState", "PortMapper", "miniupnpc_gateway"]
