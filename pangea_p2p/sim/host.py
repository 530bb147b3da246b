"""The simulation as its peers and checkers see it (a Protocol: world.py implements it, nothing here imports
the world, so the simulator's modules form no import cycle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.behaviour import JobRun
from pangea_p2p.core.jobs.events import TaskUpdated
from pangea_p2p.core.jobs.model import JobState
from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.loop import EventLoop
from pangea_p2p.sim.sandbox import Board, Lies

if TYPE_CHECKING:
    from collections.abc import Sequence


class World(Protocol):
    """What a simulated peer and the checkers use of the run: the clock, the content store, the network, and the
    hooks that record what happened."""

    config: SimConfig
    loop: EventLoop
    t0: float
    content: dict[str, bytes]  # content-addressed blocks (inputs, outputs): what fetch-by-cid returns
    modules: set[str]  # module cids: modelled, every peer has them
    board: Board
    lies: Lies  # wrong answers sent per (module, input)
    index: dict[str, int]  # peer id -> peer index
    splits: int

    def peer_id(self, i: int) -> str: ...

    def is_up(self, i: int) -> bool: ...

    def reachable(self, a: int, b: int) -> bool: ...

    def dialable(self, a: int, b: int) -> bool:
        """Whether ``a`` can open a stream to ``b`` now (reachable, and through a relay if ``b`` is private)."""

    def circuit_age_s(self, issuer: int, worker: int, now: float) -> float | None:
        """How long the relayed circuit of ``issuer``'s stream to ``worker`` has been open (None: none)."""

    def nat_fields(self, i: int) -> dict[str, Any]:
        """Peer ``i``'s advert fields about its reachability and relays (none without NAT), after planning its
        relays."""

    def rtt_s(self, a: int, peer_id: str) -> float: ...

    def send(self, a: int, b: int, msg: codec.Message) -> None: ...

    def gossip(self, src: int, data: bytes) -> None: ...

    def gossip_proof(self, src: int, data: bytes) -> None:
        """Deliver fraud proof ``data`` published by ``src`` to the peers that hear gossip."""

    def opened_stream(self, issuer: int, worker: int) -> None:
        """``issuer`` opened a compute stream to ``worker`` (it hears when the worker crashes)."""

    def on_task_update(self, peer: int, act: TaskUpdated) -> None: ...

    def on_job_finished(self, peer: int, run: JobRun, state: JobState, reason: str) -> None: ...

    def role_of(self, peer_id: str) -> str: ...

    def all_jobs(self) -> Sequence[JobRun]: ...
