"""What the simulator measures of safety and cost: wrong results in final job outputs (and the checker that fails
on one, shown by sabotaging the check that would catch it), total work over single-execution work, and the
escape rate of liars that lie with probability q per task, beside its analytic value."""

from __future__ import annotations

from pathlib import Path

import pytest

from pangea_p2p.core.jobs.audits import Audits
from pangea_p2p.core.jobs.model import VerificationPolicy
from pangea_p2p.core.verify.spotcheck import SpotCheck, SpotState
from pangea_p2p.sim.bounds import escape_bound, spot_escape, vote_escape
from tests.sim.conftest import run_small


def test_a_blind_spot_check_lets_wrong_results_into_final_outputs_and_the_checker_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    honest = run_small(policy="spot:1", byzantine=0.4, role="wrong", seed=3)
    assert honest.ok, honest.failed  # the real spot check catches every wrong answer
    assert honest.metrics["wrong_final"] == 0

    def blind(self: SpotCheck, index: int, output: bytes | None) -> SpotState:  # compares nothing
        self.state = SpotState.PASSED
        return self.state

    monkeypatch.setattr(SpotCheck, "add_reexecution", blind)
    monkeypatch.setattr(Audits, "accepted", lambda self, entry, force="": None)  # and no audit looks again
    strict = run_small(policy="spot:1", byzantine=0.4, role="wrong", seed=3)
    assert strict.failed.startswith("[wrong_final]"), strict.failed
    assert "holds a wrong output for task job" in strict.failed and "(wrong)" in strict.failed  # noqa: PT018
    assert "--policy spot:1" in strict.replay()
    counted = run_small(policy="spot:1", byzantine=0.4, role="wrong", seed=3, checks="count")
    m = counted.metrics
    assert m["wrong_final"] == m["wrong_accepted"] > 0  # type: ignore[operator]
    assert [v.kind for v in counted.violations] == ["wrong_final"] * m["wrong_final"]  # type: ignore[operator]


def test_work_ratio_counts_every_execution_over_one_per_task() -> None:
    single = run_small(policy="hash").metrics
    assert single["jobs_done"] == single["jobs"]
    assert single["work_ratio"] == pytest.approx(1.0)  # one honest run per task, nothing else
    three = run_small(policy="replicas:3").metrics
    assert 2.9 <= three["work_ratio"] <= 3.3  # type: ignore[operator]  # three replicas, a few re-runs
    spot = run_small(policy="spot:1").metrics
    # one chunk per task: the spot check re-runs all of it; audits of the new workers' results add a little
    assert 2.0 <= spot["work_ratio"] <= 2.0 + 0.3  # type: ignore[operator]  # (at most the audit budget)


def test_lie_probability_draws_lies_per_task_and_counts_the_ones_that_escape() -> None:
    m = run_small(policy="replicas:3", byzantine=0.3, role="collude", lie_q=0.5, checks="count").metrics
    sent, served = m["lies_sent"], m["worker_stats"]["results_sent"]  # type: ignore[index]
    assert 0 < sent < served  # type: ignore[operator]
    assert 0 <= m["lies_escaped"] <= sent  # type: ignore[operator]
    assert m["lies_escaped"] >= m["wrong_final"]  # type: ignore[operator]  # each escaped task carries >= 1 lie
    never = run_small(policy="replicas:3", byzantine=0.3, role="collude", lie_q=0.0).metrics
    assert never["lies_sent"] == never["wrong_accepted"] == 0


def test_analytic_escape_rates() -> None:
    p = 0.1
    assert vote_escape(1, p) == pytest.approx(1.0)
    assert vote_escape(3, p) == pytest.approx(1 - (1 - p) ** 2)
    assert vote_escape(2, p) == pytest.approx(p * (3 - 2 * p) / (1 + p - p * p))
    assert vote_escape(5, 0.0) == 0.0
    assert vote_escape(5, p) < vote_escape(3, p) < vote_escape(2, p)
    assert spot_escape(1, 4) == pytest.approx(0.75)
    assert escape_bound(VerificationPolicy.parse("replicas:3"), 0.2, 0.5) == pytest.approx(vote_escape(3, p))
    assert vote_escape(3, p, primary=p) == pytest.approx(vote_escape(3, p))
    assert vote_escape(2, p, primary=1.0) == pytest.approx((2 * p + 2 * (1 - p) * p) / (1 + p + (1 - p) * p))
    # adaptive: a single run escapes when its audit is not drawn (1 - audit_budget), worse than a suspect's vote
    assert escape_bound(VerificationPolicy.parse("adaptive"), 0.2, 0.5) == pytest.approx(1 - 0.28)
    assert escape_bound(VerificationPolicy.parse("adaptive"), 0.2, 0.5) > vote_escape(3, p, 0.5)
    assert escape_bound(VerificationPolicy.parse("hash"), 0.2, 0.5) == 1.0


def test_vote_escape_matches_a_direct_enumeration() -> None:
    # every sequence of votes (lie or not; the first is the primary's), with the tie-break replica: won / told
    import itertools

    for n, p, pi in ((2, 0.2, 0.2), (4, 0.3, 0.3), (3, 0.25, 0.25), (2, 0.1, 0.5), (3, 0.1, 0.0), (4, 0.2, 1.0)):
        told = won = 0.0
        for votes in itertools.product((0, 1), repeat=n + 1):
            prob = 1.0
            for i, v in enumerate(votes):
                chance = pi if i == 0 else p
                prob *= chance if v else 1 - chance
            k = sum(votes[:n])
            extra = 2 * k == n  # a tie: one more replica decides
            lies = k + (votes[n] if extra else 0)
            told += prob * lies
            total = n + (1 if extra else 0)
            if 2 * lies > total:
                won += prob * lies
        assert vote_escape(n, p, pi) == pytest.approx(won / told)


def test_colluder_sweep_plot_draws_both_policies(tmp_path: Path) -> None:
    from simulations import colluder_sweep

    rows = [{"policy": p, "colluders": f, "seed": seed, "wrong_final": 10 * f * seed, "wrong_accepted": 10 * f,
             "jobs": 100, "jobs_done": 100, "work_ratio": 2.0 + f}
            for p in colluder_sweep.POLICIES for f in colluder_sweep.FRACTIONS for seed in (1, 2)]
    colluder_sweep.plot(rows, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
