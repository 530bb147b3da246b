"""Bytes a peer moves, counted by kind and direction (/metrics shows the totals):

- ``transport``: every byte on the peer's libp2p connections (``count_connections``: TCP payload, so Noise and
  yamux framing included, and the DHT's and gossipsub's traffic with the rest);
- ``compute``, ``block``: the peer's own stream protocols (``Traffic.wrap`` around each stream).
"""

from __future__ import annotations

from typing import Any, Protocol

from libp2p.abc import IHost, IRawConnection
from multiaddr import Multiaddr

from pangea_p2p.net.framing import ByteStream

IN, OUT = "in", "out"
TRANSPORT = "transport"


class ClosableStream(ByteStream, Protocol):
    async def close(self) -> None: ...


class Traffic:
    """Byte totals by (kind, direction), since the peer started."""

    def __init__(self) -> None:
        self.bytes: dict[tuple[str, str], int] = {}

    def add(self, kind: str, direction: str, count: int) -> None:
        key = (kind, direction)
        self.bytes[key] = self.bytes.get(key, 0) + count

    def wrap(self, stream: ClosableStream, kind: str) -> CountingStream:
        return CountingStream(stream, self, kind)


class CountingStream:
    """``stream``, counting what goes through it into ``traffic``."""

    __slots__ = ("kind", "stream", "traffic")

    def __init__(self, stream: ClosableStream, traffic: Traffic, kind: str) -> None:
        self.stream, self.traffic, self.kind = stream, traffic, kind

    async def read(self, n: int | None = None) -> bytes:
        data = await self.stream.read(n)
        self.traffic.add(self.kind, IN, len(data))
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)
        self.traffic.add(self.kind, OUT, len(data))

    async def close(self) -> None:
        await self.stream.close()


class CountingConnection(IRawConnection):
    """A libp2p raw connection (TCP), counting what goes through it as ``transport`` bytes."""

    def __init__(self, conn: IRawConnection, traffic: Traffic) -> None:
        self.conn, self.traffic = conn, traffic
        self.is_initiator = conn.is_initiator

    async def read(self, n: int | None = None) -> bytes:
        data = await self.conn.read(n)
        self.traffic.add(TRANSPORT, IN, len(data))
        return data

    async def write(self, data: bytes) -> None:
        await self.conn.write(data)
        self.traffic.add(TRANSPORT, OUT, len(data))

    async def close(self) -> None:
        await self.conn.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.conn.get_remote_address()

    def get_transport_addresses(self) -> list[Multiaddr]:
        return self.conn.get_transport_addresses()

    def get_connection_type(self) -> Any:
        return self.conn.get_connection_type()

    def __getattr__(self, name: str) -> Any:  # anything else py-libp2p may ask of the connection
        return getattr(self.conn, name)


def count_connections(host: IHost, traffic: Traffic) -> None:
    """Count the bytes of every connection ``host`` makes or accepts from now on: each raw connection passes
    through its upgrader (security first, then the muxer), which gets it wrapped in a ``CountingConnection``."""
    upgrader = host.get_network().upgrader  # type: ignore[attr-defined]
    upgrade_security = upgrader.upgrade_security

    async def counted(raw_conn: IRawConnection, is_initiator: bool, *args: Any, **kwargs: Any) -> Any:
        return await upgrade_security(CountingConnection(raw_conn, traffic), is_initiator, *args, **kwargs)

    upgrader.upgrade_security = counted
