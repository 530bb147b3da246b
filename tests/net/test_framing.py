from __future__ import annotations

import pytest
import trio
import trio.testing

from pangea_p2p.errors import RemoteProtocolError, TransportError
from pangea_p2p.net.framing import FrameReader, FrameWriter, encode_uvarint, frame, write_frame


class FakeStream:
    """Returns the scripted chunks one per read, then EOF (b'')."""

    def __init__(self, chunks: list[bytes], fail_with: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()
        self.fail_with = fail_with
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        if self.fail_with is not None:
            raise self.fail_with
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, data: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.written += data


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16384, 2**32, 2**63])
def test_uvarint_roundtrip(n: int) -> None:
    from pangea_p2p.net.framing import _parse_uvarint

    assert _parse_uvarint(bytearray(encode_uvarint(n) + b"tail")) == (n, len(encode_uvarint(n)))


async def test_frames_across_arbitrary_chunk_boundaries() -> None:
    payloads = [b"", b"a", b"x" * 200, b"y" * 70_000]
    data = b"".join(frame(p) for p in payloads)
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    reader = FrameReader(FakeStream(chunks), 100_000)
    assert [await reader.read_frame() for _ in payloads] == payloads
    assert await reader.read_frame() is None


async def test_small_frames_cost_one_read() -> None:
    stream = FakeStream([frame(b"ping") + frame(b"pong")])
    reader = FrameReader(stream, 64)
    assert await reader.read_frame() == b"ping"
    assert await reader.read_frame() == b"pong"
    assert stream.reads == 1


async def test_oversized_frame_refused_before_reading_body() -> None:
    stream = FakeStream([encode_uvarint(1 << 30)])
    with pytest.raises(RemoteProtocolError, match="1073741824 bytes announced, limit 1024"):
        await FrameReader(stream, 1024).read_frame()
    assert stream.reads == 1


async def test_truncated_frame_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="ended inside a 10-byte frame"):
        await FrameReader(FakeStream([frame(b"0123456789")[:5]]), 64).read_frame()
    with pytest.raises(RemoteProtocolError, match="inside a frame length"):
        await FrameReader(FakeStream([b"\x80"]), 64).read_frame()


async def test_malformed_varint() -> None:
    with pytest.raises(RemoteProtocolError, match="varint longer"):
        await FrameReader(FakeStream([b"\xff" * 12]), 64).read_frame()


async def test_eof_exception_is_clean_end() -> None:
    assert await FrameReader(FakeStream([], fail_with=EOFError()), 64).read_frame() is None


async def test_stream_failures_are_transport_errors() -> None:
    with pytest.raises(TransportError, match="read failed"):
        await FrameReader(FakeStream([], fail_with=ConnectionResetError("boom")), 64).read_frame()
    with pytest.raises(TransportError, match="write failed"):
        await write_frame(FakeStream([], fail_with=ConnectionResetError("boom")), b"x")


class SlowStream(FakeStream):
    """Each write waits until ``release`` is set (a write under way while other frames are sent)."""

    def __init__(self) -> None:
        super().__init__([])
        self.writes: list[bytes] = []
        self.release = trio.Event()

    async def write(self, data: bytes) -> None:
        await self.release.wait()
        self.writes.append(data)
        self.written += data


async def test_frame_writer_joins_frames_sent_during_a_write() -> None:
    stream = SlowStream()
    writer = FrameWriter(stream, 5.0)
    async with trio.open_nursery() as nursery:
        for p in (b"a", b"bb", b"ccc", b"dddd"):
            nursery.start_soon(writer.send, p)
            await trio.testing.wait_all_tasks_blocked()
        stream.release.set()
    assert stream.writes == [frame(b"a"), frame(b"bb") + frame(b"ccc") + frame(b"dddd")]
    reader = FrameReader(FakeStream([bytes(stream.written)]), 100)
    assert [await reader.read_frame() for _ in range(4)] == [b"a", b"bb", b"ccc", b"dddd"]


async def test_frame_writer_cancelled_waiter_takes_its_frame_back_and_errors_reach_their_senders() -> None:
    stream = SlowStream()
    writer = FrameWriter(stream, 5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.send, b"first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer.send, b"kept")
        await trio.testing.wait_all_tasks_blocked()
        cancelled = trio.CancelScope()

        async def send_then_cancel() -> None:
            with cancelled:
                await writer.send(b"dropped")

        nursery.start_soon(send_then_cancel)
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
        stream.release.set()
    assert stream.writes == [frame(b"first"), frame(b"kept")]
    broken = FrameWriter(FakeStream([], fail_with=ConnectionResetError("boom")), 5.0)
    with pytest.raises(TransportError):
        await broken.send(b"x")
