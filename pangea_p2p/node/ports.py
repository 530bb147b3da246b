"""What the compute driver (node/compute.py) needs from the rest of the peer, as small typed interfaces.

The driver carries out the actions of the core's ``ComputeBehaviour``; these are the means it does it with.
node/peer.py builds them from the running peer (libp2p streams, the sandbox pool, the DHT, the capacity
directory, the wall clock); tests build them from trio memory streams, a fake sandbox and in-memory block stores
(tests/node/compute_harness.py), and run the driver under trio's autojump clock.

    StreamOpener    open a compute stream to a peer (inbound streams are handed to ``ComputeService.serve``)
    SandboxRunner   run a task's chunks under limits (the sandbox pool's ``run_chunks``)
    BlockNetwork    a block from peers, else from providers; announce a block this peer serves
    WorkerDirectory the candidate workers: capacity adverts, and the round-trip time measured to each
    Clock           wall time for the behaviour's ``now`` (timers sleep on trio's clock)
    Publish         publish a fraud proof on gossipsub's fraud topic (None: this peer does not gossip proofs)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pangea_p2p.core.capacity import CapacityAdvert
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.nat import Link
from pangea_p2p.net.framing import ByteStream
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.journal import Journal
from pangea_p2p.sandbox import ChunksResult, SandboxLimits


class DuplexStream(ByteStream, Protocol):
    """A stream both ways (a libp2p ``INetStream``): ``read`` returns b"" at its end; ``close`` ends our side."""

    async def close(self) -> None: ...


class StreamOpener(Protocol):
    async def open(self, peer_id: str) -> DuplexStream:
        """A new compute stream to ``peer_id``; TransportError if it cannot be had in time."""
        ...


class SandboxRunner(Protocol):
    async def run_chunks(self, module_cid: str, module_bytes: bytes, chunks: Sequence[bytes],
                         limits: SandboxLimits | None = None) -> ChunksResult:
        """One task over ``chunks``: an output per chunk, or the failure (pangea_p2p.sandbox.Sandbox)."""
        ...


class BlockNetwork(Protocol):
    async def fetch(self, cid: str, peers: Sequence[str], size_max: int) -> bytes:
        """Block ``cid`` (at most ``size_max`` bytes, checked against the cid) from the first of ``peers`` that
        has it, else from a provider; PangeaError (TransportError, RemoteProtocolError) saying why not."""
        ...

    async def provide(self, cid: str) -> bool:
        """Announce that this peer serves ``cid``; whether the announcement went out."""
        ...


class WorkerDirectory(Protocol):
    def adverts(self, now: float) -> Sequence[CapacityAdvert]:
        """The live capacity adverts at ``now`` (this peer's own among them or not)."""
        ...

    def rtt_s(self, peer_id: str) -> float | None:
        """The round-trip time measured to ``peer_id``, if any."""
        ...

    def link(self, peer_id: str) -> Link | None:
        """How we are connected to ``peer_id`` now (None: not connected; its advert says how it will be)."""
        ...

    def circuit_age_s(self, peer_id: str, now: float) -> float | None:
        """How long ago the relayed connection we opened to ``peer_id`` was opened (None: we hold none)."""
        ...


Clock = Callable[[], float]
Publish = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ComputePorts:
    """Everything the compute driver works with, but its config and its nursery."""

    identity: Identity
    streams: StreamOpener
    sandbox: SandboxRunner
    blocks: BlockStore
    network: BlockNetwork
    workers: WorkerDirectory
    clock: Clock = time.time
    journal: Journal | None = None
    publish_proof: Publish | None = None
