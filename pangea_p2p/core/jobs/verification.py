"""What a coordinator does with a result: verify it offline, then check it as the job's strategy says.

Every result's receipt tree is verified against the binding the coordinator issued (signatures, keys, content
ids, Merkle roots over the output chunks; this peer's own local run is one execution receipt, verified as
such), its reveal is checked against its commitment under commit-then-reveal, and the replay guard records it
(one accepted receipt per task, worker and limits). A verified successful result from another peer is a
*candidate*: it joins the task's vote, or gets its spot checks (``SpotCheck``: k chunks chosen with the
coordinator's rng, re-run here, compared with the worker's), or is accepted as it is (HASH). Only checked
outcomes feed the trust book.
"""

from __future__ import annotations

import hashlib
import struct

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs.effects import ProvenLie, RunSpotCheck
from pangea_p2p.core.jobs.model import TaskState
from pangea_p2p.core.jobs.placement import Placement
from pangea_p2p.core.jobs.strategies import Strategy
from pangea_p2p.core.jobs.tasks import Attempt, Candidate, Host, TaskEntry
from pangea_p2p.core.jobs.votes import Votes
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.checks import check_binding
from pangea_p2p.core.verify.execution import verify_receipt
from pangea_p2p.core.verify.format import malformed
from pangea_p2p.core.verify.receipts import Receipt, ReceiptTree, VerifiedTree
from pangea_p2p.core.verify.spotcheck import SpotCheck, SpotState
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.core.verify.voting import Claim
from pangea_p2p.errors import RejectReason, VerificationError


class Verification:
    """Verification and checks of one coordinator's results (see the module docstring)."""

    def __init__(self, host: Host, placement: Placement, votes: Votes, strategy: Strategy) -> None:
        self.c = host
        self.placement = placement
        self.votes = votes
        self.strategy = strategy

    def binding(self, entry: TaskEntry, limits: ReceiptLimits) -> TaskBinding:
        """What a result of ``entry`` under ``limits`` must be bound to."""
        cached = entry.binding_cache  # one per task and limits: every result of the task is checked against it
        if cached is None or cached.limits != limits:
            cached = entry.binding_cache = entry.ref.binding(limits, issuer=self.c.self_id)
        return cached

    def verify(
        self, entry: TaskEntry, attempt: Attempt, worker: str, tree_bytes: bytes, output: bytes, now: float,
        nonce: bytes, decoded: ReceiptTree | None, *, own: bool,
    ) -> tuple[ReceiptTree, VerifiedTree, Claim | None]:
        """Verify ``worker``'s answer to ``attempt``: (tree, what it proves, its claim: None for a no-show).
        ``decoded``: ``tree_bytes`` decoded already (None: they did not decode, and this raises why); ``own``: it
        is the tree this peer signed for its own local run (bound and recorded, its signature not re-checked).
        VerificationError / RemoteProtocolError say what is wrong."""
        c = self.c
        cfg = c.config.verify
        tree = decoded or ReceiptTree.decode(tree_bytes, cfg)
        binding = self.binding(entry, attempt.limits)
        out = output if tree.receipt.ok else None
        if own:  # this peer's own run, signed here over the sandbox's output: bound, not re-verified
            r = tree.receipt
            if not isinstance(r, Receipt) or tree.children or r.worker != worker:
                raise malformed("a local run answers with one execution receipt of this peer")
            check_binding(r.binding, binding)
            verified = VerifiedTree.of_receipt(r)
        elif attempt.local:  # this peer's own run: the issuer signed the leaf, which verify_tree calls a cycle
            if not isinstance(tree.receipt, Receipt) or tree.children:
                raise malformed("a local run answers with one execution receipt")
            verified = verify_receipt(tree.receipt, binding, now, cfg, worker=worker, output=out)
        else:
            verified = verify_tree(tree, binding, now, cfg, worker=worker, output=out)
        claim = Claim.from_tree(verified)
        if attempt.round is not None and claim is not None:  # a no-show (crash, timeout) has nothing to reveal
            if not attempt.committed:
                raise VerificationError(RejectReason.OUT_OF_PHASE, f"{worker} sent its result without committing first")
            attempt.round.add_reveal(worker, claim, nonce)
        root = verified.root
        # One accepted receipt per (task, worker) *and limits*: after an escalation the same worker may run the
        # task again under the raised limits (an old receipt cannot pass for it: its binding names the old ones).
        lim = root.binding.limits
        key = hashlib.sha256(root.replay_key + struct.pack(
            ">QQdQ", lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max)).digest()
        c.guard.check_and_record(key, root.issued_at_s, now, "receipt root")
        return tree, verified, claim

    def own_result(self, entry: TaskEntry, candidate: Candidate, now: float) -> None:
        """This peer's own run of ``entry`` (a fallback): it settles the task, and grades the replicas that
        answered before it."""
        c = self.c
        for other in entry.candidates.values():
            c.trust.record(other.worker, Outcome.VALID if other.claim == candidate.claim else Outcome.INVALID, now)
            if other.claim != candidate.claim:
                c.note(entry, f"{other.worker}'s answer differs from this peer's own run")
                self.pass_on_lie(other, candidate.claim)
        c.accept(entry, candidate, now, checked=bool(entry.candidates))

    def pass_on_lie(self, liar: Candidate, correct: Claim | None) -> None:
        """``liar``'s signed result differs from this peer's own re-execution (``correct``: what it gave, None
        when only some chunks were re-run): a fraud proof for the other peers (the behaviour publishes it). Only
        a single execution receipt can be checked by one re-execution; a delegation tree is not passed on."""
        receipt = liar.tree.receipt
        if isinstance(receipt, Receipt) and not liar.tree.children:
            self.c.effects.append(ProvenLie(receipt, correct))

    def candidate(self, entry: TaskEntry, candidate: Candidate, now: float) -> None:
        """A verified successful result from another peer: check it per the strategy."""
        c = self.c
        if entry.replicas == 1 and entry.tally is None and not entry.candidates:
            self.strategy.plan(entry, candidate.worker, now)
        if entry.tally is not None:
            entry.candidates[candidate.worker] = candidate
            self.votes.vote(entry, candidate.worker, candidate.claim, now, candidate.signers)
            return
        if entry.spot_checks > 0:
            entry.move(TaskState.VERIFYING)
            spot = candidate.spot = SpotCheck.start(None, entry.ref.chunk_count, entry.spot_checks, c.rng)
            spot.add_verified_output(unframe_chunks(candidate.output))  # checked against its receipts already
            entry.candidates[candidate.worker] = candidate
            indexes = list(spot.indexes)
            c.note(entry, f"result from {candidate.worker}; re-running chunk(s) {indexes} here to spot-check it")
            c.update(entry)
            for i in indexes:
                c.effects.append(RunSpotCheck(self.placement.ref(entry), i))
            return
        c.accept(entry, candidate, now, checked=False)

    def spot_result(self, entry: TaskEntry, chunk_index: int, output_chunk: bytes | None, now: float,
                    inconclusive: str = "") -> None:
        """This peer's re-execution of chunk ``chunk_index`` of ``entry`` (see Coordinator.on_spot_result)."""
        c = self.c
        if entry.state is not TaskState.VERIFYING:
            return
        for candidate in list(entry.candidates.values()):
            spot = candidate.spot
            if spot is None or not spot.waiting(chunk_index):
                continue
            if inconclusive:
                c.note(entry, f"spot check of chunk {chunk_index} inconclusive here ({inconclusive}): "
                              f"{candidate.worker}'s result accepted unchecked")
                c.accept(entry, candidate, now, checked=False)
                continue
            state = spot.add_reexecution(chunk_index, output_chunk)
            if state is SpotState.FAILED:
                del entry.candidates[candidate.worker]
                c.trust.record(candidate.worker, Outcome.INVALID, now)
                self.pass_on_lie(candidate, None)
                c.attempt_failed(
                    entry, candidate.worker,
                    f"spot check of chunk {chunk_index} failed: {candidate.worker}'s output differs from this "
                    "peer's re-execution", now, penalise=False,
                )
            elif state is SpotState.PASSED:
                c.note(entry, f"spot checks passed ({entry.spot_checks} chunk(s))")
                c.trust.record(candidate.worker, Outcome.VALID, now)
                c.accept(entry, candidate, now, checked=True)
