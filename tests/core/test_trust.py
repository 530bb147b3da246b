"""Trust scores and adaptive replication: converging on honest workers, snapping back on a bad one."""

from __future__ import annotations

import random
from dataclasses import fields

import pytest

from pangea_p2p.core.trust import Outcome, PeerRecord, ReplicationPolicy, TrustBook, TrustConfig
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.errors import ConfigError

DAY = 86400.0


# --- the book ----------------------------------------------------------------------------------------------


def test_valid_results_build_score_and_run() -> None:
    book = TrustBook()
    for i in range(5):
        book.record("p", Outcome.VALID, float(i))
    rec = book.get("p")
    assert rec is not None
    assert rec.run == 5
    assert rec.valid == 5
    assert 4.99 < book.score("p", 4.0) <= 5.0


def test_a_wrong_result_is_sharp_and_resets_the_run() -> None:
    book = TrustBook()
    for _ in range(50):
        book.record("p", Outcome.VALID, 0.0)
    book.record("p", Outcome.INVALID, 0.0)
    assert book.run("p") == 0
    assert book.score("p", 0.0) == -TrustConfig().invalid_penalty  # every credit gone, then the penalty


def test_the_book_counts_every_outcome_recorded_even_of_peers_it_evicted() -> None:
    book = TrustBook(TrustConfig(peers_max=2))
    for i, outcome in enumerate([Outcome.VALID, Outcome.VALID, Outcome.TIMEOUT, Outcome.PROVEN_LIE]):
        book.record(f"p{i}", outcome, 0.0)
    assert len(book) == 2
    assert book.outcomes == {**dict.fromkeys(Outcome, 0), Outcome.VALID: 2, Outcome.TIMEOUT: 1,
                             Outcome.PROVEN_LIE: 1}


def test_a_timeout_is_slight_and_keeps_the_run() -> None:
    book = TrustBook()
    for _ in range(12):
        book.record("p", Outcome.VALID, 0.0)
    book.record("p", Outcome.TIMEOUT, 0.0)
    assert book.run("p") == 12
    assert book.score("p", 0.0) == pytest.approx(12 - TrustConfig().timeout_penalty)


def test_scores_decay_with_the_half_life() -> None:
    book = TrustBook(TrustConfig(half_life_s=DAY))
    for _ in range(8):
        book.record("good", Outcome.VALID, 0.0)
    book.record("bad", Outcome.INVALID, 0.0)
    assert book.score("good", DAY) == pytest.approx(4.0)
    assert book.score("good", 3 * DAY) == pytest.approx(1.0)
    assert book.score("bad", 2 * DAY) == pytest.approx(-TrustConfig().invalid_penalty / 4)
    book.record("good", Outcome.VALID, 3 * DAY)  # decays first, then adds
    assert book.score("good", 3 * DAY) == pytest.approx(2.0)
    assert book.score("stranger", 0.0) == 0.0


def test_scores_are_bounded() -> None:
    book = TrustBook(TrustConfig(score_max=10.0, score_min=-30.0))
    for _ in range(100):
        book.record("p", Outcome.VALID, 0.0)
        book.record("q", Outcome.INVALID, 0.0)
    assert book.score("p", 0.0) == 10.0
    assert book.score("q", 0.0) == -30.0


def test_book_is_bounded_forgetting_the_least_recently_updated() -> None:
    book = TrustBook(TrustConfig(peers_max=3))
    for i, peer in enumerate(["a", "b", "c"]):
        book.record(peer, Outcome.VALID, float(i))
    book.record("a", Outcome.VALID, 5.0)  # a is fresh again
    book.record("d", Outcome.VALID, 6.0)
    assert len(book) == 3
    assert "b" not in book
    assert {"a", "c", "d"} <= {p for p in "abcd" if p in book}


def test_rank_is_by_score_then_id() -> None:
    book = TrustBook()
    book.record("b", Outcome.VALID, 0.0)
    book.record("c", Outcome.VALID, 0.0)
    book.record("z", Outcome.INVALID, 0.0)
    assert book.rank(["z", "x", "c", "b"], 0.0) == ["b", "c", "x", "z"]


# --- the policy --------------------------------------------------------------------------------------------


def test_export_and_load_round_trip_every_field_and_the_order() -> None:
    book = TrustBook()
    book.record("a", Outcome.VALID, 10.0)
    book.record("b", Outcome.INVALID, 20.0)
    book.record("a", Outcome.TIMEOUT, 30.0)
    rows = book.export_rows()
    assert [peer for peer, _ in rows] == ["b", "a"]
    assert set(rows[0][1]) == {f.name for f in fields(PeerRecord)}, "every PeerRecord field, whatever they are"
    again = TrustBook()
    assert again.load_rows(rows) == 2
    assert again.export_rows() == rows
    assert again.get("a") == book.get("a")
    assert again.score("b", 20.0 + 7 * DAY) == pytest.approx(book.score("b", 20.0 + 7 * DAY))


def test_load_forgives_unknown_and_missing_fields_and_skips_malformed_rows() -> None:
    book = TrustBook(TrustConfig(peers_max=2))
    rows: list = [
        ("new", {"score": -30.0, "invalid": 2, "from_the_future": "x"}),  # unknown field, others default
        ("nan", {"score": float("nan")}),
        ("neg", {"valid": -1}),
        ("frac", {"run": 1.5}),
        ("type", {"score": "high"}),
        ("bool", {"invalid": True}),
        ("", {"score": 1.0}),
        (7, {"score": 1.0}),
        ("x" * 1000, {"score": 1.0}),
        ("list", ["score", 1.0]),
        ("huge", {"score": 1e300, "updated_s": 5.0}),  # clamped to score_max
        ("old", {"score": 3.0, "updated_s": 1.0}),
        ("recent", {"score": 4.0, "updated_s": 9.0}),
    ]
    assert book.load_rows(rows) == 2, "peers_max kept, the most recently updated"
    assert book.peers() == ["huge", "recent"]
    assert book.score("huge", 5.0) == book.config.score_max
    assert book.version == 1
    loose = TrustBook()
    loose.load_rows(rows[:1])
    rec = loose.get("new")
    assert rec is not None
    assert (rec.score, rec.invalid, rec.valid, rec.run) == (-30.0, 2, 0, 0)


def test_version_moves_on_every_change_and_strong_version_on_a_fall_below_suspect() -> None:
    book = TrustBook()
    book.record("p", Outcome.VALID, 1.0)
    book.record("p", Outcome.TIMEOUT, 2.0)
    assert (book.version, book.strong_version) == (2, 0)
    book.record("p", Outcome.INVALID, 3.0)
    assert (book.version, book.strong_version) == (3, 1)


def test_a_worker_that_is_no_suspect_runs_the_task_once_and_its_result_may_be_audited() -> None:
    policy = ReplicationPolicy(TrustBook())
    plan = policy.plan("new", 0.0, random.Random(0), chunks=10)
    assert (plan.replicas, plan.quorum, plan.spot_checks) == (1, 1, 0)
    assert plan.why == "runs once (0 result(s) confirmed here so far; its result may be audited)"


def test_suspect_worker_gets_a_majority_of_three() -> None:
    book = TrustBook()
    book.record("bad", Outcome.INVALID, 0.0)
    plan = ReplicationPolicy(book).plan("bad", 0.0, random.Random(0), chunks=10)
    assert (plan.replicas, plan.quorum) == (3, 2)
    assert "suspect" in plan.why


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="half_life_s"):
        TrustConfig(half_life_s=0.0)
    with pytest.raises(ConfigError, match="replicas_suspect"):
        TrustConfig(replicas_suspect=0)
    with pytest.raises(ConfigError, match="peers_max: must be an integer"):
        TrustConfig(peers_max=10.5)  # type: ignore[arg-type]
    assert TrustConfig.from_mapping({"half_life_s": 60, "suspect_score": -3}).half_life_s == 60.0
    with pytest.raises(ConfigError, match=r"trust\.nonsense: unknown key"):
        TrustConfig.from_mapping({"nonsense": 1})
    with pytest.raises(ConfigError, match=r"trust\.peers_max: must be an integer"):
        TrustConfig.from_mapping({"peers_max": "many"})
    with pytest.raises(ConfigError, match=r"trust\.audit_rate_min: must be between"):
        TrustConfig.from_mapping({"audit_rate_min": 2})
    with pytest.raises(ConfigError, match=r"verify\.replicas_max"):
        VerifyConfig.from_mapping({"replicas_max": True})
    with pytest.raises(ConfigError, match="clock_skew_max_s"):
        VerifyConfig(clock_skew_max_s=float("nan"))
