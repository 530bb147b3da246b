"""Bytes a peer moves on its own stream protocols (compute, block), counted per protocol and direction.

``Traffic.wrap(stream, protocol)`` is the stream with every read and write counted; /metrics shows the totals.
The DHT's and gossipsub's own traffic (py-libp2p's streams) is not counted.
"""

from __future__ import annotations

from pangea_p2p.node.ports import DuplexStream

IN, OUT = "in", "out"


class Traffic:
    """Byte totals by (protocol, direction), since the peer started."""

    def __init__(self) -> None:
        self.bytes: dict[tuple[str, str], int] = {}

    def add(self, protocol: str, direction: str, count: int) -> None:
        key = (protocol, direction)
        self.bytes[key] = self.bytes.get(key, 0) + count

    def wrap(self, stream: DuplexStream, protocol: str) -> CountingStream:
        return CountingStream(stream, self, protocol)


class CountingStream:
    """``stream``, counting what goes through it into ``traffic``."""

    __slots__ = ("protocol", "stream", "traffic")

    def __init__(self, stream: DuplexStream, traffic: Traffic, protocol: str) -> None:
        self.stream, self.traffic, self.protocol = stream, traffic, protocol

    async def read(self, n: int | None = None) -> bytes:
        data = await self.stream.read(n)
        self.traffic.add(self.protocol, IN, len(data))
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)
        self.traffic.add(self.protocol, OUT, len(data))

    async def close(self) -> None:
        await self.stream.close()
