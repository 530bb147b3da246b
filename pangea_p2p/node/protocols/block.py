"""/pangea/block/1.0.0: serve and fetch content-addressed blocks (modules, task inputs, task outputs).

A request is one frame (``BlockRequest{cid}``); the answer is a ``BlockResponse{found, size}`` frame and, when
found, the bytes in frames of at most 1 MiB. The fetcher checks the bytes against the content id, so a peer
can serve nothing but the right bytes. Protocol text: protocols/block.md.

``NetworkBlocks`` is the block exchange as the compute driver uses it (node/ports.py ``BlockNetwork``): a
block from the peers named, else from providers found in the Kademlia DHT; and the DHT announcement of the
blocks this peer serves (the modules of its jobs).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID

from pangea_p2p.core.cid import cid_matches
from pangea_p2p.core.jobs import codec
from pangea_p2p.errors import PangeaError, RemoteProtocolError, TransportError
from pangea_p2p.logs import get_logger
from pangea_p2p.net import host as hostlib
from pangea_p2p.net.framing import FrameReader, write_frame
from pangea_p2p.net.traffic import Traffic
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.ports import DuplexStream

BLOCK_PROTOCOL = TProtocol("/pangea/block/1.0.0")
FETCH_TIMEOUT_S = 60.0
FIND_PROVIDERS_TIMEOUT_S = 10.0
PROVIDERS_MAX = 5
PROVIDE_TIMEOUT_S = 30.0
log = get_logger("blocks")


async def serve_block(store: BlockStore, stream: DuplexStream) -> None:
    try:
        reader = FrameReader(stream, 1024)
        with trio.fail_after(10):
            request = await reader.read_frame()
        if request is None:
            return
        cid = codec.decode_block_request(request)
        data = store.get(cid)
        if data is None:
            await write_frame(stream, codec.encode_block_response(False, error="not here"))
            return
        await write_frame(stream, codec.encode_block_response(True, len(data)))
        view = memoryview(data)
        for start in range(0, len(data), codec.BLOCK_FRAME_BYTES):
            await write_frame(stream, bytes(view[start : start + codec.BLOCK_FRAME_BYTES]))
    except (PangeaError, trio.TooSlowError) as exc:
        log.debug("block.serve_failed", error=str(exc))
    finally:
        await stream.close()


async def fetch_block(host: IHost, peer: ID, cid: str, size_max: int, traffic: Traffic | None = None) -> bytes | None:
    """The block ``cid`` from ``peer`` (None if it does not have it); TransportError / RemoteProtocolError."""
    opened = await hostlib.open_stream(host, peer, [BLOCK_PROTOCOL])
    stream: DuplexStream = opened if traffic is None else traffic.wrap(opened, "block")
    try:
        with trio.fail_after(FETCH_TIMEOUT_S):
            await write_frame(stream, codec.encode_block_request(cid))
            reader = FrameReader(stream, max(1024, codec.BLOCK_FRAME_BYTES))
            head = await reader.read_frame()
            if head is None:
                raise RemoteProtocolError(f"{peer} closed the block stream without answering")
            found, size, _ = codec.decode_block_response(head, size_max)
            if not found:
                return None
            buf = bytearray()
            while len(buf) < size:
                part = await reader.read_frame()
                if part is None:
                    raise RemoteProtocolError(f"{peer} sent {len(buf)} of {size} bytes of {cid}")
                buf += part
        if len(buf) != size or not cid_matches(cid, buf):
            raise RemoteProtocolError(f"{peer} sent bytes that do not match {cid}")
        return bytes(buf)
    except trio.TooSlowError:
        raise TransportError(f"fetching {cid} from {peer} took more than {FETCH_TIMEOUT_S:g} s") from None
    finally:
        await stream.close()


async def fetch_from_peers(host: IHost, cid: str, peers: Sequence[ID], size_max: int,
                           traffic: Traffic | None = None) -> bytes:
    """``cid`` from the first of ``peers`` that has it (checked against the cid); TransportError naming why
    each peer could not give it."""
    errors = []
    for peer in peers:
        try:
            data = await fetch_block(host, peer, cid, size_max, traffic)
        except PangeaError as exc:
            errors.append(str(exc))
            continue
        if data is not None:
            return data
        errors.append(f"{peer} does not have it")
    raise TransportError(f"cannot fetch {cid}: {'; '.join(errors) or 'no peer to ask'}")


class NetworkBlocks:
    """Blocks from the network: the peers named, else providers found in the DHT (node/ports.py BlockNetwork)."""

    def __init__(self, host: IHost, dht: KadDHT, traffic: Traffic | None = None) -> None:
        self.host = host
        self.dht = dht
        self.traffic = traffic

    async def fetch(self, cid: str, peers: Sequence[str], size_max: int) -> bytes:
        ids = [ID.from_base58(p) for p in peers]
        try:
            return await fetch_from_peers(self.host, cid, ids, size_max, self.traffic)
        except TransportError as first:
            providers: list[ID] = []
            try:
                with trio.move_on_after(FIND_PROVIDERS_TIMEOUT_S):
                    providers = [i.peer_id for i in await self.dht.find_providers(cid, PROVIDERS_MAX)
                                 if i.peer_id not in ids and i.peer_id != self.host.get_id()]
            except Exception as exc:  # the DHT is the fallback; its failure is reported with the first error
                log.debug("dht.find_providers_failed", cid=cid, error=repr(exc))
            if not providers:
                raise first
            return await fetch_from_peers(self.host, cid, providers, size_max, self.traffic)

    async def provide(self, cid: str) -> bool:
        """Announce ``cid`` in the DHT (py-libp2p republishes its provider records itself); whether it worked."""
        try:
            with trio.move_on_after(PROVIDE_TIMEOUT_S):
                return bool(await self.dht.provide(cid))
        except Exception as exc:  # the DHT is a fallback for module fetches; never fatal
            log.debug("dht.provide_failed", cid=cid, error=repr(exc))
        return False
