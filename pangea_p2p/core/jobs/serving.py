"""The worker side of the compute protocol: the tasks other peers give this peer, from offer to answer.

Theory of operation
-------------------
An offer is admitted or refused by the admission service (``AdmissionControl``: slots, queue, limits, path,
depth). An admitted task (``Incoming``) goes through these states (``Incoming.move`` refuses any other)::

    FETCHING --input (and module) in hand--> RUNNING (a sandbox run) --result signed--> ANSWERED
                            \\-> SPLITTING (its parts run under a coordinator of this peer) -> ANSWERED
    RUNNING / SPLITTING --commit-reveal--> COMMITTED --reveal request--> ANSWERED
    any of them --cancel, issuer gone--> DROPPED;  --a problem (bad input, failed fetch or run)--> ANSWERED
                                                   with a refusal

``TaskAccepted`` goes out only when the task is still unanswered ``accept_delay_s`` after its offer: a small
task's result follows within milliseconds and stands for the acceptance. Under commit-then-reveal the worker
sends its commitment, keeps the result, and sends it when the issuer asks (at most ``reveal_wait_s_max``, then
it gives up and says so). Answers go back on the stream the offer came on (its channel).

Fetches are bounded: the input (from the issuer) and then the module, when this peer does not have it (from the
issuer, then the network), must arrive within ``fetch_budget_s`` each — a few seconds plus their size at
TRANSFER_BYTES_PER_S_MIN — or the task is given up and its slot freed. An offer whose input or module could not
be fetched costs its issuer: a strike in admission control (too many refuse its next offers for a while) and a
TIMEOUT in the trust book. So a peer cannot hold this peer's slots with offers of blocks nobody serves.

Each step of a served task is a ``Log`` action (the node writes it; ``--log-format json`` makes it a JSON
line): ``task.accepted``, ``task.running``, ``task.done`` or ``task.failed`` (fuel, seconds), ``task.result_sent``,
and ``task.gave_up`` / ``task.dropped`` (why).

Invariants: a task id is served at most once at a time; an admission slot is released when its task leaves
RUNNING or SPLITTING for good (a committed result does not hold a slot); a dropped task's fetch or run is
aborted and its late outcome ignored.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, field
from typing import Protocol

from pangea_p2p.core.chunks import chunk_count, frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.admission import AdmissionControl, Verdict
from pangea_p2p.core.jobs.codec import OUTPUT_INLINE_MAX, Accepted, Cancel, Commitment, Offer, Rejected, Result
from pangea_p2p.core.jobs.config import TRANSFER_BYTES_PER_S_MIN
from pangea_p2p.core.jobs.context import ComputeContext
from pangea_p2p.core.jobs.events import (
    Abort,
    Action,
    Execute,
    Executed,
    Fetch,
    FromIssuer,
    Log,
    Purpose,
    Reply,
    WorkerMessage,
)
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.commit_reveal import commit
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import AnyReceipt, Receipt, ReceiptTree
from pangea_p2p.core.verify.voting import Claim
from pangea_p2p.errors import FailureKind, LocalProtocolError, PangeaError, RemoteProtocolError


class Serving(enum.Enum):
    """Where a task this peer serves is (see the module docstring)."""

    FETCHING = "fetching"
    RUNNING = "running"
    SPLITTING = "splitting"
    COMMITTED = "committed"
    ANSWERED = "answered"
    DROPPED = "dropped"

    @property
    def final(self) -> bool:
        return self in (Serving.ANSWERED, Serving.DROPPED)


_SERVING_NEXT: dict[Serving, frozenset[Serving]] = {
    Serving.FETCHING: frozenset({Serving.RUNNING, Serving.SPLITTING, Serving.ANSWERED, Serving.DROPPED}),
    Serving.RUNNING: frozenset({Serving.COMMITTED, Serving.ANSWERED, Serving.DROPPED}),
    Serving.SPLITTING: frozenset({Serving.COMMITTED, Serving.ANSWERED, Serving.DROPPED}),
    Serving.COMMITTED: frozenset({Serving.ANSWERED, Serving.DROPPED}),
    Serving.ANSWERED: frozenset(),
    Serving.DROPPED: frozenset(),
}


@dataclass(eq=False, slots=True)
class Incoming:
    """A task another peer gave us."""

    ref: TaskRef
    issuer: str
    channel: int
    verdict: Verdict
    parts: int
    state: Serving = Serving.FETCHING
    request: int = 0  # the fetch or run under way for it
    reveal: tuple[bytes, bytes, bytes] | None = None  # (tree, output, nonce) waiting for the reveal request
    reveal_by_s: float = math.inf
    started_s: float = 0.0  # when its sandbox run started (its run time is logged)
    fetch_by_s: float = math.inf  # when the fetch under way is given up
    fetching: str = "input"  # what: "input" or "module"
    chunks: list[bytes] = field(default_factory=list)  # its input, while its module is fetched
    log: bytes = b""  # what its run printed (a split's: its parts'), sent with the result

    def move(self, to: Serving) -> None:
        if to not in _SERVING_NEXT[self.state]:
            raise LocalProtocolError(f"served task {self.ref.task_id}: no transition {self.state.value} -> {to.value}")
        self.state = to


@dataclass(slots=True)
class InputFetch:
    """A request: the input of a served task."""

    inc: Incoming


@dataclass(slots=True)
class ModuleFetch:
    """A request: the module of a served task, which this peer does not have yet."""

    inc: Incoming


@dataclass(slots=True)
class ServeRun:
    """A request: the sandbox run of a served task."""

    inc: Incoming


# Timer kinds this side sets.
ACCEPT, REVEAL, FETCH = "accept", "reveal", "fetch"
FETCH_WAIT_S = 5.0  # a served task's input or module arrives within this, plus its size at the slowest rate
MODULE_BYTES_MAX = 64 << 20  # the largest module a peer fetches


class ServerHost(Protocol):
    """The behaviour as the server sees it: the actions list it appends to, its counters, request numbers and
    timers, and the issuer side (a task to split becomes a coordinator of this peer)."""

    actions: list[Action]
    counters: dict[str, int]

    def request(self, what: InputFetch | ModuleFetch | ServeRun) -> int: ...

    def forget_request(self, request: int) -> None: ...

    def timer(self, when: float, kind: str, key: str) -> None: ...

    def start_split(self, inc: Incoming, framed: bytes, now: float) -> None: ...

    def cancel_split(self, inc: Incoming, why: str, now: float) -> None: ...


class TaskServer:
    """The tasks this peer serves (see the module docstring)."""

    def __init__(self, ctx: ComputeContext, host: ServerHost) -> None:
        self.ctx = ctx
        self.host = host
        self.self_id = ctx.identity.peer_id
        self.config = ctx.config
        self.admission = AdmissionControl(self.self_id, ctx.config.worker, ctx.config.split)
        self.incoming: dict[str, Incoming] = {}
        self.unaccepted: dict[str, float] = {}  # served task id -> when its TaskAccepted is due

    def issuers(self) -> set[str]:
        """The peers whose tasks this peer serves now."""
        return {inc.issuer for inc in self.incoming.values()}

    # --- messages from issuers ----------------------------------------------------------------------------

    def on_message(self, now: float, ev: FromIssuer) -> None:
        msg = ev.message
        if isinstance(msg, Offer):
            self._on_offer(now, ev.peer, ev.channel, msg)
            return
        inc = self.incoming.get(msg.task_id)
        if inc is None or inc.issuer != ev.peer:
            return
        if type(msg) is Cancel:
            self.drop(inc, "cancelled by the issuer", now)
        elif inc.state is Serving.COMMITTED and inc.reveal is not None:
            tree, output, nonce = inc.reveal
            self._send_result(inc, tree, output, nonce)

    def _on_offer(self, now: float, issuer: str, channel: int, offer: Offer) -> None:
        ref = offer.ref
        admission = self.admission.admit(ref, issuer, self.ctx.views(now), now)
        counters = self.host.counters
        if admission.verdict is Verdict.REJECT:
            counters["offers_rejected"] += 1
            self.host.actions.append(Reply(issuer, channel, Rejected(ref.task_id, admission.reason)))
            return
        counters["offers_admitted"] += 1
        inc = Incoming(ref, issuer, channel, admission.verdict, admission.parts)
        self.incoming[ref.task_id] = inc
        self._log("task.accepted", ref.task_id, issuer=issuer, job=ref.job_id, verdict=str(admission.verdict))
        if self.config.accept_delay_s > 0:
            due = self.unaccepted[ref.task_id] = now + self.config.accept_delay_s
            self.host.timer(due, ACCEPT, ref.task_id)
        else:
            self.host.actions.append(Reply(issuer, channel, Accepted(ref.task_id)))
        if offer.input_inline:
            if cid_of(offer.input_inline) != ref.input_cid:
                self.give_up(inc, f"input of {ref.task_id} does not match {ref.input_cid}")
                return
            self.input_ready(inc, offer.input_inline, now)
            return
        framed = self.ctx.blocks.get(ref.input_cid)  # a block read back was checked against its cid
        if framed is not None:
            self.input_ready(inc, framed, now)
            return
        self._fetch(inc, InputFetch(inc), ref.input_cid, self.config.worker.input_bytes_max, ref.input_bytes, now)

    def _fetch(self, inc: Incoming, what: InputFetch | ModuleFetch, cid: str, size_max: int, size: int,
               now: float) -> None:
        """Fetch ``cid`` for ``inc`` (from its issuer first), given up at ``inc.fetch_by_s``."""
        inc.request = self.host.request(what)
        inc.fetching = "module" if isinstance(what, ModuleFetch) else "input"
        inc.fetch_by_s = now + fetch_budget_s(size)
        self.host.timer(inc.fetch_by_s, FETCH, inc.ref.task_id)
        self.host.actions.append(Fetch(inc.request, cid, (inc.issuer,), size_max))

    def fetch_failed(self, inc: Incoming, why: str, now: float) -> None:
        """The input or module of ``inc`` could not be had: give it up, and it costs the issuer."""
        cid = inc.ref.input_cid if inc.fetching == "input" else inc.ref.module_cid
        self.admission.strike(inc.issuer, cid, now)
        self.ctx.trust.record(inc.issuer, Outcome.TIMEOUT, now)
        self.give_up(inc, f"could not fetch its {inc.fetching} {cid}: {why}")

    def module_ready(self, inc: Incoming, now: float) -> None:
        """The module of ``inc`` is in the block store now: run it."""
        self._run(inc, now)

    def on_issuer_lost(self, now: float, issuer: str, channel: int) -> None:
        """The stream ``issuer`` gave its tasks on closed: they are not wanted any more."""
        gone = [inc for inc in self.incoming.values() if inc.issuer == issuer and inc.channel == channel]
        for inc in gone:
            self.drop(inc, "the issuer went away", now)

    # --- the work -------------------------------------------------------------------------------------------

    def input_ready(self, inc: Incoming, framed: bytes, now: float) -> None:
        """The input of ``inc`` is in hand: run it, or split it."""
        ref = inc.ref
        try:
            if chunk_count(framed) != ref.chunk_count:
                raise RemoteProtocolError(f"input of {ref.task_id} does not hold the {ref.chunk_count} chunks "
                                          "the offer names")
            chunks = unframe_chunks(framed)
        except RemoteProtocolError as exc:
            self.give_up(inc, str(exc))
            return
        if inc.verdict is Verdict.SPLIT:
            inc.move(Serving.SPLITTING)
            self.host.start_split(inc, framed, now)
            return
        inc.chunks = chunks
        if not self.ctx.blocks.has(ref.module_cid):  # fetched here first, so that it too is bounded in time
            self._fetch(inc, ModuleFetch(inc), ref.module_cid, MODULE_BYTES_MAX, MODULE_BYTES_MAX // 16, now)
            return
        self._run(inc, now)

    def _run(self, inc: Incoming, now: float) -> None:
        inc.move(Serving.RUNNING)
        inc.fetch_by_s = math.inf
        inc.started_s = now
        self._log("task.running", inc.ref.task_id, issuer=inc.issuer)
        inc.request = self.host.request(ServeRun(inc))
        chunks, inc.chunks = inc.chunks, []
        self.host.actions.append(Execute(inc.request, inc.ref, chunks, Purpose.SERVE, module_from=(inc.issuer,)))

    def served(self, inc: Incoming, ev: Executed, now: float) -> None:
        """The sandbox run of ``inc`` ended: sign, release the slot, answer."""
        ref = inc.ref
        took = f"{now - inc.started_s:.6f}"
        if ev.failure is None:
            self._log("task.done", ref.task_id, fuel=str(ev.fuel_used), time_s=took)
        else:
            self._log("task.failed", ref.task_id, failure=ev.failure.name.lower(), fuel=str(ev.fuel_used), time_s=took)
        tree, output = self.sign(ref, ev.outputs, ev.failure, ev.fuel_used, now)
        tree_bytes = tree.encode()
        if self.ctx.forge is not None:
            tree_bytes, output = self.ctx.forge(ref, tree_bytes, output)
        self.admission.release(ref.task_id)  # the slot is free; a reveal may still be awaited
        inc.log = ev.log
        self.answer(inc, tree_bytes, output, now)

    def sign(self, ref: TaskRef, outputs: list[bytes] | None, failure: FailureKind | None, fuel: int,
             now: float) -> tuple[ReceiptTree, bytes]:
        """This peer's signed receipt over a run of ``ref``: (tree, framed output, b'' for a failure)."""
        binding = ref.binding()
        ctx = self.ctx
        if failure is not None or outputs is None:
            receipt = issue_receipt(ctx.identity, binding, failure=failure or FailureKind.WORKER_CRASHED,
                                    fuel_used=fuel, now=now, rng=ctx.rng)
            return ReceiptTree(receipt, ()), b""
        output = frame_chunks(outputs)
        receipt = issue_receipt(ctx.identity, binding, output=output, fuel_used=fuel, now=now, rng=ctx.rng)
        return ReceiptTree(receipt, ()), output

    def answer(self, inc: Incoming, tree: bytes, output: bytes, now: float) -> None:
        """Send the result; under commit-then-reveal, the commitment first and the result when asked."""
        ref = inc.ref
        nonce = b""
        if ref.commit_reveal:
            try:
                claim = commit_claim(ReceiptTree.decode(tree, self.config.coordinator.verify).receipt, output)
            except PangeaError:
                claim = None  # a garbled tree (forged): nothing to commit to
            if claim is not None:
                digest, nonce = commit(ref.job_id, ref.task_id, claim, self.self_id, self.ctx.rng)
                inc.reveal = (tree, output, nonce)
                inc.move(Serving.COMMITTED)
                # not bounded by the offer's deadline: that is when the work is due, the reveal comes later
                inc.reveal_by_s = now + self.config.reveal_wait_s_max
                if inc.reveal_by_s < math.inf:
                    self.host.timer(inc.reveal_by_s, REVEAL, ref.task_id)
                self._reply(inc, Commitment(ref.task_id, digest))
                return
        self._send_result(inc, tree, output, nonce)

    def _send_result(self, inc: Incoming, tree: bytes, output: bytes, nonce: bytes) -> None:
        ref = inc.ref
        self.host.counters["results_sent"] += 1
        if len(output) <= OUTPUT_INLINE_MAX:
            msg = Result(ref.task_id, tree, output_inline=output, nonce=nonce, log=inc.log)
        else:
            cid = self.ctx.blocks.put(output)
            msg = Result(ref.task_id, tree, output_cid=cid, output_bytes=len(output), nonce=nonce, log=inc.log)
        self._reply(inc, msg)
        self._log("task.result_sent", ref.task_id, issuer=inc.issuer, bytes=str(len(output)))
        self._close(inc, Serving.ANSWERED)

    def _log(self, event: str, task_id: str, **fields: str) -> None:
        self.host.actions.append(Log("info", event, (("task", task_id), *fields.items())))

    def _reply(self, inc: Incoming, msg: WorkerMessage) -> None:
        if type(msg) is not Accepted:  # any answer says the task was taken: no TaskAccepted due any more
            self.unaccepted.pop(inc.ref.task_id, None)
        self.host.actions.append(Reply(inc.issuer, inc.channel, msg))

    def give_up(self, inc: Incoming, why: str) -> None:
        """Tell the issuer this peer will not answer ``inc`` (it tries elsewhere at once)."""
        self._log("task.gave_up", inc.ref.task_id, error=why)
        self._reply(inc, Rejected(inc.ref.task_id, f"gave up: {why}"[:256]))
        self._close(inc, Serving.ANSWERED)

    def drop(self, inc: Incoming, why: str, now: float) -> None:
        """``inc`` is not wanted any more (cancelled, or its issuer went away): stop its work, no answer."""
        if inc.state in (Serving.FETCHING, Serving.RUNNING) and inc.request:
            self.host.forget_request(inc.request)
            self.host.actions.append(Abort(inc.request))
        splitting = inc.state is Serving.SPLITTING
        self._log("task.dropped", inc.ref.task_id, why=why)
        self._close(inc, Serving.DROPPED)
        if splitting:
            self.host.cancel_split(inc, why, now)

    def _close(self, inc: Incoming, state: Serving) -> None:
        inc.move(state)
        task_id = inc.ref.task_id
        if self.incoming.get(task_id) is inc:
            del self.incoming[task_id]
        self.unaccepted.pop(task_id, None)
        self.admission.release(task_id)

    # --- timers ---------------------------------------------------------------------------------------------

    def live(self, when: float, kind: str, key: str) -> bool:
        """Whether this side's timer (``kind``, ``key``) set for ``when`` still stands."""
        if kind == ACCEPT:
            return self.unaccepted.get(key) == when
        inc = self.incoming.get(key)
        if kind == FETCH:
            return inc is not None and inc.state is Serving.FETCHING and inc.fetch_by_s == when
        return inc is not None and inc.state is Serving.COMMITTED and inc.reveal_by_s == when

    def fire(self, kind: str, key: str, now: float) -> None:
        """A live timer fired: a TaskAccepted still due, a fetch that took too long, or a reveal request that did
        not come."""
        inc = self.incoming[key]
        if kind == ACCEPT:  # still unanswered after the accept delay: say it was taken
            del self.unaccepted[key]
            self.host.actions.append(Reply(inc.issuer, inc.channel, Accepted(key)))
        elif kind == FETCH:
            self.host.forget_request(inc.request)
            self.host.actions.append(Abort(inc.request))
            self.fetch_failed(inc, "it did not arrive in time", now)
        else:
            self.give_up(inc, f"no reveal request within {self.config.reveal_wait_s_max:g} s")


def fetch_budget_s(size: int) -> float:
    """How long a served task's input or module of ``size`` bytes may take to arrive."""
    return FETCH_WAIT_S + size / TRANSFER_BYTES_PER_S_MIN


def commit_claim(root: AnyReceipt, output: bytes) -> Claim | None:
    """What a worker commits to for its answer: an execution receipt's claim, or for a delegation the merged
    output's digest and the fuel of the whole tree; None for a failure that is no vote."""
    if isinstance(root, Receipt):
        return Claim.from_receipt(root)
    return Claim(hashlib.sha256(output).digest(), root.fuel_used)
