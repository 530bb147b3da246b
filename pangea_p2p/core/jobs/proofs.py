"""Fraud proofs at one peer: taking them in, checking them by one re-execution, passing them on.

Theory of operation
-------------------
A proof (verify/fraud.py) arrives as ``ProofReceived`` from its sender. The intake (``ProofIntake``) drops
it (rate limits, seen already, too many pending) or rejects it (oversized, malformed, forged: the sender loses
trust). A proof against a peer this one never dealt with (gave no task to, has no trust record of) is dropped:
it has nothing of
the accused's to re-verify, and a re-run by every peer that hears of a lie would multiply its cost across the
network (a peer verifies proofs about the workers it uses). A proof for a task above this peer's own limits is
dropped with a log line. Else the task's input is
fetched (from the sender and the accused, else providers) and the task is run here (``Execute``, purpose
PROOF; the module comes the same way). The run decides (``judge``): it differs from the receipt -> the lie is
proven: the accused is a proven liar here (as for a lie this peer caught itself: its trust drops to the floor and
every result it signed here is verified again, ``recheck``) and the proof is published on, once
(the intake remembers it); it agrees -> the proof was false: its sender loses trust; the run says nothing (a
timeout, a crash, a fetch that failed) -> nothing happens. Either way the proof leaves the pending set.

``originate`` is how this peer makes a proof of a lie it caught itself (a spot check or its own run that
disagrees with a worker's signed result; the coordinator's ``ProvenLie`` effect): published once, and
remembered so the copies that come back are not checked again.

Invariants: a proof is run at most once while the intake remembers it; every admitted proof leaves the pending
set exactly once (a verdict, a drop, a failed fetch or run); only a proof this peer verified or made is
published by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs.events import Action, Execute, Executed, Fetch, Log, ProofReceived, PublishProof, Purpose
from pangea_p2p.core.jobs.model import TaskRef
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.fraud import FraudProof, ProofIntake, Verdict, judge
from pangea_p2p.core.verify.receipts import Receipt, ReceiptTree
from pangea_p2p.errors import RemoteProtocolError, VerificationError

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.context import ComputeContext
    from pangea_p2p.core.trust import TrustBook


class ProofHost(Protocol):
    """The behaviour, as the proof desk sees it."""

    actions: list[Action]
    trust: TrustBook
    self_id: str

    def request(self, what: ProofCheck) -> int: ...

    def recheck(self, liar: str, now: float) -> list[Action]: ...

    def dealt_with(self, peer: str) -> bool: ...


@dataclass(slots=True)
class ProofCheck:
    """A proof being checked: its input being fetched, or its run (one request each)."""

    proof: FraudProof
    sender: str
    ref: TaskRef


class ProofDesk:
    """The fraud proofs of one peer (see the module docstring)."""

    def __init__(self, ctx: ComputeContext, host: ProofHost) -> None:
        self.ctx = ctx
        self.host = host
        self.intake = ProofIntake(ctx.config.fraud)
        self.counters: dict[str, int] = dict.fromkeys(
            ("received", "rejected", "dropped", "lies_proven", "false_proofs", "inconclusive", "published"), 0)

    def _log(self, level: str, event: str, *fields: tuple[str, str]) -> None:
        self.host.actions.append(Log(level, event, fields))

    def on_received(self, now: float, ev: ProofReceived) -> None:
        self.counters["received"] += 1
        try:
            admitted = self.intake.admit(ev.sender, ev.data, now)
        except VerificationError as exc:
            self.counters["rejected"] += 1
            self._penalise(ev.sender, now)
            self._log("warning", "fraud_proof.rejected", ("sender", ev.sender), ("error", str(exc)))
            return
        if isinstance(admitted, str):
            self.counters["dropped"] += 1
            self._log("debug", "fraud_proof.dropped", ("sender", ev.sender), ("why", admitted))
            return
        proof = admitted
        if not self.host.dealt_with(proof.accused):
            # this peer never gave the accused a task nor judged it: nothing of its here to re-verify, nothing to
            # distrust yet; a re-run (and a relay) by every peer that hears of a lie would multiply its cost
            self._end(proof, "dropped", "debug", "fraud_proof.unknown_accused", ev.sender,
                      f"{proof.accused} is not a peer this one has dealt with")
            return
        problem = self._cannot_run(proof)
        if problem:
            self._end(proof, "dropped", "info", "fraud_proof.cannot_run", ev.sender, problem)
            return
        check = ProofCheck(proof, ev.sender, _task_ref(proof, now))
        framed = self.ctx.blocks.get(check.ref.input_cid)
        if framed is None:
            self.host.actions.append(Fetch(self.host.request(check), check.ref.input_cid, self._from(check),
                                           self.ctx.config.worker.input_bytes_max))
            return
        self.input_ready(check, framed, now)

    def input_ready(self, check: ProofCheck, framed: bytes, now: float) -> None:
        """The proof's input is here: run the task."""
        try:
            chunks = unframe_chunks(framed)
        except RemoteProtocolError as exc:  # the receipt names an input that is not a chunk list: it proves nothing
            self.failed(check, f"its input is not a chunk list: {exc}")
            return
        if len(chunks) != check.ref.chunk_count:
            self.failed(check, f"its input has {len(chunks)} chunks, the receipt binds {check.ref.chunk_count}")
            return
        self.host.actions.append(Execute(self.host.request(check), check.ref, chunks, Purpose.PROOF,
                                         module_from=self._from(check)))

    def executed(self, check: ProofCheck, ev: Executed, now: float) -> None:
        """This peer's run of the proof's task ended: the verdict."""
        proof, sender = check.proof, check.sender
        verdict, why = judge(proof, ev.outputs, ev.failure, ev.fuel_used)
        if verdict is Verdict.LIE_PROVEN:  # strong: this peer's own run contradicts the signed receipt
            if proof.accused != self.host.self_id:
                self.host.trust.record(proof.accused, Outcome.PROVEN_LIE, now)
                self.host.recheck(proof.accused, now)  # what it signed here is verified again
            self._end(proof, "lies_proven", "warning", "fraud_proof.lie_proven", sender, why)
            self._publish(proof)
        elif verdict is Verdict.FALSE_PROOF:
            self._penalise(sender, now)
            self._end(proof, "false_proofs", "warning", "fraud_proof.false", sender, why)
        else:
            self._end(proof, "inconclusive", "info", "fraud_proof.inconclusive", sender, why)

    def failed(self, check: ProofCheck, reason: str) -> None:
        """The proof's input or module could not be had, or the run could not be made: it says nothing."""
        self._end(check.proof, "inconclusive", "info", "fraud_proof.inconclusive", check.sender, reason)

    def originate(self, tree: bytes) -> None:
        """This peer proved the signer of the receipt tree ``tree`` a liar: publish the proof, once. Only a single
        execution receipt can be checked by one re-execution; a delegation tree (or bytes that do not decode) is
        not passed on."""
        try:
            decoded = ReceiptTree.decode(tree, self.ctx.config.coordinator.verify)
        except (VerificationError, RemoteProtocolError):
            return
        receipt = decoded.receipt
        if decoded.children or not isinstance(receipt, Receipt):
            return
        proof = FraudProof.of(receipt, output_digest=None, fuel_used=0, failure=None)
        if self.intake.known(proof.proof_id):
            return
        self.intake.seen(proof.proof_id, receipt.issued_at_s + self.intake.config.proof_age_s_max)
        self._publish(proof)

    # --- helpers --------------------------------------------------------------------------------------------

    def _cannot_run(self, proof: FraudProof) -> str:
        lim, mine = proof.binding.limits, self.ctx.config.worker.limits_max
        for name in ("fuel_max", "memory_bytes_max", "wall_time_s", "output_bytes_max"):
            if getattr(lim, name) > getattr(mine, name):
                return f"its {name} {getattr(lim, name)} is above this peer's maximum {getattr(mine, name)}"
        return ""

    def _from(self, check: ProofCheck) -> tuple[str, ...]:
        return tuple(p for p in (check.sender, check.proof.accused) if p != self.host.self_id)

    def _penalise(self, peer: str, now: float) -> None:
        """A proven lie (or a false accusation, or a forged proof) by ``peer``."""
        if peer != self.host.self_id:
            self.host.trust.record(peer, Outcome.INVALID, now)

    def _publish(self, proof: FraudProof) -> None:
        self.counters["published"] += 1
        self.host.actions.append(PublishProof(proof.encode()))

    def _end(self, proof: FraudProof, counter: str, level: str, event: str, sender: str, why: str) -> None:
        self.intake.done(proof.proof_id)
        self.counters[counter] += 1
        self._log(level, event, ("accused", proof.accused), ("sender", sender),
                  ("task", proof.binding.task_id), ("why", why))


def _task_ref(proof: FraudProof, now: float) -> TaskRef:
    """The task a proof's receipt binds, as the sandbox runs it."""
    b = proof.binding
    return TaskRef(
        job_id=b.job_id, task_id=b.task_id, parent_task_id=b.parent_task_id, module_cid=b.module_cid,
        input_cid=b.input_cid, input_bytes=0, chunk_count=b.chunk_count, limits=b.limits, issuer=b.issuer,
        depth=0, depth_max=0, path=(), partition_index=0, partition_count=1, deadline_s=now + b.limits.wall_time_s,
    )
