"""Invariants checked while a simulation runs (Jepsen-style checkers over the run's history).

Safety of what users get, checked at the end of the run (``check_final``) over every job that ended, done or
failed (a failed job's done tasks are retrievable as a partial result):
- ``wrong_final``: every task output in a job's final result — its task's output as the submitter would return
  it now, after any re-verification or correction that happened after the job ended — is the one the modelled
  guest computes from the task's input.
An accepted wrong output is not itself a violation (an audit or a backtrack may still correct it before the job
is final): it is counted (``wrong_accepted``), and so are the wrong outputs a job held at the moment it ended
(``wrong_at_job_end``).

Safety of each acceptance, checked the moment a coordinator accepts a task (a ``TaskUpdate`` to DONE) and
asserted after every event:
- ``no_quorum``: a replicated task was accepted by a tally that reached its quorum and a strict majority of the
  votes cast, on the accepted output; a spot-checked one passed its spot checks; HASH needs one valid receipt;
  the submitter's own local run (a fallback it trusts) is exempt and counted;
- ``bad_signature``: every receipt of the accepted tree carries a valid ed25519 signature by the key inside its
  signer's peer id — checked here with PyNaCl directly, not through the verifier under test;
- ``double_accept``: a task is accepted at most once (an audit's correction, the submitter's own re-execution
  replacing a result it proved wrong, is checked like an acceptance but is not a second one).
Liveness, after the healing phase (faults off, partitions healed, crashed peers restarted): no job is still
running — every job that can complete has completed (or failed for a reason the table shows).

In ``strict`` mode the first violation raises ``SafetyViolation`` (the run stops and prints the command that
replays it); in ``count`` mode violations are counted (an experiment that measures how often an attack wins).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nacl.exceptions
import nacl.signing

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of, parse_cid
from pangea_p2p.core.identity import public_key_from_peer_id
from pangea_p2p.core.jobs.model import JobState, TaskState, VerificationMode
from pangea_p2p.core.verify.format import DOMAIN_TAG
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.voting import TallyState
from pangea_p2p.errors import PangeaError
from pangea_p2p.sim.host import World
from pangea_p2p.sim.sandbox import VERIFY_CONFIG, honest_chunk

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.behaviour import JobRun
    from pangea_p2p.core.jobs.events import TaskUpdated
    from pangea_p2p.core.jobs.tasks import TaskView


class SafetyViolation(Exception):
    """An invariant broke; the message names it, the task and the virtual time."""


@dataclass(frozen=True)
class Violation:
    time_s: float
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] at t={self.time_s:.3f}s: {self.detail}"


class Checker:
    def __init__(self, sim: World, strict: bool) -> None:
        self.sim = sim
        self.strict = strict
        self.violations: list[Violation] = []
        self.counts: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.local_accepts = 0
        self._expected: dict[tuple[str, str], str] = {}

    def _violate(self, kind: str, detail: str, *, trace: bool = True) -> None:
        v = Violation(self.sim.loop.now - self.sim.t0, kind, detail)
        self.violations.append(v)
        self.counts[kind] += 1
        if trace:  # checks after the run read its history and do not add to it
            self.sim.loop.trace(f"violation {kind}")
        if self.strict:
            raise SafetyViolation(str(v))

    def expected_cid(self, module_cid: str, input_cid: str) -> str:
        key = (module_cid, input_cid)
        cid = self._expected.get(key)
        if cid is None:
            chunks = unframe_chunks(self.sim.content[input_cid])
            cid = cid_of(frame_chunks([honest_chunk(module_cid, c)[0] for c in chunks]))
            self._expected[key] = cid
        return cid

    def on_accept(self, peer: int, peer_id: str, act: TaskUpdated) -> None:
        """A coordinator accepted ``act.update.task_id``: check all three safety properties now."""
        eff, task = act.update, act.task
        ref = task.ref
        key = f"{peer}:{eff.task_id}"  # parts of split replicas share ids across their splitters
        if key in self.accepted and not eff.corrected:  # a correction (an audit, core/jobs/audits.py) may follow
            self._violate("double_accept", f"task {eff.task_id} accepted twice by peer {peer}")
        self.accepted.add(key)
        if eff.output_cid != self.expected_cid(ref.module_cid, ref.input_cid):
            self.counts["wrong_accepted"] += 1  # counted, not a violation yet: only a wrong final output is
            self.sim.loop.trace("violation wrong_result")  # (the line the trace digest has always folded in)
        if eff.worker == peer_id:
            self.local_accepts += 1
        else:
            self._check_quorum(task)
        self._check_signatures(task)

    def _check_quorum(self, entry: TaskView) -> None:
        mode = entry.policy.mode
        tally = entry.vote
        if tally is not None:
            votes = tally.votes
            accepted = tally.accepted
            agree = sum(1 for c in votes.values() if c == accepted)
            if (tally.state is not TallyState.ACCEPTED or accepted is None or agree < tally.quorum
                    or 2 * agree <= len(votes) or accepted.output_digest != parse_cid(entry.output_cid)):
                self._violate("no_quorum", f"task {entry.task_id} accepted with {agree} of {len(votes)} votes "
                                           f"(quorum {tally.quorum}, tally {tally.state.value})")
        elif mode in (VerificationMode.REPLICAS,) or (mode is VerificationMode.SPOT and entry.policy.spot_checks > 0):
            if not entry.checked:
                self._violate("no_quorum", f"task {entry.task_id} accepted unchecked under {entry.policy}")
        elif mode is VerificationMode.ADAPTIVE and entry.spot_checks > 0 and not entry.checked:
            self._violate("no_quorum", f"task {entry.task_id} accepted without its {entry.spot_checks} spot checks")
        if entry.state is not TaskState.DONE:
            self._violate("no_quorum", f"task {entry.task_id} reported DONE but is {entry.state.value}")

    def _check_signatures(self, entry: TaskView) -> None:
        try:
            tree = ReceiptTree.decode(entry.tree, VERIFY_CONFIG)
        except PangeaError as exc:
            self._violate("bad_signature", f"task {entry.task_id}: accepted tree does not decode: {exc}")
            return
        stack = [tree]
        while stack:
            node = stack.pop()
            r = node.receipt
            try:
                key = public_key_from_peer_id(r.signer)
                if key != r.public_key:
                    raise ValueError("key is not the signer's")
                nacl.signing.VerifyKey(key).verify(DOMAIN_TAG + r.body, r.signature)
            except (nacl.exceptions.BadSignatureError, ValueError, PangeaError) as exc:
                self._violate("bad_signature", f"task {entry.task_id}: receipt by {r.signer[-8:]} accepted with a "
                                               f"bad signature ({exc})")
            stack.extend(node.children)

    def wrong_outputs(self, run: JobRun) -> list[TaskView]:
        """The done tasks of ``run`` whose output (as its submitter holds it now) is not the guest's."""
        return [t for t in run.tasks() if t.state is TaskState.DONE
                and t.output_cid != self.expected_cid(t.ref.module_cid, t.ref.input_cid)]

    def on_job_end(self, run: JobRun) -> None:
        """``run`` just ended: count the wrong outputs it ends with (a later correction may still fix them)."""
        self.counts["wrong_at_job_end"] += len(self.wrong_outputs(run))

    def final_wrong(self) -> list[tuple[JobRun, TaskView]]:
        """Every wrong output in the final result of a job that ended (done or failed), as its submitter holds
        it now."""
        return [(run, task) for run in self.sim.all_jobs() if run.state in (JobState.DONE, JobState.FAILED)
                for task in self.wrong_outputs(run)]

    def check_final(self) -> None:
        """At the end of the run: no job that ended holds a wrong output (``wrong_final``; strict mode raises at
        the first)."""
        for run, task in self.final_wrong():
            expected = self.expected_cid(task.ref.module_cid, task.ref.input_cid)
            self._violate("wrong_final", f"job {run.spec.job_id} ({run.state.value}) holds a wrong output for task "
                                         f"{task.task_id} in its final result: {task.output_cid[-12:]} from "
                                         f"{task.worker[-8:]} ({self.sim.role_of(task.worker)}); the guest computes "
                                         f"{expected[-12:]}", trace=False)

    def check_liveness(self) -> None:
        for run in self.sim.all_jobs():
            if run.state.value == "running" and self.sim.is_up(self.sim.index[run.issuer]):
                progress = run.progress()
                why = "; ".join(f"{t}: {r[-1]}" for t, r in list(run.explain().items())[:2] if r)
                self._violate("liveness", f"job {run.spec.job_id} still running after the healing phase "
                                          f"({progress}); {why}")
