"""/pangea/compute/1.0.0: the frames of the compute protocol on one stream (what they mean is core/jobs).

The issuer of a task opens a stream to the worker and keeps it: offers, cancels and reveal requests go out on
it, the worker's answers come back on it. Every message is one frame (net/framing.py) holding one
``ComputeMessage`` (core/jobs/codec.py), at most ``codec.MESSAGE_BYTES_MAX``. Protocol text: protocols/compute.md.

``MessageStream`` is one such stream, either end: ``send`` joins messages sent back to back into one write and
gives up on a peer that does not take them within SEND_TIMEOUT_S; ``receive`` hands each decoded message, and
each frame that does not decode, to the caller until the stream ends. ``ComputeDialer`` opens streams with a
libp2p host (node/ports.py ``StreamOpener``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from pangea_p2p.core.jobs import codec
from pangea_p2p.errors import PangeaError, RemoteProtocolError
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, FrameWriter
from pangea_p2p.net.traffic import Traffic
from pangea_p2p.node.ports import DuplexStream

COMPUTE_PROTOCOL = TProtocol("/pangea/compute/1.0.0")
SEND_TIMEOUT_S = 30.0  # a peer that does not take a frame for this long has stopped reading
CLOSED = "stream closed"  # why a stream ended that ended cleanly


class MessageStream:
    """A compute stream with ``peer`` (see the module docstring)."""

    __slots__ = ("peer", "stream", "writer")

    def __init__(self, peer: str, stream: DuplexStream, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.peer = peer
        self.stream = stream
        self.writer = FrameWriter(stream, send_timeout_s)

    async def send(self, msg: codec.Message) -> None:
        """TransportError if the peer does not take the frame within the send timeout (it stopped reading) or
        the stream broke. Messages sent back to back (a burst of offers) go out in one write."""
        await self.writer.send(codec.encode(msg))

    async def receive(self, on_message: Callable[[codec.Message], None], on_malformed: Callable[[str], None]) -> str:
        """Read until the stream ends; why it ended (CLOSED for a clean end). A frame that does not decode is
        ``on_malformed`` and the stream goes on; one that breaks the framing (oversized, cut short) is
        ``on_malformed`` and the end."""
        try:
            reader = FrameReader(self.stream, codec.MESSAGE_BYTES_MAX)
            while (frame := await reader.read_frame()) is not None:
                try:
                    msg = codec.decode(frame)
                except RemoteProtocolError as exc:
                    on_malformed(str(exc))
                    continue
                on_message(msg)
        except RemoteProtocolError as exc:  # e.g. an oversized frame: a fault, not a lost connection
            on_malformed(str(exc))
            return str(exc)
        except PangeaError as exc:
            return str(exc)
        return CLOSED

    async def close(self) -> None:
        """Close the stream, even from a task being cancelled."""
        with trio.CancelScope(shield=True):
            await self.stream.close()


class ComputeDialer:
    """Opens compute streams with a libp2p host, with a deadline (net/host.py ``open_stream``), counted in
    ``traffic`` when given."""

    def __init__(self, host: IHost, traffic: Traffic | None = None,
                 connect: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.host = host
        self.traffic = traffic
        self.connect = connect  # reaches a peer behind NAT through its relays first (net/nat.py NatService)

    async def open(self, peer_id: str) -> DuplexStream:
        if self.connect is not None:
            await self.connect(peer_id)
        stream = await hostlib.open_stream(self.host, ID.from_base58(peer_id), [COMPUTE_PROTOCOL])
        return stream if self.traffic is None else self.traffic.wrap(stream, "compute")


def remote_peer(stream: INetStream) -> str:
    """The peer id at the other end of a libp2p stream."""
    return str(stream.muxed_conn.peer_id)
