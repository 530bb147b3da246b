"""The modelled sandbox of a simulated peer, and the Byzantine roles that live in it.

What a real peer runs in wasmtime is modelled: a task's output chunk is ``sha256(module cid || input chunk)``
and its fuel a deterministic function of the same (``honest_chunk``); it takes ``fuel / speed`` seconds of
virtual time on ``slots`` parallel executors. Runs for other peers queue for an executor; this peer's own runs
(local runs, spot checks) do not. A run answers the behaviour's ``Execute`` with ``Executed``, unless it was
aborted or its peer crashed meanwhile (a run belongs to one incarnation of the peer).

Byzantine roles, as filters on what the modelled sandbox returns and on the signed answer: ``wrong`` (a random
wrong output, validly signed), ``collude`` and ``sybil`` (the same wrong output as every other member: colluders
and Sybils are one party, so their lies for one task are the same bytes and win votes together), ``copy``
(no work: answers what a Byzantine peer computed for the same input, or guesses), ``withhold`` (accepts,
never answers), ``forge`` (a flipped signature, or a receipt signed with a key that is not its own). ``liar``
and ``sybil`` also lie in their capacity adverts (peer.py). The three wrong-output roles lie on each task they
serve with probability ``lie_q`` (1: always), each drawing from its own rng (independently of the others); every
lie is counted per (module, input, output) in ``lies`` (the escape-rate measurement).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.jobs.events import Event, Execute, Executed, Purpose
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.errors import FailureKind
from pangea_p2p.sim.loop import EventLoop

VERIFY_CONFIG = CoordinatorConfig().verify
COLLUDE_TAG = b"pangea-sim-collude"
ROLES = ("honest", "wrong", "collude", "copy", "liar", "withhold", "forge", "sybil")
WRONG_OUTPUT_ROLES = frozenset({"wrong", "collude", "sybil"})
Board = dict[tuple[str, str], tuple[list[bytes], int]]  # (module, input) -> the answer Byzantine peers share
Lies = Counter[tuple[str, str, str]]  # (module, input, output cid) -> wrong answers sent by wrong-output roles


def honest_chunk(module_cid: str, chunk: bytes) -> tuple[bytes, int]:
    """The modelled guest: (output chunk, fuel) of running ``module_cid`` over ``chunk`` — deterministic."""
    out = hashlib.sha256(module_cid.encode() + chunk).digest()
    return out, 1 + out[0] * 256 + out[1]  # 1..65536 units, scaled by the job's fuel per unit


@dataclass
class PeerStats:
    executed_fuel: int = 0  # fuel burnt running tasks (useful or not)
    results_sent: int = 0
    wrong_sent: int = 0
    copies_sent: int = 0
    withheld: int = 0
    forged_sent: int = 0
    rejected_offers: int = 0
    advert_rejections: int = 0
    adverts_expired: int = 0  # peers this peer's directory saw leave (their advert expired)
    jobs_resumed: int = 0  # jobs taken up from the journal after a crash
    tasks_restored: int = 0  # ... and their tasks done before it, not run again


class Runner(Protocol):
    """The peer a modelled sandbox belongs to."""

    identity: Identity
    role: str
    rng: random.Random
    speed: float
    slow_factor: float
    slots: int
    stats: PeerStats
    up: bool
    incarnation: int


@dataclass(slots=True)
class _Run:
    """An ``Execute`` the modelled sandbox holds: queued, running, or (copy role) waiting to copy."""

    request: int
    task: TaskRef
    chunks: list[bytes]
    aborted: bool = False


class ModelledSandbox:
    """One incarnation of a peer's sandbox (see the module docstring). ``deliver`` hands an outcome to the
    peer's behaviour."""

    def __init__(self, peer: Runner, loop: EventLoop, board: Board, fuel_unit: int,
                 deliver: Callable[[Event], None], *, lies: Lies, lie_q: float) -> None:
        self.peer = peer
        self.loop = loop
        self.board = board
        self.lies = lies
        self.lie_q = lie_q
        self.fuel_unit = fuel_unit
        self.deliver = deliver
        self.incarnation = peer.incarnation
        self.queue: deque[_Run] = deque()  # runs for other peers waiting for a slot
        self.runs: dict[int, _Run] = {}  # request -> a run the sandbox holds
        self.executing = 0
        self.last_receipt: tuple[bytes, bytes] | None = None  # what forge replays

    def _live(self) -> bool:
        return self.peer.up and self.peer.incarnation == self.incarnation

    def execute(self, act: Execute) -> None:
        run = _Run(act.request, act.task, act.chunks)
        self.runs[act.request] = run
        role = self.peer.role
        if act.purpose is not Purpose.SERVE:  # this peer's own runs (local, spot checks) do not queue
            self.loop.after(0.0, self._run_here, run)
        elif role == "withhold":
            self.peer.stats.withheld += 1  # holds the slot and never answers
        elif role == "copy":
            self.loop.after(0.05, self._copy_answer, run)
        else:
            self.queue.append(run)
            self._start_next()

    def abort(self, request: int) -> None:
        run = self.runs.pop(request, None)
        if run is not None:
            run.aborted = True

    def _run_here(self, run: _Run) -> None:
        outputs, fuel = self.compute(run.task, run.chunks)
        self.loop.after(self._duration(fuel), self._here_done, (run, outputs, fuel))

    def _here_done(self, arg: tuple[_Run, list[bytes], int]) -> None:
        run, outputs, fuel = arg
        if not self._live():
            return
        self.peer.stats.executed_fuel += fuel
        self.runs.pop(run.request, None)
        if not run.aborted:
            self.deliver(self._outcome(run, outputs, fuel))

    def _start_next(self) -> None:
        while self.queue and self.executing < self.peer.slots:
            run = self.queue.popleft()
            if run.aborted:
                continue
            outputs, fuel = self.compute(run.task, run.chunks)
            self.executing += 1
            self.loop.after(self._duration(fuel), self._exec_done, (run, outputs, fuel))

    def _exec_done(self, arg: tuple[_Run, list[bytes], int]) -> None:
        run, outputs, fuel = arg
        if not self._live():
            return  # lost in a crash
        self.executing -= 1
        peer = self.peer
        peer.stats.executed_fuel += fuel
        self.runs.pop(run.request, None)
        if not run.aborted:
            ref = run.task
            if outputs and peer.role in WRONG_OUTPUT_ROLES and (self.lie_q >= 1.0 or peer.rng.random() < self.lie_q):
                outputs = list(outputs)
                if peer.role == "wrong":
                    outputs[0] = peer.rng.randbytes(32)
                else:
                    outputs[0] = hashlib.sha256(COLLUDE_TAG + outputs[0]).digest()
                peer.stats.wrong_sent += 1
                self.lies[(ref.module_cid, ref.input_cid, cid_of(frame_chunks(outputs)))] += 1
            if outputs and peer.role in WRONG_OUTPUT_ROLES | {"copy"}:
                self.board[(ref.module_cid, ref.input_cid)] = (outputs, fuel)
            self.deliver(self._outcome(run, outputs, fuel))
        self._start_next()

    def _copy_answer(self, run: _Run) -> None:
        if run.aborted or not self._live():
            return
        self.runs.pop(run.request, None)
        ref = run.task
        board = self.board.get((ref.module_cid, ref.input_cid))
        if board is not None:
            outputs, fuel = board
        else:  # nothing to copy: guess
            outputs = [self.peer.rng.randbytes(32) for _ in range(ref.chunk_count)]
            fuel = min(ref.limits.fuel_max, ref.chunk_count * 32768 * self.fuel_unit)
        self.peer.stats.copies_sent += 1
        self.deliver(self._outcome(run, list(outputs), fuel))

    @staticmethod
    def _outcome(run: _Run, outputs: list[bytes], fuel: int) -> Executed:
        if not outputs:
            return Executed(run.request, None, FailureKind.OUT_OF_FUEL, fuel)
        return Executed(run.request, outputs, None, fuel)

    def compute(self, ref: TaskRef, chunks: list[bytes]) -> tuple[list[bytes], int]:
        """The modelled guest's run: honest outputs and fuel; [] if the fuel budget runs out (OUT_OF_FUEL)."""
        scale = self.fuel_unit
        outputs, fuel = [], 0
        for chunk in chunks:
            out, units = honest_chunk(ref.module_cid, chunk)
            outputs.append(out)
            fuel += units * scale
        if fuel > ref.limits.fuel_max:
            return [], ref.limits.fuel_max
        return outputs, fuel

    def _duration(self, fuel: int) -> float:
        return fuel / self.peer.speed * self.peer.slow_factor + 0.001

    def forge(self, ref: TaskRef, tree: bytes, output: bytes) -> tuple[bytes, bytes]:
        """The forge role's filter over a signed answer: a receipt that must not verify (a flipped signature,
        a replayed one, or another peer's key)."""
        peer = self.peer
        peer.stats.forged_sent += 1
        kind = peer.rng.randrange(3)
        if kind == 1 and self.last_receipt is not None:
            return self.last_receipt
        if kind == 2 and output:
            other = Identity(hashlib.sha256(b"forger" + peer.identity.seed).digest())
            receipt = issue_receipt(other, ref.binding(), output=output,
                                    fuel_used=ReceiptTree.decode(tree, VERIFY_CONFIG).receipt.fuel_used,
                                    now=self.loop.now, rng=peer.rng)
            forged = replace(receipt, worker=peer.identity.peer_id, public_key=other.public_key)
            object.__setattr__(forged, "signature", receipt.signature)
            return ReceiptTree(forged, ()).encode(), output
        raw = bytearray(tree)
        raw[-1] ^= 0x01  # the signature is the receipt's last 64 bytes
        return bytes(raw), output
