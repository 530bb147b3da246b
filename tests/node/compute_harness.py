"""Compute drivers wired through trio memory streams: real ``ComputeBehaviour``s, a fake sandbox, in-memory block
stores, and a wire log. No socket; run the tests under ``autojump_clock`` and every wait is virtual time.

    net = MemoryNet(nursery)
    a = net.add("a", memory_bytes_max=16 << 20)   # cannot run the jobs' 64 MiB tasks itself: it delegates
    b = net.add("b")
    run = a.submit([b"x", b"y"])
    await a.finished(run)
    net.sent(kind=codec.Result)                      # what went over the streams, when, from whom to whom
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from pangea_p2p.core import nat
from pangea_p2p.core.capacity import CapacityAdvert, LocalCapacity
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.behaviour import JobRun
from pangea_p2p.core.jobs.context import BehaviourConfig
from pangea_p2p.core.jobs.model import JobSpec, JobState, VerificationPolicy
from pangea_p2p.core.verify.receipts import ReceiptLimits
from pangea_p2p.errors import RemoteProtocolError, TransportError
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.journal import Journal
from pangea_p2p.node.ports import ComputePorts, DuplexStream
from pangea_p2p.sandbox import ChunksResult, MeteringReport, SandboxLimits

EPOCH = 1_750_000_000.0  # the wall clock of every driver is EPOCH + trio's (virtual) clock
MODULE = b"\x00asm\x01\x00\x00\x00 a module the fake sandbox never reads"
JOB_LIMITS = ReceiptLimits(fuel_max=10**11, memory_bytes_max=64 << 20, wall_time_s=30.0, output_bytes_max=1 << 20)
FUEL_PER_CHUNK = 10**6


def clock() -> float:
    return EPOCH + trio.current_time()


def output_of(chunk: bytes) -> bytes:
    """What the fake sandbox makes of a chunk."""
    return hashlib.sha256(chunk).digest()


@dataclass(frozen=True, slots=True)
class Sent:
    """One message written on a compute stream."""

    at: float  # clock()
    src: str  # node name
    dst: str
    message: Any  # a codec.Message (Any: tests read the fields of the kind they asked for)


class FakeSandbox:
    """``run_chunks`` that takes ``run_s`` of (virtual) time, or waits for ``hold`` to be set; outputs are
    ``output_of(chunk)``. Records each run, and each run cancelled."""

    def __init__(self) -> None:
        self.run_s = 0.0
        self.hold: trio.Event | None = None
        self.runs: list[list[bytes]] = []
        self.running = 0
        self.cancelled = 0
        self.started = trio.Event()  # set at the first run

    async def run_chunks(self, module_cid: str, module_bytes: bytes, chunks: Sequence[bytes],
                         limits: SandboxLimits | None = None) -> ChunksResult:
        assert module_bytes == MODULE
        self.runs.append(list(chunks))
        self.running += 1
        self.started.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            await trio.sleep(self.run_s)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        report = MeteringReport(FUEL_PER_CHUNK * len(chunks), 1 << 16, self.run_s, self.run_s, None)
        return ChunksResult([output_of(c) for c in chunks], None, None, report)


class MemoryBlocks:
    """The block network (ports.BlockNetwork) over the other nodes' block stores: the peers named, then any node
    that has the block (a provider). ``broken``: no fetch gets anything."""

    def __init__(self, net: MemoryNet) -> None:
        self.net = net
        self.broken = False  # no fetch gets anything
        self.fetched: list[tuple[str, tuple[str, ...]]] = []
        self.provided: list[str] = []

    async def fetch(self, cid: str, peers: Sequence[str], size_max: int) -> bytes:
        self.fetched.append((cid, tuple(peers)))
        await trio.sleep(0.001)  # a round trip
        if self.broken:
            raise TransportError(f"cannot fetch {cid}: nobody answered")
        by_id = {n.peer_id: n for n in self.net.nodes.values()}
        for node in [*(by_id[p] for p in peers if p in by_id), *self.net.nodes.values()]:
            data = node.blocks.get(cid)
            if data is not None:
                if len(data) > size_max:
                    raise RemoteProtocolError(f"{cid} is {len(data)} bytes, more than {size_max}")
                return data
        raise TransportError(f"cannot fetch {cid}: no peer has it")

    async def provide(self, cid: str) -> bool:
        self.provided.append(cid)
        return True


class Directory:
    """The candidate workers (ports.WorkerDirectory): an advert per node of the net that serves tasks."""

    def __init__(self, net: MemoryNet) -> None:
        self.net = net

    def adverts(self, now: float) -> list[CapacityAdvert]:
        return [n.advert(now) for n in self.net.nodes.values() if n.serves]

    def rtt_s(self, peer_id: str) -> float | None:
        return None

    def link(self, peer_id: str) -> nat.Link | None:
        return nat.Link.DIRECT if peer_id in self.net.nodes else None

    def circuit_age_s(self, peer_id: str, now: float) -> float | None:
        return None


class Endpoint:
    """One end of an in-memory stream, as a libp2p stream looks to the driver (ports.DuplexStream). What it
    writes is logged, frame by frame, in ``net.wire``."""

    def __init__(self, net: MemoryNet, stream: trio.abc.Stream, src: str, dst: str) -> None:
        self.net, self.trio_stream, self.src, self.dst = net, stream, src, dst

    async def read(self, n: int | None = None) -> bytes:
        return bytes(await self.trio_stream.receive_some(n))

    async def write(self, data: bytes) -> None:
        self.net.log_frames(self.src, self.dst, data)
        await self.trio_stream.send_all(data)

    async def close(self) -> None:
        await self.trio_stream.aclose()


@dataclass
class Link:
    """A stream between two nodes: ``dialer`` opened it to ``listener``."""

    dialer: Endpoint
    listener: Endpoint

    def reset(self) -> None:
        """Break it both ways, as a dropped connection does: reads and writes at either end fail."""
        for end in (self.dialer, self.listener):
            stream = end.trio_stream
            assert isinstance(stream, trio.StapledStream)
            stream.send_stream.close()  # type: ignore[attr-defined]
            stream.receive_stream.close()  # type: ignore[attr-defined]


@dataclass(eq=False)
class Node:
    name: str
    identity: Identity
    service: ComputeService
    sandbox: FakeSandbox
    network: MemoryBlocks
    config: BehaviourConfig
    serves: bool = True  # listed in the directory (a worker others may pick)
    speed_fuel_per_s: float = 1e9
    jobs_made: int = 0

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def blocks(self) -> BlockStore:
        return self.service.blocks

    def advert(self, now: float) -> CapacityAdvert:
        w = self.config.worker
        cap = LocalCapacity(2, 1 << 30, w.slots, w.slots, self.speed_fuel_per_s, w.limits_max.fuel_max,
                            w.limits_max.memory_bytes_max, w.limits_max.wall_time_s, "test")
        return CapacityAdvert(self.peer_id, 1, now, now + 600, cap, b"")

    def submit(self, chunks: list[bytes], verification: str = "hash", **options: Any) -> JobRun:
        """Submit a job of one task per chunk (``options``: JobSpec fields)."""
        self.jobs_made += 1
        self.blocks.put(MODULE, persist=True)
        cids = tuple(self.blocks.put(c, persist=True) for c in chunks)
        options.setdefault("fuel_per_chunk_estimate", FUEL_PER_CHUNK)
        spec = JobSpec(job_id=f"{self.name}-job{self.jobs_made}", module_cid=self.blocks.put(MODULE), chunk_cids=cids,
                       chunk_sizes=tuple(len(c) for c in chunks), limits=JOB_LIMITS,
                       verification=VerificationPolicy.parse(verification), **options)
        return self.service.submit(spec)

    async def finished(self, run: JobRun, timeout_s: float = 600.0) -> None:
        """Wait (virtual time) until ``run`` ends; AssertionError with its explanation unless it is DONE."""
        with trio.move_on_after(timeout_s):
            await self.service.watch(run.spec.job_id).done.wait()
        assert run.state is JobState.DONE, (run.state, run.reason, run.explain())

    def outputs(self, run: JobRun) -> list[bytes | None]:
        return [self.blocks.get(t.output_cid) for t in run.tasks()]


def config(*, memory_bytes_max: int = 256 << 20, slots: int = 2, speed_fuel_per_s: float = 1e9,
           accept_delay_s: float = 0.5) -> BehaviourConfig:
    limits = ReceiptLimits(10**12, memory_bytes_max, 300.0, 64 << 20)
    return BehaviourConfig(worker=AdmissionConfig(slots=slots, queue_max=2, limits_max=limits,
                                               speed_fuel_per_s=speed_fuel_per_s),
                           accept_delay_s=accept_delay_s)


class MemoryNet:
    """Compute drivers connected by in-memory streams (see the module docstring)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: dict[str, Node] = {}
        self.wire: list[Sent] = []
        self.links: list[Link] = []
        self.deaf: dict[str, list[Endpoint]] = {}  # name -> the streams it accepted and never reads
        self._names: dict[str, str] = {}  # peer id -> name

    def add(self, name: str, *, memory_bytes_max: int = 256 << 20, speed_fuel_per_s: float = 1e9,
            blocks: BlockStore | None = None, journal: Journal | None = None, serves: bool = True,
            accept_delay_s: float = 0.5) -> Node:
        identity = Identity(hashlib.sha256(name.encode()).digest())
        cfg = config(memory_bytes_max=memory_bytes_max, speed_fuel_per_s=speed_fuel_per_s,
                     accept_delay_s=accept_delay_s)
        sandbox, network = FakeSandbox(), MemoryBlocks(self)
        ports = ComputePorts(identity=identity, streams=_Opener(self, name), sandbox=sandbox,
                             blocks=blocks if blocks is not None else BlockStore(None), network=network,
                             workers=Directory(self), clock=clock, journal=journal)
        service = ComputeService(ports, cfg, self.nursery)
        node = self.nodes[name] = Node(name, identity, service, sandbox, network, cfg, serves, speed_fuel_per_s)
        self._names[identity.peer_id] = name
        self.nursery.start_soon(service.ticker)
        return node

    def add_deaf(self, name: str, *, speed_fuel_per_s: float = 1e9) -> Node:
        """A peer listed as a worker that accepts compute streams and never reads them."""
        node = self.add(name, speed_fuel_per_s=speed_fuel_per_s)
        self.deaf[name] = []
        return node

    def name_of(self, peer_id: str) -> str:
        return self._names[peer_id]

    async def connect(self, src: str, dst_id: str) -> DuplexStream:
        dst = self._names.get(dst_id)
        if dst is None:
            raise TransportError(f"no route to {dst_id}")
        if dst in self.deaf:  # a write blocks until the other end reads: this one never does
            left, right = trio.testing.lockstep_stream_pair()
            self.deaf[dst].append(Endpoint(self, right, dst, src))
            return Endpoint(self, left, src, dst)
        left, right = trio.testing.memory_stream_pair()
        link = Link(Endpoint(self, left, src, dst), Endpoint(self, right, dst, src))
        self.links.append(link)
        self.nursery.start_soon(self.nodes[dst].service.serve, link.listener, self.nodes[src].peer_id)
        return link.dialer

    def link(self, src: str, dst: str) -> Link:
        """The (last) stream ``src`` opened to ``dst``."""
        return [k for k in self.links if k.dialer.src == src and k.dialer.dst == dst][-1]

    def log_frames(self, src: str, dst: str, data: bytes) -> None:
        view = memoryview(data)
        while view:
            length, shift, i = 0, 0, 0
            while True:
                byte = view[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            payload = bytes(view[i : i + length])
            view = view[i + length :]
            with contextlib.suppress(RemoteProtocolError):  # a test's deliberate garbage is not logged
                self.wire.append(Sent(clock(), src, dst, codec.decode(payload)))

    def sent(self, kind: type | None = None, src: str | None = None, dst: str | None = None,
             where: Callable[[Sent], bool] | None = None) -> list[Sent]:
        return [s for s in self.wire if (kind is None or isinstance(s.message, kind)) and (src in (None, s.src))
                and (dst in (None, s.dst)) and (where is None or where(s))]


@dataclass
class _Opener:
    """ports.StreamOpener of node ``name``."""

    net: MemoryNet
    name: str
    opened: list[str] = field(default_factory=list)

    async def open(self, peer_id: str) -> DuplexStream:
        self.opened.append(peer_id)
        return await self.net.connect(self.name, peer_id)
