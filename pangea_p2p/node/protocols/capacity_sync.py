"""/pangea/capacity-sync/1.0.0: a joining peer copies the capacity adverts a neighbour holds.

The dialer opens a stream; the listener writes every advert of its directory (the signed bytes, one frame
each, at most SYNC_ADVERTS_MAX) and closes it. The dialer offers each to its own directory, which checks the
signature and freshness as for a gossiped advert. Protocol text: protocols/capacity.md ("Directory sync").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from pangea_p2p.core.capacity import CapacityDirectory
from pangea_p2p.errors import PangeaError, TransportError
from pangea_p2p.logs import get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, write_frame

CAPACITY_SYNC_PROTOCOL = TProtocol("/pangea/capacity-sync/1.0.0")
SYNC_ADVERTS_MAX = 10_000
SYNC_TIMEOUT_S = 10.0
log = get_logger("peer")


async def serve_capacity_sync(directory: CapacityDirectory, stream: INetStream) -> None:
    try:
        for advert in directory.adverts(time.time())[:SYNC_ADVERTS_MAX]:
            await write_frame(stream, advert.signed)
    except PangeaError as exc:
        log.debug("sync.serve_failed", error=str(exc))
    finally:
        await stream.close()


async def sync_from(host: IHost, peer: ID, advert_bytes_max: int, offer: Callable[[bytes], bool]) -> int:
    """Read ``peer``'s adverts and ``offer`` each (True: accepted); the number accepted. TransportError if the
    stream cannot be opened or the copy takes more than SYNC_TIMEOUT_S."""
    stream = await hostlib.open_stream(host, peer, [CAPACITY_SYNC_PROTOCOL])
    accepted = 0
    try:
        reader = FrameReader(stream, advert_bytes_max)
        with trio.move_on_after(SYNC_TIMEOUT_S) as scope:
            for _ in range(SYNC_ADVERTS_MAX):
                data = await reader.read_frame()
                if data is None:
                    break
                accepted += offer(data)
        if scope.cancelled_caught:
            raise TransportError(f"capacity sync from {peer} took more than {SYNC_TIMEOUT_S}s")
    finally:
        await stream.close()
    return accepted
