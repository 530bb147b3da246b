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


class _Batch:
    """Frames that go out in one write; ``error`` says why they did not."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: TransportError | None = None


class FrameWriter:
    """Writes frames on one stream, joining those sent back to back: a frame sent while a write is under way
    waits and goes out with every other frame queued meanwhile in the next single ``stream.write`` (one yamux
    frame, one noise message, one syscall for several small messages). No task of its own: the first sender
    that finds the stream idle writes the whole queue, then hands over. ``send`` returns once its frame was
    written; TransportError if that write failed or took longer than ``timeout_s`` (the peer stopped reading).
    A sender cancelled while its frame waits takes the frame back; one cancelled during a write leaves the
    stream's state unknown, as any cancelled write does (the frames of that write get a TransportError)."""

    def __init__(self, stream: ByteStream, timeout_s: float) -> None:
        self.stream = stream
        self.timeout_s = timeout_s
        self._queue: list[bytes] = []
        self._batch = _Batch()  # the batch queued frames join
        self._busy = False
        self._turn = trio.Event()  # set when a write ends: a waiter whose frame is still queued writes next

    async def send(self, payload: bytes) -> None:
        data = frame(payload)
        self._queue.append(data)
        batch = self._batch
        while not batch.done.is_set():
            if not self._busy:
                await self._write_queue()
                continue
            try:
                await self._turn.wait()
            except trio.Cancelled:
                if batch is self._batch:  # not taken by a write yet: not sent at all
                    self._queue.remove(data)
                raise
        if batch.error is not None:
            raise batch.error

    async def _write_queue(self) -> None:
        self._busy = True
        batch, self._batch = self._batch, _Batch()
        data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        self._queue = []
        try:
            with trio.move_on_after(self.timeout_s) as scope:
                await self.stream.write(data)
            if scope.cancelled_caught:
                batch.error = TransportError(f"the peer did not read a frame within {self.timeout_s:g} s")
        except trio.Cancelled:
            batch.error = TransportError("a write of this frame was cancelled")
            raise
        except Exception as exc:
            batch.error = TransportError(f"stream write failed: {exc!r}")
        finally:
            batch.done.set()
            self._busy = False
            turn, self._turn = self._turn, trio.Event()
            turn.set()


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
