"""Audits: this peer re-executes a sample of the results it accepted, and corrects what a liar got accepted.

Theory of operation
-------------------
A result of another peer that a coordinator accepted (its task DONE) is audited with the smallest of its
backers' ``TrustBook.audit_probability`` (the worker, or every replica that voted for it: the most trusted one
vouches for the others): high for workers this peer has not confirmed yet, falling as its own re-executions
confirm their results, never zero. Drawn audits spend the peer's ``AuditBudget`` (``[trust] audit_budget``
re-executions per accepted result, over every job): when no one lies, audits add at most that much work to
what the policy costs. A drawn audit is owed until the budget pays it, in turns over the workers that vouch
for the results (``AuditBudget``); before a job ends, the budget pays what it can of that job's owed audits
(``pay_owed``); the rest run later and correct the finished job if they must. Audited for sure,
whatever the budget: a result with a proven liar behind it; a vote the replicas disagreed on (someone lied:
under no lies it costs nothing, under attack it settles every dispute with proof); a result whose fuel a spot
check found suspicious (``force``); and again (``recheck``) every result that one of the peers that signed it
(delegation trees included) or voted for it is proven to have lied on, on any coordinator of this peer,
running or finished (the behaviour calls ``recheck`` on each). The draw is made from the audits' own rng when
the task is accepted — after every result was committed and revealed, so no worker can know whether it is
audited.

An audit is a whole run of the task here (``RunAudit``, answered by ``result``), compared with the accepted
result on output and fuel (both deterministic for a deterministic guest):

    NONE --drawn, forced or rechecked--> PENDING --same output and fuel----> PASSED     (every backer CONFIRMED,
                                                                                     every dissenter a liar)
                                                --different--------------> CORRECTED  (see below)
                                                --could not run it here--> INCONCLUSIVE (the result stands)

CORRECTED: every backer signed a result this peer's own deterministic run contradicts — each is a proven liar
(``Host.proven_lie``, the one path every proven lie takes) —; the task's result becomes this peer's own signed
run (a ``TaskUpdate`` with ``corrected``, so the journal and the views show it), the correction is recorded
(``TaskEntry.corrections``), every worker outvoted with this peer's answer is VINDICATED and every other
dissenter is a proven liar too. A deterministic failure here where the backers succeeded is INCONCLUSIVE: this
peer's own sandbox caps may be lower.

A vote that can no longer reach a quorum (the replicas disagree and no more may be added) is settled the same way
before the task is accepted (``settle``): this peer runs the task itself while it waits in VERIFYING, and its own
run decides (``Verification.own_result``: the candidates that agree with it are confirmed, the others proven
liars, the task accepted); only when it cannot run it here does the task fail.

Invariants: a job coordinator is DONE only when no audit of it is out (``pending``) and the budget cannot pay
for one more of its owed audits (an owed audit beyond the budget does not hold it: it corrects the finished job
if it must); a task has at most one audit out; only this peer's own run ever
replaces an accepted result.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from typing import TYPE_CHECKING

from pangea_p2p.core.cid import cid_from_digest
from pangea_p2p.core.jobs.effects import RunAudit
from pangea_p2p.core.jobs.model import TaskState
from pangea_p2p.core.jobs.tasks import AuditState, Candidate, Host, TaskEntry
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.voting import Claim

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.placement import Placement
    from pangea_p2p.core.jobs.verification import Verification
    from pangea_p2p.core.verify.receipts import ReceiptTree


class AuditBudget:
    """What drawn audits may spend, shared by every coordinator of a peer: each accepted result of another peer
    adds ``per_task`` re-executions to spend, a drawn audit spends one. So when no one lies, drawn audits stay
    within ``per_task`` x the results accepted, whatever the jobs. Each liar proven adds ``per_liar``: with
    liars about, audits draw more. A drawn audit the budget cannot pay for is owed (``owe``, at most
    ``OWED_MAX``) and runs when the budget allows (``take_owed``), also after its job ended (a correction
    is then recorded). Forced audits (a dispute, a proven liar behind a result, suspicious fuel, a recheck) do
    not count: they happen only when someone lied.

    Owed audits are paid to the worker (that vouches for them) with the fewest audits paid so far, each worker's
    oldest first: a worker that always lies is caught by the first audit of any of its results, so the budget
    covers every worker once before it audits one twice, whenever its results came in (a flood of one worker's
    results, or a liar that answers last, does not starve the audits of the others)."""

    OWED_MAX = 100_000
    PAID_MAX = 100_000  # workers whose count of paid audits is kept

    __slots__ = ("n_owed", "owed", "paid", "per_liar", "per_task", "tokens")

    def __init__(self, per_task: float, per_liar: float = 0.0) -> None:
        self.per_task = per_task
        self.per_liar = per_liar
        self.tokens = 0.0
        # per vouching worker, its owed audits oldest first (the dict's order breaks ties between workers)
        self.owed: dict[str, deque[tuple[Audits, str]]] = {}
        self.n_owed = 0
        self.paid: dict[str, int] = {}  # worker -> owed audits of its results paid so far

    def accepted(self) -> None:
        self.tokens += self.per_task

    def liar_found(self) -> None:
        """A liar was proven: there are liars about, audit more (``per_liar`` more re-executions to spend)."""
        self.tokens += self.per_liar

    def spend(self) -> bool:
        """Take one audit out of the budget (False: it is spent)."""
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def owe(self, worker: str, audits: Audits, task_id: str) -> None:
        """The audit of ``task_id`` (of ``audits``, vouched for by ``worker``) waits for the budget."""
        if self.n_owed >= self.OWED_MAX:  # the oldest owed audit of the first worker is forgotten
            first = next(iter(self.owed))
            self.owed[first].popleft()
            self.n_owed -= 1
            if not self.owed[first]:
                del self.owed[first]
        self.owed.setdefault(worker, deque()).append((audits, task_id))
        self.n_owed += 1

    def take_owed(self) -> list[tuple[Audits, str]]:
        """The owed audits the budget pays for now: the least audited worker's oldest first, one at a time."""
        return self._take(None)

    def take_owed_of(self, audits: Audits) -> list[str]:
        """The owed audits of ``audits`` (one coordinator) the budget pays for now, in the same order."""
        return [task_id for _, task_id in self._take(audits)]

    def _take(self, of: Audits | None) -> list[tuple[Audits, str]]:
        out = []
        while self.tokens >= 1.0:
            workers = [w for w, q in self.owed.items() if of is None or any(owner is of for owner, _ in q)]
            if not workers or not self.spend():
                break
            worker = min(workers, key=lambda w: self.paid.get(w, 0))  # the first of them on a tie
            q = self.owed[worker]
            if of is None:
                item = q.popleft()
            else:
                item = next(x for x in q if x[0] is of)
                q.remove(item)
            self.n_owed -= 1
            if not q:
                del self.owed[worker]
            self.paid[worker] = self.paid.pop(worker, 0) + 1
            if len(self.paid) > self.PAID_MAX:
                del self.paid[next(iter(self.paid))]
            out.append(item)
        return out


class Audits:
    """The audits of one coordinator's tasks (see the module docstring). ``enabled``: the coordinator of a job
    whose policy checks results (not HASH, not the parts of a split task)."""

    def __init__(self, host: Host, placement: Placement, verification: Verification, *, enabled: bool,
                 rng: random.Random, budget: AuditBudget) -> None:
        self.c = host
        self.budget = budget
        self.verification = verification
        self.rng = rng  # its own: the draws of placement and spot checks do not tell which results are audited
        self.placement = placement
        self.enabled = enabled
        self.pending: set[str] = set()  # task ids with an audit out

    def accepted(self, entry: TaskEntry, force: str = "") -> None:
        """``entry`` was just accepted: draw whether it is audited (``force``: it is, and why)."""
        c = self.c
        if not self.enabled or c.self_id in entry.backers:
            return
        # the most trusted backer vouches (its record was checked here)
        p, vouch = min(((c.trust.audit_probability(w), w) for w in entry.backers), default=(1.0, entry.worker))
        draw = self.rng.random()  # drawn for every accepted task: the sequence does not tell which results are audited
        self.budget.accepted()
        liars = sorted(w for w in entry.backers if c.trust.lies(w))
        if force:
            self.start(entry, force)
        elif liars:
            self.start(entry, f"a proven liar is behind it ({', '.join(liars)}): audited")
        elif draw < p:  # it waits its turn among the owed audits (the behaviour pays them as the budget allows)
            self.budget.owe(vouch, self, entry.ref.task_id)
            c.note(entry, f"audit drawn (p={p:.2f}), owed: it runs in its turn when this peer's audit budget allows")

    def pay_owed(self) -> None:
        """Before the job ends: the owed audits of its results that the budget can pay for now run first."""
        for task_id in self.budget.take_owed_of(self):
            self.owed(task_id)

    def owed(self, task_id: str) -> None:
        """The budget now pays for the audit of ``task_id`` drawn earlier (``AuditBudget.take_owed``)."""
        entry = self.c.tasks.get(task_id)
        if entry is not None and entry.state is TaskState.DONE and entry.audit is AuditState.NONE:
            self.start(entry, "audited here: the audit owed to it is in this peer's budget now")

    def recheck(self, liar: str) -> int:
        """``liar`` was proven to have lied: audit every accepted task it signed or voted for that this peer has
        not re-executed yet. How many audits went out."""
        if not self.enabled:
            return 0
        n = 0
        for entry in self.c.tasks.values():
            if (entry.state is TaskState.DONE and entry.audit is AuditState.NONE
                    and (liar in entry.backers or liar in entry.signers)):
                self.start(entry, f"{liar} was proven to have lied: re-verifying a result it signed or voted for")
                n += 1
        return n

    def settle(self, entry: TaskEntry, why: str) -> bool:
        """``entry``'s vote failed (``why``): settle it with this peer's own run instead (False: it cannot here,
        the task fails)."""
        if not self.enabled or not entry.candidates or entry.state.final:
            return False
        if entry.audit is not AuditState.PENDING:
            self.placement.call_off(entry)  # no more replicas: this peer's run decides
            entry.queued_since_s = None
            entry.move(TaskState.VERIFYING)
            self.start(entry, f"{why}: this peer runs it itself to settle it")
            self.c.update(entry)
        return True

    def start(self, entry: TaskEntry, why: str) -> None:
        if entry.audit is AuditState.PENDING:
            return
        entry.audit = AuditState.PENDING
        self.pending.add(entry.ref.task_id)
        self.c.note(entry, why)
        self.c.effects.append(RunAudit(self.placement.ref(entry)))

    def result(self, entry: TaskEntry, tree: ReceiptTree | None, output: bytes, now: float,
               inconclusive: str = "") -> None:
        """This peer's own run of ``entry`` (``tree``: its signed receipt over ``output``), or why it could not
        say anything (``inconclusive``)."""
        c = self.c
        if entry.audit is not AuditState.PENDING:
            return
        self.pending.discard(entry.ref.task_id)
        if entry.state is not TaskState.DONE:  # a vote this peer settles (see settle)
            self._settled(entry, tree, output, now, inconclusive)
            return
        if tree is None or inconclusive:
            entry.audit = AuditState.INCONCLUSIVE
            c.note(entry, f"audit inconclusive here ({inconclusive or 'no result'}): the accepted result stands")
            return
        fuel = tree.receipt.fuel_used
        digest = hashlib.sha256(output).digest()
        cid = cid_from_digest(digest)
        mine = Claim(digest, fuel)
        if cid == entry.output_cid and fuel == entry.fuel_used:
            entry.audit = AuditState.PASSED
            for w in entry.backers:
                c.trust.record(w, Outcome.CONFIRMED, now)
            c.note(entry, "audit passed: this peer's re-execution gives the same output and fuel")
            self._judge_dissent(entry, mine, now)
            return
        entry.audit = AuditState.CORRECTED
        why = (f"audit: this peer's re-execution gives {cid} with {fuel} fuel; the accepted result, signed by "
               f"{', '.join(sorted(entry.backers)) or entry.worker}, was {entry.output_cid} with {entry.fuel_used}")
        backers = entry.backers or {entry.worker: None}  # a task restored from the journal: its worker
        for w, backer_tree in backers.items():
            c.proven_lie(entry, w, backer_tree if backer_tree is not None else entry.tree, why, now)
        self._judge_dissent(entry, mine, now)
        entry.corrections.append(why)
        entry.output_cid, entry.tree, entry.fuel_used, entry.worker = cid, tree.encode(), fuel, c.self_id
        entry.backers, entry.signers, entry.dissent = {c.self_id: tree}, frozenset((c.self_id,)), {}
        c.note(entry, f"corrected: the result is now this peer's own run ({cid})")
        c.update(entry, reason=why, output_cid=cid, tree=entry.tree, fuel_used=fuel, worker=c.self_id,
                 corrected=True)

    def _settled(self, entry: TaskEntry, tree: ReceiptTree | None, output: bytes, now: float,
                 inconclusive: str) -> None:
        c = self.c
        if entry.state.final:
            return
        entry.audit = AuditState.NONE
        if tree is None or inconclusive:
            c.fail(entry, f"replicas disagree and this peer could not settle it ({inconclusive or 'no result'})",
                   now)
            return
        entry.audit = AuditState.PASSED  # this peer's own run is the result: nothing left to audit
        digest = hashlib.sha256(output).digest()
        mine = Candidate(c.self_id, tree, output, Claim(digest, tree.receipt.fuel_used), frozenset((c.self_id,)),
                         tree_bytes=tree.encode())
        self.verification.own_result(entry, mine, now)

    def _judge_dissent(self, entry: TaskEntry, mine: Claim, now: float) -> None:
        """The answers that lost ``entry``'s vote, against this peer's own (``mine``): the right ones vindicated,
        the others proven lies."""
        c = self.c
        for w, (claim, tree) in entry.dissent.items():
            if claim == mine:
                c.trust.record(w, Outcome.VINDICATED, now)
                c.note(entry, f"{w}, outvoted, had the right answer: vindicated")
            else:
                c.proven_lie(entry, w, tree, f"{w} signed {claim}, this peer's own run gives {mine}", now)
