"""Safety of accepted results: fuel in every re-executing check, audits, backtracking after a proven lie, and
trust that colluders cannot turn against the honest (core/jobs/audits.py, verification.py, trust.py)."""

from __future__ import annotations

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.jobs.effects import RunLocal
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.core.jobs.scheduler import SchedulerConfig
from pangea_p2p.core.jobs.tasks import AuditState
from pangea_p2p.core.trust import Outcome, TrustBook, TrustConfig
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from tests.core.jobs.coord_driver import FUEL_PER_CHUNK, T0, Driver, FakeWorker, chunks_for, honest, pid

NO_DRAWN_AUDITS = TrustConfig(audit_rate_new=0.0, audit_rate_min=0.0)  # only forced ones and rechecks
ALWAYS_AUDIT = TrustConfig(audit_rate_new=1.0, audit_budget=1.0)  # every result drawn, and paid for


def honest_cid(chunks: list[bytes]) -> str:
    return cid_of(frame_chunks([honest(c) for c in chunks]))


def run_job(d: Driver, job_id: str, ticks_max: int = 200) -> None:
    """Deliver and tick until ``job_id`` of ``d``'s submitter ends."""
    for _ in range(ticks_max):
        d.run()
        if d.behaviour.jobs[job_id].state.final:
            return
        deadline = d.next_deadline()
        assert deadline is not None, d.behaviour.jobs[job_id].explain()
        d.tick(max(d.now, deadline))
    raise AssertionError(f"{job_id} did not end")


# --- fuel is compared by every check that re-executes -------------------------------------------------------


@pytest.mark.parametrize(("chunks", "factor"), [(1, 0.1), (1, 10.0), (4, 0.1), (4, 10.0)])
def test_a_spot_checked_worker_that_signs_the_wrong_fuel_is_a_proven_liar(chunks: int, factor: float) -> None:
    liar = FakeWorker("liar", speed=3e9, fuel_claim=factor)  # the right output, a tenth or ten times the fuel
    d = Driver([liar, FakeWorker("b")], chunks_for(1, per_task=chunks), policy="spot:1",
               trust=TrustBook(NO_DRAWN_AUDITS))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.job.explain(done=True)
    assert d.dispatched_to()[0] == pid("liar")
    task = d.task("job/t0")
    assert (task.output_cid, task.fuel_used) == (honest_cid(d.inputs[0]), FUEL_PER_CHUNK * chunks)
    rec = d.trust.get(pid("liar"))
    assert rec is not None
    assert rec.lies == 1
    assert rec.score == TrustConfig().score_min
    assert [p.worker for p in d.proofs] == [pid("liar")]
    assert "fuel" in d.proofs[0].why


# --- audits -------------------------------------------------------------------------------------------------


def test_colluders_that_win_a_vote_are_caught_by_an_audit_and_the_result_is_corrected() -> None:
    d = Driver([FakeWorker("x", behaviour="byzantine"), FakeWorker("y", behaviour="byzantine")], chunks_for(2),
               policy="replicas:2", trust=TrustBook(ALWAYS_AUDIT))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    for i in range(2):
        task = d.task(f"job/t{i}")
        assert task.output_cid == honest_cid(d.inputs[i])
        assert task.worker == d.submitter
        assert task.audit is AuditState.CORRECTED
        assert len(task.corrections) == 1
        assert "audit" in task.corrections[0]
        assert [u.corrected for u in d.updates(f"job/t{i}", TaskState.DONE)] == [False, True]
    assert set(d.job.corrections()) == {"job/t0", "job/t1"}
    assert d.job.audits()["corrected"] == 2
    for name in ("x", "y"):
        rec = d.trust.get(pid(name))
        assert rec is not None
        assert rec.lies >= 1
        assert rec.score == -100.0
    assert {p.worker for p in d.proofs} == {pid("x"), pid("y")}
    for proof in d.proofs:  # what anyone can check by one run: the liar's signed tree, the module and the input
        assert proof.job_id == "job"
        assert proof.task.input_cid in {ref.input_cid for ref in d.refs}
        assert proof.task.module_cid == d.refs[0].module_cid
        assert ReceiptTree.decode(proof.tree, VerifyConfig()).receipt.signer == proof.worker
    d.check_invariants()


def test_a_job_is_not_done_until_its_audits_are_settled() -> None:
    d = Driver([FakeWorker("a"), FakeWorker("b")], chunks_for(1), policy="replicas:2",
               trust=TrustBook(ALWAYS_AUDIT), local_behaviour="silent")  # this peer's own runs never end
    d.start()
    d.run()
    assert d.task("job/t0").state is TaskState.DONE
    assert d.task("job/t0").audit is AuditState.PENDING
    assert len(d.effects(RunLocal)) == 1
    assert d.job.state is JobState.RUNNING
    assert d.job.progress()["done"] == 1


def test_the_audit_rate_falls_with_a_workers_confirmed_record_and_never_reaches_zero() -> None:
    book = TrustBook()
    cfg = book.config
    assert book.audit_probability("new") == cfg.audit_rate_new
    rates = []
    for _ in range(1000):
        book.record("w", Outcome.CONFIRMED, T0)
        rates.append(book.audit_probability("w"))
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == cfg.audit_rate_min > 0.0
    for _ in range(1000):
        book.record("v", Outcome.VALID, T0)  # winning votes is not a record this peer checked itself
    assert book.audit_probability("v") == cfg.audit_rate_new
    book.record("w", Outcome.PROVEN_LIE, T0)
    assert book.audit_probability("w") == 1.0


@pytest.mark.parametrize("budget", [0.0, 0.3])
def test_drawn_audits_stay_within_the_peers_budget_when_no_one_lies(budget: float) -> None:
    n = 100
    workers = [FakeWorker(f"w{i}") for i in range(20)]  # all new: each result would be audited without a budget
    d = Driver(workers, chunks_for(n), policy="spot:1", trust=TrustBook(TrustConfig(audit_budget=budget)))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    audits = d.job.audits()
    assert audits["corrected"] == 0
    assert audits["passed"] <= budget * n
    assert audits["passed"] > 0 or budget == 0.0
    assert len(d.effects(RunLocal)) == audits["passed"]


def test_audits_of_an_honest_workers_results_cost_little_by_default() -> None:
    n = 100
    d = Driver([FakeWorker("a")], chunks_for(n), policy="spot:1")
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    audits = d.job.audits()
    assert audits["corrected"] == 0
    assert audits["pending"] == 0
    assert 0 < audits["passed"] <= 0.1 * n  # new workers most, then falling as spot checks confirm it


# --- backtracking -------------------------------------------------------------------------------------------


def test_a_liar_proven_later_gets_its_results_in_a_finished_job_corrected() -> None:
    x, y, h = FakeWorker("x", behaviour="byzantine", speed=3e9), FakeWorker("y", behaviour="byzantine"), \
        FakeWorker("h", online=False)
    d = Driver([x, y, h], chunks_for(2), policy="replicas:2", trust=TrustBook(NO_DRAWN_AUDITS))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE  # two colluders agreed on wrong outputs: accepted, nobody audited
    assert all(t.output_cid != honest_cid(d.inputs[i]) for i, t in enumerate(d.job.tasks()))
    y.online, h.online = False, True
    d.submit("job2", chunks_for(1), "spot:1")  # x lies again, to a spot check this time
    run_job(d, "job2")
    assert d.behaviour.jobs["job2"].state is JobState.DONE
    assert d.job.state is JobState.DONE  # still done: the correction is recorded and shown
    for i, task in enumerate(d.job.tasks()):
        assert task.output_cid == honest_cid(d.inputs[i]), task.reasons
        assert task.audit is AuditState.CORRECTED
    assert set(d.job.corrections()) == {"job/t0", "job/t1"}
    assert d.job.workers == {d.submitter: 2}
    for name in ("x", "y"):  # y was behind the wrong results too
        rec = d.trust.get(pid(name))
        assert rec is not None
        assert rec.lies >= 1


def test_a_liar_found_inside_a_delegation_tree_gets_that_result_rechecked() -> None:
    w = FakeWorker("w", behaviour="delegate", helpers=("p", "q"))
    p, h = FakeWorker("p", behaviour="byzantine", speed=3e9, online=False), FakeWorker("h", online=False)
    d = Driver([w, p, h], chunks_for(1, per_task=2), policy="spot:1", trust=TrustBook(NO_DRAWN_AUDITS))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").audit is AuditState.NONE
    w.online, p.online, h.online = False, True, True
    d.submit("job2", chunks_for(1), "spot:1")  # p, one of w's helpers, lies to this peer directly
    run_job(d, "job2")
    assert d.trust.get(pid("p")).lies == 1  # type: ignore[union-attr]
    task = d.task("job/t0")  # p signed a part of it: re-executed here; p was honest there
    assert task.audit is AuditState.PASSED
    assert task.output_cid == honest_cid(d.inputs[0])
    assert task.worker == pid("w")


# --- trust that colluders cannot turn against the honest ----------------------------------------------------


def test_one_lost_vote_is_weak_evidence() -> None:
    book = TrustBook()
    book.record("h", Outcome.OUTVOTED, T0)
    assert book.score("h", T0) > SchedulerConfig().trust_floor
    assert book.get("h").outvoted == 1  # type: ignore[union-attr]
    book.record("l", Outcome.PROVEN_LIE, T0)
    assert book.score("l", T0) == book.config.score_min


def test_an_honest_worker_outvoted_by_colluders_is_vindicated_and_the_colluders_proven() -> None:
    workers = [FakeWorker("x", behaviour="byzantine"), FakeWorker("y", behaviour="byzantine"), FakeWorker("h")]
    d = Driver(workers, chunks_for(1), policy="replicas:3", trust=TrustBook(NO_DRAWN_AUDITS))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert sorted(d.dispatched_to()) == sorted(w.peer_id for w in workers)
    task = d.task("job/t0")
    assert task.output_cid == honest_cid(d.inputs[0])
    assert task.audit is AuditState.CORRECTED
    h = d.trust.get(pid("h"))
    assert h is not None
    assert (h.outvoted, h.vindicated, h.lies) == (0, 1, 0)
    assert d.trust.score(pid("h"), d.now) > 0
    for name in ("x", "y"):
        assert d.trust.get(pid(name)).lies == 1  # type: ignore[union-attr]
        assert d.trust.score(pid(name), d.now) == -100.0


def test_a_vote_that_cannot_reach_a_quorum_is_settled_by_this_peers_own_run() -> None:
    d = Driver([FakeWorker("liar", behaviour="byzantine"), FakeWorker("h")], chunks_for(1), policy="replicas:2",
               config=CoordinatorConfig(verify=VerifyConfig(replicas_max=2)), trust=TrustBook(NO_DRAWN_AUDITS))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.job.reason  # it failed: "replicas disagree and no answer reached a quorum"
    task = d.task("job/t0")
    assert task.output_cid == honest_cid(d.inputs[0])
    assert "this peer runs it itself to settle it" in " | ".join(task.reasons)
    assert d.trust.get(pid("liar")).lies == 1  # type: ignore[union-attr]
    assert d.trust.get(pid("h")).proven == 1  # type: ignore[union-attr]
    d.check_invariants()


def test_an_audit_the_budget_could_not_pay_for_runs_later_and_corrects_a_finished_job() -> None:
    x, y = FakeWorker("x", behaviour="byzantine"), FakeWorker("y", behaviour="byzantine")
    h = FakeWorker("h", online=False)
    d = Driver([x, y, h], chunks_for(1), policy="replicas:2")  # default budget: 0.3 per accepted result
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    assert d.task("job/t0").output_cid != honest_cid(d.inputs[0])
    assert "owed" in " | ".join(d.task("job/t0").reasons)
    x.online, y.online, h.online = False, False, True
    d.submit("job2", chunks_for(4), "spot:1")  # four results accepted pay for more than one audit
    run_job(d, "job2")
    task = d.task("job/t0")
    assert task.audit is AuditState.CORRECTED
    assert task.output_cid == honest_cid(d.inputs[0])
    assert d.trust.lies(pid("x")) == d.trust.lies(pid("y")) == 1


# --- owed audits: paid in turns over the workers, and before their job ends --------------------------------


def test_owed_audits_are_paid_in_turns_over_the_workers_that_vouch_for_them() -> None:
    from pangea_p2p.core.jobs.audits import AuditBudget
    budget = AuditBudget(per_task=1.0)
    flood, rare = object(), object()  # stand-ins for two coordinators' Audits (only identity matters here)
    for i in range(10):
        budget.owe("fast", flood, f"a/t{i}")  # type: ignore[arg-type]
    budget.owe("slow", rare, "b/t0")  # type: ignore[arg-type]
    budget.accepted()
    budget.accepted()
    assert [t for _, t in budget.take_owed()] == ["a/t0", "b/t0"]  # not the flood's two oldest
    budget.tokens = 3.0
    assert budget.take_owed_of(rare) == []  # type: ignore[arg-type]
    assert budget.take_owed_of(flood) == ["a/t1", "a/t2", "a/t3"]  # type: ignore[arg-type]
    assert budget.n_owed == sum(len(q) for q in budget.owed.values()) == 6


def test_a_fast_liar_among_many_honest_results_is_caught_before_the_job_ends() -> None:
    # The liar answers few tasks among many honest ones; paying owed audits oldest first spent the budget on
    # the honest flood and let the job end with the liar's result in it.
    workers = [FakeWorker("h", slots=16), FakeWorker("liar", behaviour="byzantine", slots=1)]
    d = Driver(workers, chunks_for(24), policy="adaptive")
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE, d.job.reason
    wrong = [i for i in range(24) if d.task(f"job/t{i}").output_cid != honest_cid(d.inputs[i])]
    assert wrong == [], [d.task(f"job/t{i}").reasons for i in wrong]
    assert d.trust.lies(pid("liar")) >= 1
    d.check_invariants()
