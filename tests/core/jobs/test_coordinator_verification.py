"""Coordinator: verification policies (hash, spot, replicas with and without commit-reveal, adaptive) and
delegation trees, with real signed receipts; how the trust book is fed."""

from __future__ import annotations

import hashlib

import pytest

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.config import ATTEMPT_GRACE_S
from pangea_p2p.core.jobs.effects import CancelAttempt, Dispatch, RequestReveal, RunSpotCheck, TaskUpdate
from pangea_p2p.core.jobs.model import JobState, TaskState, VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.jobs.tasks import AuditState
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import DelegationReceipt, Receipt, ReceiptTree
from tests.core.jobs.coord_driver import (
    FUEL_PER_CHUNK,
    SUBMITTER,
    T0,
    Driver,
    FakeWorker,
    Msg,
    chunks_for,
    delegated_result,
    evil,
    honest,
    ident,
    pid,
    signed_result,
)


def honest_cid(chunks: list[bytes]) -> str:
    return cid_of(frame_chunks([honest(c) for c in chunks]))


def reasons(d: Driver, task_id: str = "job/t0") -> str:
    return " | ".join(d.task(task_id).reasons)


# --- hash ---------------------------------------------------------------------------------------------


def test_hash_accepts_a_verified_result_unchecked_and_feeds_no_trust() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1, per_task=4))
    d.start()
    assert d.job.state is JobState.DONE
    entry = d.task("job/t0")
    assert entry.output_cid == honest_cid(d.inputs[0])
    assert entry.checked is False
    assert d.effects(RunSpotCheck) == []
    assert d.trust.get(pid("a")) is None  # unchecked work earns no trust


def test_a_receipt_signed_by_another_peer_is_rejected_and_the_task_retried() -> None:
    d = Driver([FakeWorker("a", behaviour="impostor", speed=2e9), FakeWorker("b")], chunks_for(1))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.dispatched_to() == [pid("a"), pid("b")]
    assert d.updates("job/t0", TaskState.DONE)[0].worker == pid("b")
    assert "failed verification" in reasons(d)
    assert "the task was given to" in reasons(d)
    assert d.trust.get(pid("a")).invalid == 1  # type: ignore[union-attr]
    assert d.trust.score(pid("a"), d.now) < -19.0
    assert d.trust.score(pid("a"), d.now) < d.trust.score(pid("b"), d.now)


def test_output_bytes_that_do_not_match_the_receipt_are_rejected_and_the_task_retried() -> None:
    d = Driver([FakeWorker("a", behaviour="tamper", speed=2e9), FakeWorker("b")], chunks_for(1, per_task=3))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.updates("job/t0", TaskState.DONE)[0].worker == pid("b")
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert "do not hash to" in reasons(d)
    rec = d.trust.get(pid("a"))
    assert rec is not None
    assert rec.invalid == 1


def test_a_result_for_another_task_is_rejected() -> None:
    d = Driver([FakeWorker("a", speed=2e9), FakeWorker("b")], chunks_for(2), auto=False)
    d.start()
    other = next(x.task for x in d.dispatches() if x.task.task_id == "job/t1")
    tree, output = signed_result(ident("a"), other, d.inputs[1], d.now, d.wrng)
    d.send(Msg("result", "job/t0", pid("a"), tree, output))
    assert "failed verification" in reasons(d)
    # a proven fault of the worker's: the task goes elsewhere at once, and it cost the task no retry
    assert d.task("job/t0").state is TaskState.RUNNING
    assert d.dispatched_to("job/t0")[-1] == pid("b")
    assert d.task("job/t0").failures == 0


def test_liars_cannot_use_up_an_honest_tasks_retries() -> None:
    liars = [FakeWorker(f"forger{i}", behaviour="impostor", speed=3e9) for i in range(6)]
    d = Driver([*liars, FakeWorker("honest")], chunks_for(1), retries_max=1)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE  # six forged answers did not fail it
    assert d.task("job/t0").worker == pid("honest")
    assert all(d.trust.get(w.peer_id).invalid == 1 for w in liars if d.trust.get(w.peer_id))  # type: ignore[union-attr]


def test_a_result_from_a_worker_the_task_was_not_given_to_is_ignored() -> None:
    d = Driver([FakeWorker("a"), FakeWorker("outsider", online=False)], chunks_for(1), auto=False)
    d.start()
    ref = d.dispatches()[0].task
    tree, output = signed_result(ident("outsider"), ref, d.inputs[0], d.now, d.wrng)
    assert d.send(Msg("result", "job/t0", pid("outsider"), tree, output)) == []
    assert d.send(Msg("commitment", "job/t0", pid("outsider"), digest=bytes(32))) == []
    assert d.task("job/t0").state is TaskState.RUNNING
    assert d.trust.get(pid("outsider")) is None
    d.run()
    assert d.job.state is JobState.DONE
    assert d.updates("job/t0", TaskState.DONE)[0].worker == pid("a")


def test_a_second_result_from_the_same_worker_is_ignored() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1), auto=False)
    d.start()
    result = d.take("result", "a")
    d.send(result)
    assert d.job.state is JobState.DONE
    assert d.send(result) == []
    assert len(d.updates("job/t0", TaskState.DONE)) == 1


# --- spot checks ------------------------------------------------------------------------------------------


def test_spot_checks_rerun_k_distinct_chunks_and_accept_a_matching_result() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1, per_task=6), policy="spot:3", auto=False)
    d.start()
    d.run()
    spots = d.effects(RunSpotCheck)
    assert len(spots) == 3
    indexes = [s.chunk_index for s in spots]  # type: ignore[attr-defined]
    assert len(set(indexes)) == 3
    assert all(0 <= i < 6 for i in indexes)
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").checked is True
    rec = d.trust.get(pid("a"))
    assert rec is not None
    assert (rec.valid, rec.invalid) == (1, 0)
    assert "spot checks passed" in reasons(d)


def test_the_task_stays_verifying_until_every_spot_check_is_back() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1, per_task=4), policy="spot:2", auto=False)
    d.start()
    d.deliver(0)  # accepted
    d.deliver(0)  # result
    assert d.task("job/t0").state is TaskState.VERIFYING
    assert d.job.progress()["verifying"] == 1
    d.deliver(0)  # the first spot check
    assert d.task("job/t0").state is TaskState.VERIFYING
    d.deliver(0)
    assert d.task("job/t0").state is TaskState.DONE
    d.run()  # its audit, if one was drawn (a new worker's results are audited most)
    assert d.job.state is JobState.DONE


def test_a_failed_spot_check_rejects_the_result_lowers_trust_and_retries_elsewhere() -> None:
    d = Driver([FakeWorker("liar", behaviour="byzantine", speed=2e9), FakeWorker("b")], chunks_for(1, per_task=5),
               policy="spot:1")
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.dispatched_to() == [pid("liar"), pid("b")]
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert "spot check of chunk" in reasons(d)
    assert d.trust.score(pid("liar"), d.now) < 0 < d.trust.score(pid("b"), d.now)
    assert len(d.effects(RunSpotCheck)) == 2


def test_a_mismatching_spot_result_rejects_the_candidate_and_the_task_is_retried() -> None:
    answers = iter([b"not what a computed", None])  # then the default: an honest re-run

    def spot(ref: object, i: int, chunk: bytes) -> bytes | None:
        return next(answers, honest(chunk))

    d = Driver([FakeWorker("a", speed=3e9), FakeWorker("b", speed=2e9), FakeWorker("c")], chunks_for(1, per_task=2),
               policy="spot:1", spot_answer=spot)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.dispatched_to() == [pid("a"), pid("b"), pid("c")]
    assert d.updates("job/t0", TaskState.DONE)[0].worker == pid("c")
    assert d.trust.get(pid("a")).lies == 1  # a spot check that fails is a proven lie  # type: ignore[union-attr]
    assert d.trust.get(pid("b")).lies == 1  # type: ignore[union-attr]
    assert d.trust.get(pid("c")).valid >= 1  # (its result may be audited too: liars about)  # type: ignore[union-attr]


def test_a_spot_check_that_fails_here_too_rejects_the_candidate() -> None:
    d = Driver([FakeWorker("a", speed=2e9), FakeWorker("b")], chunks_for(1, per_task=2), policy="spot:1",
               spot_answer=lambda ref, i, chunk: None)
    d.start()
    d.run_to_end(ticks_max=200)  # queued at the end: looked at every second till the timeout
    assert d.trust.get(pid("a")).lies == 1  # type: ignore[union-attr]
    assert "spot check of chunk" in reasons(d)


def test_a_spot_check_that_says_nothing_here_accepts_the_result_unchecked_and_blames_nobody() -> None:
    # This peer timed out or was full while re-running the chunk: that is no evidence against the worker.
    d = Driver([FakeWorker("a")], chunks_for(1, per_task=2), policy="spot:1", auto=False)
    d.start()
    d.deliver(0)  # accepted
    d.deliver(0)  # result: a spot check goes out
    (spot,) = d.effects(RunSpotCheck)
    d.inbox.clear()  # this peer's re-run never gives an answer...
    d.spot_inconclusive("job/t0", spot.chunk_index, "TIMEOUT: slower here")
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").checked is False
    rec = d.trust.get(pid("a"))
    assert rec is None or (rec.valid, rec.invalid) == (0, 0)
    assert "inconclusive here (TIMEOUT: slower here)" in reasons(d)
    # ... and the job says so: how many, and why
    why = "its spot check could not run here (TIMEOUT: slower here)"
    assert d.task("job/t0").unchecked_why == why
    assert d.job.unchecked() == {"job/t0": why}
    assert d.job.reason == f"1 of 1 task(s) accepted unchecked although the policy is spot:1: {why}"


def test_a_checked_job_whose_tasks_ran_here_for_want_of_workers_is_checked_and_says_nothing_is_missing() -> None:
    local = WorkerView(pid(SUBMITTER), 1e9, 2, 2, 10**12, 1 << 30, 300.0, 0.0, 0.0)
    d = Driver([], chunks_for(2), policy="replicas:2", local=local)
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert all(t.checked for t in d.job.tasks())  # this peer ran them: the result it trusts most
    assert (d.job.unchecked(), d.job.reason) == ({}, "")


# --- replicas -------------------------------------------------------------------------------------------------


def test_replicas_the_honest_majority_wins_and_the_byzantine_replica_is_recorded_invalid() -> None:
    workers = [FakeWorker("liar", behaviour="byzantine", speed=3e9), FakeWorker("b"), FakeWorker("c")]
    d = Driver(workers, chunks_for(1, per_task=3), policy="replicas:3")
    d.start()
    assert sorted(d.dispatched_to()) == sorted(w.peer_id for w in workers)
    assert d.job.state is JobState.DONE
    entry = d.task("job/t0")
    assert entry.output_cid == honest_cid(d.inputs[0])
    assert entry.checked is True
    assert entry.worker in (pid("b"), pid("c"))
    liar = d.trust.get(pid("liar"))
    assert liar is not None
    assert liar.outvoted == 1  # weak evidence: colluders could outvote an honest worker
    assert d.trust.score(pid("liar"), d.now) < 0 < d.trust.score(pid("b"), d.now)
    assert d.trust.score(pid("c"), d.now) > 0
    assert "was outvoted" in reasons(d)


def test_without_commit_reveal_replicas_still_out_when_the_quorum_is_reached_are_cancelled() -> None:
    workers = [FakeWorker("a", speed=3e9), FakeWorker("b", speed=2e9), FakeWorker("c")]
    policy = VerificationPolicy(VerificationMode.REPLICAS, replicas=3, commit_reveal=False)
    d = Driver(workers, chunks_for(1), policy=policy, auto=False)
    d.start()
    third = d.dispatched_to()[2]  # replicas are drawn at random: the third one drawn answers last here
    first_two = [d.take("result", name) for name in "abc" if pid(name) != third]
    for msg in first_two:
        d.send(msg)
    assert d.job.state is JobState.DONE  # two of three agree: the third one's work is not needed
    assert CancelAttempt("job/t0", third) in d.log
    d.run()  # its answer, if it comes, is not counted
    assert d.trust.get(third) is None


def test_a_committed_replica_that_reveals_after_the_quorum_is_graded_before_the_task_is_done() -> None:
    # Found by the e2e Byzantine test: a liar whose reveals came after the honest quorum's was never outvoted
    # and never lost trust, as the task was accepted and its reveal ignored. Having committed, it did the work:
    # its reveal is a round trip away, and it is graded.
    workers = [FakeWorker("liar", behaviour="byzantine"), FakeWorker("b"), FakeWorker("c")]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    d.commit_all(("b", "c", "liar"))
    for name in ("b", "c"):
        d.send(d.take("result", name))
    assert d.task("job/t0").state is TaskState.VERIFYING  # a quorum agrees; the liar's reveal is due
    assert d.job.state is JobState.RUNNING
    d.send(d.take("result", "liar"))
    d.check_invariants()
    assert d.task("job/t0").state is TaskState.DONE
    assert d.job.state is JobState.RUNNING  # the replicas disagreed: this peer settles it with its own run first
    d.run()
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert d.effects(CancelAttempt) == []
    liar, b = d.trust.get(pid("liar")), d.trust.get(pid("b"))
    assert liar is not None
    assert (liar.valid, liar.outvoted, liar.lies) == (0, 1, 1)
    assert b is not None
    assert (b.valid, b.invalid, b.proven) == (2, 0, 1)  # won the vote, then confirmed by the audit
    assert f"{pid('liar')} was outvoted" in reasons(d)


def test_a_committed_replica_that_withholds_its_reveal_delays_the_task_by_the_grace_only() -> None:
    workers = [FakeWorker(n) for n in "abc"]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    d.commit_all(("a", "b", "c"))
    d.take("result", "c")  # c never reveals
    d.run()
    assert d.job.state is JobState.RUNNING
    asked = d.now
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.now <= asked + ATTEMPT_GRACE_S
    withheld = d.trust.get(pid("c"))
    assert withheld is not None
    assert (withheld.valid, withheld.invalid, withheld.timeouts) == (0, 0, 1)
    assert CancelAttempt("job/t0", pid("c")) in d.log


def test_reveals_are_requested_only_once_every_replica_committed() -> None:
    workers = [FakeWorker(n) for n in "abc"]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    assert all(x.task.commit_reveal for x in d.dispatches())
    d.commit_all(("a", "b"))
    assert d.effects(RequestReveal) == []
    assert "2 of 3 commitments received" in reasons(d)
    d.send(d.take("accepted", "c"))
    effects = d.send(d.take("commitment", "c"))
    assert sorted(e.worker for e in effects if isinstance(e, RequestReveal)) == sorted(w.peer_id for w in workers)
    d.run()
    assert d.job.state is JobState.DONE


def test_a_replica_placed_into_a_round_that_is_still_collecting_is_waited_for() -> None:
    # Found by the e2e Byzantine test: a round made for one late replica (the first round had already opened
    # its reveals) was joined by a second late replica, yet still opened at its first commitment, so the
    # second one's honest commitment came "out of phase" and cost it trust.
    d = Driver([FakeWorker("a")], chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    d.commit_all("a")
    d.tick(d.now + 0.1)  # the other two replicas queue (no free worker), so round 1 opens with a alone
    assert "opening the reveals with 1 of 3 commitments" in reasons(d)
    d.run()  # a reveals: 1 of 3 answered
    d.add_worker(FakeWorker("b"))
    d.tick(d.now + 1)  # b placed: too late for round 1, a round of its own
    d.add_worker(FakeWorker("c"))
    d.tick(d.now + 1)  # c joins b's round, which is still collecting
    assert sorted(d.dispatched_to()) == sorted(pid(n) for n in "abc")
    d.send(d.take("accepted", "b"))
    effects = d.send(d.take("commitment", "b"))
    assert [e for e in effects if isinstance(e, RequestReveal)] == []  # c has not committed yet
    d.commit_all("c")
    d.run()
    assert d.job.state is JobState.DONE
    assert "out-of-phase" not in reasons(d)
    assert all(rec.invalid == 0 for n in "abc" if (rec := d.trust.get(pid(n))) is not None)


def test_a_result_without_a_commitment_is_rejected_and_the_honest_replicas_still_finish() -> None:
    workers = [FakeWorker("cheat", behaviour="no_commit", speed=3e9), FakeWorker("b"), FakeWorker("c"),
               FakeWorker("d")]
    d = Driver(workers, chunks_for(1), policy="replicas:3")
    d.start()
    d.run_to_end()
    assert "without committing first" in reasons(d)
    assert d.trust.score(pid("cheat"), d.now) < 0
    assert RequestReveal("job/t0", pid("cheat")) not in d.log
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    for name in "bcd":  # honest replicas are never punished for the cheat
        rec = d.trust.get(pid(name))
        assert rec is None or (rec.invalid, rec.timeouts) == (0, 0)


def test_a_result_sent_before_the_reveal_was_requested_is_rejected() -> None:
    workers = [FakeWorker("eager", behaviour="early_reveal", speed=3e9), FakeWorker("b"), FakeWorker("c"),
               FakeWorker("d")]
    d = Driver(workers, chunks_for(1), policy="replicas:3", seed=5)
    d.start()
    assert d.dispatched_to()[0] == pid("eager")  # replicas are drawn at random; at this seed "eager" comes first
    d.run_to_end()
    assert "revealed before the commitments were in" in reasons(d)
    assert d.trust.score(pid("eager"), d.now) < 0
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    for name in "bcd":
        rec = d.trust.get(pid(name))
        assert rec is None or (rec.invalid, rec.timeouts) == (0, 0)


def test_a_reveal_that_does_not_open_its_commitment_is_rejected() -> None:
    workers = [FakeWorker(n) for n in "abc"]
    d2 = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d2.start()
    for name in "abc":
        d2.send(d2.take("accepted", name))
        d2.send(d2.take("commitment", name))
    forged = d2.take("result", "a")
    forged.nonce = bytes(16)
    d2.send(forged)
    assert "does not open its commitment" in reasons(d2)
    assert d2.trust.score(pid("a"), d2.now) < 0
    d2.run()
    assert d2.job.state is JobState.DONE
    assert d2.task("job/t0").worker in (pid("b"), pid("c"))


def test_a_commitment_from_a_worker_not_given_the_task_is_ignored() -> None:
    workers = [FakeWorker(n) for n in "abc"]
    d = Driver([*workers, FakeWorker("x", online=False)], chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    assert d.send(Msg("commitment", "job/t0", pid("x"), digest=hashlib.sha256(b"x").digest())) == []
    assert d.send(Msg("commitment", "job/unknown", pid("a"), digest=bytes(32))) == []
    ref = d.dispatches()[0].task
    tree, output = signed_result(ident("x"), ref, d.inputs[0], d.now, d.wrng)
    assert d.send(Msg("result", "job/t0", pid("x"), tree, output)) == []  # its vote is not counted either
    assert d.task("job/t0").vote.votes == {}  # type: ignore[union-attr]
    d.commit_all(("a", "b"))
    assert d.effects(RequestReveal) == []  # the outsider's commitment did not count
    d.run()
    assert d.job.state is JobState.DONE


def test_replicas_that_disagree_with_one_replica_silent_get_one_more_replica() -> None:
    c = FakeWorker("c", online=False)  # advertised only once the first three replicas are out
    workers = [FakeWorker("liar", behaviour="byzantine", speed=4e9), FakeWorker("slow", behaviour="silent", speed=3e9),
               FakeWorker("b", speed=2e9), c]
    d = Driver(workers, chunks_for(1), policy="replicas:3")
    d.start()
    assert sorted(d.dispatched_to()) == sorted([pid("liar"), pid("slow"), pid("b")])
    c.online = True
    d.run_to_end()
    assert d.job.state is JobState.DONE, reasons(d)
    assert d.dispatched_to()[3:] == [pid("c")]  # exactly one more replica
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert d.trust.get(pid("liar")).outvoted == 1  # type: ignore[union-attr]
    assert d.trust.get(pid("slow")).timeouts == 1  # type: ignore[union-attr]
    rec_c = d.trust.get(pid("c"))
    assert rec_c is not None
    assert rec_c.invalid == 0


@pytest.mark.parametrize("here", ["honest", "broken"])
def test_replicas_disagreeing_beyond_replicas_max_are_settled_here_or_fail_the_task(here: str) -> None:
    from pangea_p2p.core.jobs.config import CoordinatorConfig

    c = FakeWorker("c", online=False)  # advertised only once the first three replicas are out
    workers = [FakeWorker("liar", behaviour="byzantine", speed=3e9), FakeWorker("crashy", behaviour="crash", speed=2e9),
               FakeWorker("b"), c]
    cfg = CoordinatorConfig(verify=VerifyConfig(replicas_max=3))
    d = Driver(workers, chunks_for(1), policy="replicas:3", config=cfg, auto=False, local_behaviour=here)
    d.start()
    c.online = True
    d.run_to_end()
    if here == "honest":  # this peer's own run settles it (audits.py)
        assert d.job.state is JobState.DONE
        assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
        assert d.trust.get(pid("liar")).lies == 1  # type: ignore[union-attr]
    else:
        assert d.job.state is JobState.FAILED
        assert "replicas disagree" in d.finished()[0].reason
    assert len(d.dispatches()) == 3
    crashy = d.trust.get(pid("crashy"))
    assert crashy is None or crashy.invalid == 0  # a crash under commit-reveal is not a cheat


def test_replicas_disagreeing_beyond_replicas_max_are_settled_by_this_peers_own_run_when_it_can() -> None:
    from pangea_p2p.core.jobs.config import CoordinatorConfig

    c = FakeWorker("c", online=False)
    workers = [FakeWorker("liar", behaviour="byzantine", speed=3e9), FakeWorker("crashy", behaviour="crash", speed=2e9),
               FakeWorker("b"), c]
    cfg = CoordinatorConfig(verify=VerifyConfig(replicas_max=3))
    local = WorkerView(pid(SUBMITTER), 1e9, 1, 1, 10**12, 1 << 30, 300.0, 0.0, 0.0)
    d = Driver(workers, chunks_for(1), policy="replicas:3", config=cfg, auto=False, local=local)
    d.start()
    c.online = True
    d.run_to_end()
    assert d.job.state is JobState.DONE  # not "replicas disagree": this peer's own run settled the vote
    assert d.task("job/t0").worker == pid(SUBMITTER)
    assert "this peer runs it itself to settle it" in reasons(d)
    liar = d.trust.get(pid("liar"))
    assert liar is not None
    assert liar.lies == 1  # graded against this peer's own run: a proven lie
    honest = d.trust.get(pid("b"))
    assert honest is not None
    assert (honest.invalid, honest.lies) == (0, 0)


def test_replicas_without_commit_reveal_vote_directly() -> None:
    from pangea_p2p.core.jobs.model import VerificationMode, VerificationPolicy

    workers = [FakeWorker("liar", behaviour="byzantine", speed=3e9), FakeWorker("b"), FakeWorker("c")]
    d = Driver(workers, chunks_for(1), policy=VerificationPolicy(VerificationMode.REPLICAS, replicas=3,
                                                                 commit_reveal=False), auto=False)
    d.start()
    d.send(d.take("accepted", "liar"))
    d.send(d.take("result", "liar"))  # the liar answers first: its vote counts, and is outvoted
    d.run()
    assert not any(x.task.commit_reveal for x in d.dispatches())
    assert d.effects(RequestReveal) == []
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert d.trust.get(pid("liar")).outvoted == 1  # type: ignore[union-attr]


def test_replicas_top_up_when_fewer_workers_than_replicas_were_free() -> None:
    workers = [FakeWorker("a"), FakeWorker("b")]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False)
    d.start()
    assert len(d.dispatches()) == 2
    d.add_worker(FakeWorker("c"))
    d.tick(T0 + 1)
    assert sorted(d.dispatched_to()) == sorted(pid(n) for n in "abc")
    d.run()
    assert d.job.state is JobState.DONE
    d.check_invariants()


def test_a_vote_whose_signers_overlap_another_vote_is_refused() -> None:
    # "front" hands half of the task to "b", who is also a replica: one peer must not count twice
    c = FakeWorker("c", online=False)  # advertised only once "front" and "b" have the two replicas
    workers = [FakeWorker("front", behaviour="delegate", helpers=("b", "x"), speed=3e9), FakeWorker("b", speed=2e9), c]
    d = Driver(workers, chunks_for(1, per_task=2), policy="replicas:2", auto=False)
    d.start()
    assert set(d.dispatched_to()[:2]) == {pid("front"), pid("b")}
    c.online = True
    d.run_to_end()
    assert "refused" in reasons(d)
    assert d.job.state is JobState.DONE, reasons(d)
    assert pid("c") in d.dispatched_to()


# --- adaptive -----------------------------------------------------------------------------------------------


def test_adaptive_runs_a_task_once_and_audits_a_sample_of_the_results() -> None:
    workers = [FakeWorker(n) for n in "abc"]
    d = Driver(workers, chunks_for(20), policy="adaptive")
    d.start()
    d.run_to_end()
    d.check_invariants()
    assert d.job.state is JobState.DONE, d.job.explain()
    for ref in d.refs:
        assert len(d.dispatched_to(ref.task_id)) == 1  # once: no replica
    audited = sum(1 for t in d.job.tasks() if t.audit is not AuditState.NONE)
    assert 1 <= audited <= 20 * 0.28 + 1  # a sample, within the budget (audit_budget of a run per result)
    assert all(d.trust.get(w.peer_id) is None or d.trust.get(w.peer_id).invalid == 0  # type: ignore[union-attr]
               for w in workers)


# --- delegation trees ------------------------------------------------------------------------------------------


def test_a_delegation_tree_is_verified_and_accepted() -> None:
    d = Driver([FakeWorker("w", behaviour="delegate", helpers=("x", "y"))], chunks_for(1, per_task=5))
    d.start()
    assert d.job.state is JobState.DONE, reasons(d)
    (done,) = d.updates("job/t0", TaskState.DONE)
    assert done.output_cid == honest_cid(d.inputs[0])
    assert done.fuel_used == 5 * FUEL_PER_CHUNK
    tree = ReceiptTree.decode(done.tree, VerifyConfig())
    assert isinstance(tree.receipt, DelegationReceipt)
    assert tree.receipt.delegator == pid("w")
    signers = [c.receipt.signer for c in tree.children]
    assert signers == [pid("x"), pid("y")]
    assert all(isinstance(c.receipt, Receipt) for c in tree.children)


def test_a_delegation_tree_with_a_tampered_chunk_is_rejected() -> None:
    d = Driver([FakeWorker("w", speed=2e9), FakeWorker("b")], chunks_for(1, per_task=4), auto=False)
    d.start()
    ref = d.dispatches()[0].task
    assert d.dispatches()[0].worker == pid("w")
    tree, output = delegated_result(ident("w"), ref, d.inputs[0], [ident("x"), ident("y")], d.now, d.wrng)
    chunks = unframe_chunks(output)
    chunks[3] = evil(d.inputs[0][3])  # in y's part
    d.take("result", "w")
    d.send(Msg("result", "job/t0", pid("w"), tree.encode(), frame_chunks(chunks)))
    assert "output chunks of leaf 1" in reasons(d)
    assert d.trust.score(pid("w"), d.now) < 0
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.updates("job/t0", TaskState.DONE)[0].worker == pid("b")


def test_a_delegation_tree_whose_part_was_computed_wrongly_is_caught_by_the_vote() -> None:
    workers = [FakeWorker("w", behaviour="delegate", helpers=("x", "y"), speed=3e9), FakeWorker("b", speed=2e9),
               FakeWorker("c")]
    d = Driver(workers, chunks_for(1, per_task=4), policy="replicas:3", auto=False)
    d.start()
    # w's helpers compute a wrong answer, and w signs over it: a valid tree, but outvoted
    ref = next(x.task for x in d.dispatches() if x.worker == pid("w"))
    tree, output = delegated_result(ident("w"), ref, d.inputs[0], [ident("x"), ident("y")], d.now, d.wrng, evil)
    from pangea_p2p.core.verify.commit_reveal import commit
    from tests.core.jobs.coord_driver import claim_of

    d.take("commitment", "w")
    d.held.pop(("job/t0", pid("w")))
    digest, nonce = commit("job", "job/t0", claim_of(tree.encode(), output), pid("w"), d.wrng)
    d.inbox.insert(0, Msg("commitment", "job/t0", pid("w"), digest=digest))  # w commits and reveals first
    d.held[("job/t0", pid("w"))] = Msg("result", "job/t0", pid("w"), tree.encode(), output, nonce)
    d.run()
    assert d.job.state is JobState.DONE, reasons(d)
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert d.trust.get(pid("w")).outvoted == 1  # type: ignore[union-attr]


def test_update_effects_carry_the_accepted_tree() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1))
    d.start()
    done = [e for e in d.log if isinstance(e, TaskUpdate) and e.state is TaskState.DONE]
    assert len(done) == 1
    assert ReceiptTree.decode(done[0].tree, VerifyConfig()).receipt.signer == pid("a")
    assert not [e for e in d.log if isinstance(e, Dispatch) and e.worker != pid("a")]


@pytest.mark.parametrize("lost", ["timeout", "unreachable", "left"])
def test_a_reveal_lost_after_the_decision_costs_the_task_no_retry(lost: str) -> None:
    # Found in review: with the decision waiting for owed reveals, losing the last one counted as a failed attempt,
    # so with retries_max 0 (or a budget used up by others) a task two honest replicas had agreed on failed.
    workers = [FakeWorker(n) for n in "abc"]
    d = Driver(workers, chunks_for(1), policy="replicas:3", auto=False, retries_max=0)
    d.start()
    d.commit_all(("a", "b", "c"))
    d.take("result", "c")  # c's reveal never arrives
    d.run()
    assert d.task("job/t0").state is TaskState.VERIFYING
    if lost == "timeout":
        d.run_to_end()
    elif lost == "unreachable":
        d.send(Msg("transport_error", "job/t0", pid("c"), reason="stream reset"))
    else:
        d.peer_gone(pid("c"))
    d.check_invariants()
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid == honest_cid(d.inputs[0])
    assert len(d.dispatches("job/t0")) == 3  # nothing was placed again


def test_a_late_attempt_and_its_backup_both_spot_checked_by_one_run_are_accepted_once() -> None:
    d = Driver([FakeWorker("a", speed=3e9), FakeWorker("b")], chunks_for(1), policy="spot:1", auto=False)
    d.start()
    d.deliver(0)  # a accepted; its result waits
    late_a = d.take("result", "a")
    d.tick(d.task("job/t0").deadline_of(pid("a")))  # late: a backup goes to b
    assert d.dispatched_to() == [pid("a"), pid("b")]
    d.send(d.take("accepted", "b"))
    d.send(d.take("result", "b"))  # b's result: spot-checked here
    spot_b = d.take("spot")  # (its re-run's answer held back)
    d.send(late_a)  # a's result too, while that spot check is out: the same chunk, re-run again
    d.send(spot_b)  # one answer passes both
    d.run()
    assert d.job.state is JobState.DONE
    assert len(d.updates("job/t0", TaskState.DONE)) == 1
