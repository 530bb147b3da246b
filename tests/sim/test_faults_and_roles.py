"""Every fault and every Byzantine role happens in a run (its counter moves) and is handled (the checkers stay
green in strict mode, jobs still finish, the culprit's trust drops) — or, for Sybils, is shown to win."""

from __future__ import annotations

import math

import pytest

from pangea_p2p.sim.world import Simulation
from tests.sim.conftest import small, trust_timeouts


def run(**changes: object) -> tuple[Simulation, dict[str, object]]:
    sim = Simulation(small(**changes), "test")
    result = sim.run()
    assert not result.failed, f"{result.failed}\nreplay: {result.replay()}"
    return sim, result.metrics


@pytest.mark.parametrize(("mode", "asymmetric"), [("majority", False), ("majority", True), ("one", False),
                                                  ("islands:3", False)])
def test_partition_drops_messages_then_heals_and_every_job_ends(mode: str, asymmetric: bool) -> None:
    sim, m = run(partition=mode, asymmetric=asymmetric)
    assert m["faults"] == {"partitions": 1, "heals": 1}
    assert m["dropped"] > 0  # type: ignore[operator]
    assert trust_timeouts(sim) > 0  # attempts across the cut timed out and went elsewhere
    assert m["jobs_running"] == 0  # liveness: nothing stuck after the heal
    assert m["wrong_accepted"] == 0
    assert m["jobs_done"] >= 6  # type: ignore[operator]


def test_loss_costs_retransmissions_not_results() -> None:
    _, m = run(loss=0.2)
    assert m["retransmits"] > 0  # type: ignore[operator]
    assert m["jobs_done"] == m["jobs"]


def test_clogged_peers_hold_messages_and_jobs_still_finish() -> None:
    _, m = run(clog=0.2)
    assert m["faults"]["clogs"] > 0  # type: ignore[index]
    assert m["clogged_messages"] > 0  # type: ignore[operator]
    assert m["jobs_done"] == m["jobs"]


def test_churn_crashes_restarts_leaves_and_joins() -> None:
    _, m = run(crash=0.2, leave=0.1, join=0.1)
    faults = m["faults"]
    assert faults["crashes"] > 0 and faults["restarts"] > 0 and faults["leaves"] > 0 and faults["joins"] > 0  # type: ignore[index]  # noqa: PT018
    assert m["jobs_done"] == m["jobs"]


def test_slow_peers_time_out_and_their_tasks_go_elsewhere() -> None:
    sim, m = run(slow=0.3, slow_factor=60.0)
    assert trust_timeouts(sim) > 0
    assert m["jobs_done"] == m["jobs"]


@pytest.mark.parametrize("role", ["wrong", "forge", "copy"])
def test_wrong_forged_and_copied_answers_are_outvoted_or_refused(role: str) -> None:
    _, m = run(byzantine=0.3, role=role)
    stats = m["worker_stats"]
    sent = {"wrong": "wrong_sent", "forge": "forged_sent", "copy": "copies_sent"}[role]
    assert stats[sent] > 0  # type: ignore[index]
    assert m["wrong_accepted"] == 0
    assert m["bad_signature_accepted"] == 0
    assert m["trust_byzantine"] < 0 < m["trust_honest"]  # type: ignore[operator]
    assert m["trust_separation"] == 1.0
    assert m["jobs_running"] == 0


def test_colluders_agreeing_on_one_wrong_answer_are_outvoted_when_a_minority() -> None:
    _, m = run(byzantine=0.1, role="collude", policy="replicas:5")
    assert m["worker_stats"]["wrong_sent"] > 0  # type: ignore[index]
    assert m["wrong_accepted"] == 0
    assert m["trust_byzantine"] < 0 < m["trust_honest"]  # type: ignore[operator]


def test_colluders_win_votes_when_they_fill_the_quorum_and_the_checker_sees_it() -> None:
    _, m = run(byzantine=0.5, role="collude", policy="replicas:3", checks="count")
    assert m["wrong_accepted"] > 0  # type: ignore[operator]


def test_withholders_time_out_and_lose_trust() -> None:
    sim, m = run(byzantine=0.3, role="withhold")
    assert m["worker_stats"]["withheld"] > 0  # type: ignore[index]
    assert trust_timeouts(sim) > 0
    assert m["trust_byzantine"] < 0 < m["trust_honest"]  # type: ignore[operator]
    assert m["jobs_done"] == m["jobs"]


def test_lying_adverts_absurd_ones_rejected_inflated_ones_attract_work() -> None:
    _, m = run(byzantine=0.3, role="liar")
    assert m["advert_rejections"]["absurd_value"] > 0  # type: ignore[index]
    assert m["worker_stats"]["rejected_offers"] > 0  # type: ignore[index]  # inflated slots: "busy" answers
    assert m["jobs_done"] == m["jobs"]
    assert m["wrong_accepted"] == 0


def test_sybils_with_inflated_adverts_capture_whole_votes() -> None:
    # An open finding, not a defence: the scheduler ranks by advertised speed, so a Sybil group that lies about
    # speed gets every replica of a task and its shared wrong answer wins; the checker catches every one.
    _, m = run(byzantine=0.1, role="sybil", checks="count")
    assert m["wrong_accepted"] > 0  # type: ignore[operator]
    assert m["trust_separation"] == 0.0 or math.isnan(m["trust_separation"])  # type: ignore[arg-type]


def test_workers_split_big_tasks_and_the_delegation_trees_verify() -> None:
    # every peer keeps a directory, so a worker that finds a task too big splits it and signs a delegation receipt
    # over its parts' receipts; the checker verifies every signature of every accepted tree
    _, m = run(directories="all", depth_max=1, chunks_per_task=8, tasks_per_job=1, fuel_unit=1_000_000, jobs=4,
               safety_s=600.0, liveness_s=2400.0, policy="hash")
    assert m["splits"] == 4
    assert m["jobs_done"] == 4
    assert m["wrong_accepted"] == 0
    assert m["bad_signature_accepted"] == 0
