"""/pangea/ping/1.0.0: round-trip times to neighbours (the scheduler prefers close workers).

The dialer sends ``Ping{nonce}`` frames on one stream; the listener answers each with the same frame, in order,
until the dialer closes it. Protocol text: protocols/ping.md.
"""

from __future__ import annotations

import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from pangea_p2p.errors import PangeaError, RemoteProtocolError
from pangea_p2p.logs import get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, write_frame
from pangea_p2p.wire import ping_pb2

PING_PROTOCOL = TProtocol("/pangea/ping/1.0.0")
PING_BYTES_MAX = 64
PING_NONCE_BYTES_MAX = 32
log = get_logger("peer")


async def serve_ping(stream: INetStream) -> None:
    reader = FrameReader(stream, PING_BYTES_MAX)
    try:
        while (payload := await reader.read_frame()) is not None:
            nonce = decode_ping(payload)
            await write_frame(stream, ping_pb2.Ping(nonce=nonce).SerializeToString())
    except PangeaError as exc:
        log.debug("ping.serve_failed", error=str(exc))
    finally:
        await stream.close()


async def ping(host: IHost, peer: ID, count: int = 1) -> float:
    """Median round-trip time to ``peer`` in seconds over ``count`` pings on one stream."""
    stream = await hostlib.open_stream(host, peer, [PING_PROTOCOL])
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
    return sorted(samples)[len(samples) // 2]


def decode_ping(payload: bytes) -> bytes:
    """The nonce of a ping frame; RemoteProtocolError for a malformed frame or a nonce of a bad size."""
    try:
        nonce = bytes(ping_pb2.Ping.FromString(payload).nonce)
    except DecodeError:
        raise RemoteProtocolError("malformed ping frame") from None
    if not 1 <= len(nonce) <= PING_NONCE_BYTES_MAX:
        raise RemoteProtocolError(f"ping nonce of {len(nonce)} bytes, allowed 1..{PING_NONCE_BYTES_MAX}")
    return nonce
