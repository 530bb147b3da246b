"""Length-prefixed frames over libp2p streams, with a size cap on every read.

A frame is an unsigned LEB128 varint length followed by that many bytes (the libp2p "msgio uvarint" framing).
``FrameReader`` buffers what the stream returns, so a small frame costs one ``read`` call, and it refuses a
length above its cap *before* reading the body: a peer cannot make us buffer 4 GiB by announcing it.

Why not ``stream.read()`` without a size: on Mplex it blocks until EOF (notes §4); we always read with a size.
Why not ``libp2p.request_response``: one request per stream, and it fails above ~6.5 MiB (notes §9.5).
"""

from __future__ import annotations

from typing import Protocol

import trio

from pangea_p2p.errors import RemoteProtocolError, TransportError

READ_CHUNK_BYTES = 1 << 16
VARINT_BYTES_MAX = 10


class ByteStream(Protocol):
    """What framing needs of a libp2p stream (``INetStream``) — also satisfied by test doubles."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


def encode_uvarint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"uvarint of a negative number {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return encode_uvarint(len(payload)) + payload


async def write_frame(stream: ByteStream, payload: bytes) -> None:
    try:
        await stream.write(frame(payload))
    except trio.Cancelled:
        raise
    except Exception as exc:
        raise TransportError(f"stream write failed: {exc!r}") from exc


class FrameReader:
    """Reads frames of at most ``frame_bytes_max`` from a stream."""

    def __init__(self, stream: ByteStream, frame_bytes_max: int) -> None:
        self.stream = stream
        self.frame_bytes_max = frame_bytes_max
        self._buf = bytearray()

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.read(READ_CHUNK_BYTES)
        except EOFError:  # libp2p's StreamEOF subclasses it
            return False
        except trio.Cancelled:
            raise
        except Exception as exc:  # StreamReset, MuxedStreamError, ...
            raise TransportError(f"stream read failed: {exc!r}") from exc
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def read_frame(self) -> bytes | None:
        """The next frame, or None on a clean end of stream between frames.

        RemoteProtocolError: oversized length, malformed varint, or the stream ended inside a frame.
        """
        length, header = await self._read_length()
        if length is None:
            return None
        while len(self._buf) < header + length:
            if not await self._fill():
                raise RemoteProtocolError(f"stream ended inside a {length}-byte frame")
        payload = bytes(self._buf[header : header + length])
        del self._buf[: header + length]
        return payload

    async def _read_length(self) -> tuple[int | None, int]:
        while True:
            length, header = _parse_uvarint(self._buf)
            if length is not None:
                if length > self.frame_bytes_max:
                    raise RemoteProtocolError(f"frame of {length} bytes announced, limit {self.frame_bytes_max}")
                return length, header
            if len(self._buf) >= VARINT_BYTES_MAX:
                raise RemoteProtocolError("malformed frame length (varint longer than 10 bytes)")
            if not await self._fill():
                if self._buf:
                    raise RemoteProtocolError("stream ended inside a frame length")
                return None, 0


def _parse_uvarint(buf: bytearray) -> tuple[int | None, int]:
    n = shift = 0
    for i, byte in enumerate(buf[:VARINT_BYTES_MAX]):
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, i + 1
        shift += 7
    return None, 0
