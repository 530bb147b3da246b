"""Trust scores and adaptive replication: converging on honest workers, snapping back on a bad one."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, fields

import pytest

from pangea_p2p.core.trust import Outcome, PeerRecord, Plan, ReplicationPolicy, TrustBook, TrustConfig
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.merkle import MerkleTree
from pangea_p2p.core.verify.spotcheck import SpotCheck, SpotState
from pangea_p2p.core.verify.voting import Claim, TallyState, VoteTally
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


def test_unknown_worker_is_replicated_twice_and_must_agree() -> None:
    policy = ReplicationPolicy(TrustBook())
    plan = policy.plan("new", 0.0, random.Random(0), chunks=10)
    assert (plan.replicas, plan.quorum, plan.spot_checks) == (2, 2, 0)
    assert "0 verified results in a row" in plan.why


def test_suspect_worker_gets_a_majority_of_three() -> None:
    book = TrustBook()
    book.record("bad", Outcome.INVALID, 0.0)
    plan = ReplicationPolicy(book).plan("bad", 0.0, random.Random(0), chunks=10)
    assert (plan.replicas, plan.quorum) == (3, 2)
    assert "suspect" in plan.why


def test_replication_probability_falls_as_the_record_grows() -> None:
    book = TrustBook()
    policy = ReplicationPolicy(book)
    seen = []
    for n in range(1, 2001):
        book.record("p", Outcome.VALID, 0.0)
        if n in (9, 10, 20, 100, 1000, 2000):
            seen.append(policy.replicate_probability("p", 0.0))
    assert seen == [1.0, 1.0, 0.5, 0.1, 0.02, 0.02]  # 10/run, floored at the audit minimum
    rng = random.Random(3)
    plans = [policy.plan("p", 0.0, rng, chunks=10) for _ in range(2000)]
    replicated = sum(p.replicas > 1 for p in plans) / len(plans)
    assert 0.01 < replicated < 0.035
    assert {p.spot_checks for p in plans if p.replicas == 1} == {3}
    assert policy.plan("p", 0.0, random.Random(1), chunks=0) in (
        Plan(1, 1, 0, "trusted (2000 in a row), not replicated (p=0.020), 0 spot checks"),
        Plan(2, 2, 0, "trusted (2000 in a row), replicated as an audit (p=0.020)"),
    )


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="half_life_s"):
        TrustConfig(half_life_s=0.0)
    with pytest.raises(ConfigError, match="replicas_untrusted"):
        TrustConfig(replicas_untrusted=0)
    with pytest.raises(ConfigError, match="peers_max: must be an integer"):
        TrustConfig(peers_max=10.5)  # type: ignore[arg-type]
    assert TrustConfig.from_mapping({"half_life_s": 60, "trusted_after_valid": 5}).half_life_s == 60.0
    with pytest.raises(ConfigError, match=r"trust\.nonsense: unknown key"):
        TrustConfig.from_mapping({"nonsense": 1})
    with pytest.raises(ConfigError, match=r"trust\.peers_max: must be an integer"):
        TrustConfig.from_mapping({"peers_max": "many"})
    with pytest.raises(ConfigError, match=r"trust\.audit_probability_min: must be between"):
        TrustConfig.from_mapping({"audit_probability_min": 2})
    with pytest.raises(ConfigError, match=r"verify\.replicas_max"):
        VerifyConfig.from_mapping({"replicas_max": True})
    with pytest.raises(ConfigError, match="clock_skew_max_s"):
        VerifyConfig(clock_skew_max_s=float("nan"))


# --- a small deterministic network: policy + voting + spot checks + trust together ---------------------------

CHUNKS = 10
RIGHT_CHUNKS = [f"chunk {i}".encode() for i in range(CHUNKS)]


@dataclass
class Worker:
    wrong_chunks: frozenset[int] = frozenset()  # chunks this worker gets wrong (empty: honest)

    def chunks(self) -> list[bytes]:
        return [b"lazy" if i in self.wrong_chunks else c for i, c in enumerate(RIGHT_CHUNKS)]

    def claim(self) -> Claim:
        return Claim(hashlib.sha256(b"".join(self.chunks())).digest(), 1000 + len(self.wrong_chunks))


@dataclass
class Network:
    workers: dict[str, Worker]
    rng: random.Random = field(default_factory=lambda: random.Random(2024))
    book: TrustBook = field(default_factory=TrustBook)
    now: float = 0.0
    replicas: list[int] = field(default_factory=list)
    wrong_accepted: int = 0

    def run_task(self, primary: str) -> None:
        """One task: plan, execute, verify (vote or spot check), feed the trust book."""
        self.now += 10.0
        plan = ReplicationPolicy(self.book).plan(primary, self.now, self.rng, chunks=CHUNKS)
        self.replicas.append(plan.replicas)
        if plan.replicas == 1:
            self._spot_checked(primary, plan.spot_checks)
            return
        others = [w for w in sorted(self.workers) if w != primary]
        self.rng.shuffle(others)
        tally = VoteTally(plan.replicas, plan.quorum, replicas_max=7)
        queue = [primary, *others]
        to_dispatch = plan.replicas
        while tally.state is TallyState.COLLECTING and to_dispatch and queue:
            w = queue.pop(0)
            to_dispatch -= 1
            tally.add_workers([w])  # dispatched: the task is given to w
            to_dispatch += tally.add_vote(w, self.workers[w].claim()).replicas_to_add
        self.replicas[-1] = tally.dispatched  # escalations included
        if tally.state is TallyState.ACCEPTED:
            self.wrong_accepted += tally.accepted != Worker().claim()
            for w in tally.agreeing():
                self.book.record(w, Outcome.VALID, self.now)
            for w in tally.dissenting():
                self.book.record(w, Outcome.INVALID, self.now)

    def _spot_checked(self, worker: str, k: int) -> None:
        chunks = self.workers[worker].chunks()
        tree = MerkleTree.from_chunks(chunks)
        check = SpotCheck.start(tree.root, CHUNKS, k, self.rng)
        check.add_claims_from_output(chunks)
        for i in check.indexes:
            check.add_reexecution(i, RIGHT_CHUNKS[i])
        if check.state is SpotState.PASSED:
            self.wrong_accepted += self.workers[worker].claim() != Worker().claim()
            self.book.record(worker, Outcome.VALID, self.now)
        else:
            self.book.record(worker, Outcome.INVALID, self.now)

    def run(self, tasks: int) -> None:
        names = sorted(self.workers)
        for _ in range(tasks):
            self.run_task(self.rng.choice(names))


def test_replication_converges_on_honest_workers() -> None:
    net = Network({f"w{i}": Worker() for i in range(6)})
    net.run(3000)
    early = sum(net.replicas[:30]) / 30
    late = sum(net.replicas[-600:]) / 600
    assert early >= 2.0  # nobody is trusted yet: everything is replicated
    assert late < 1.1  # a few percent audits on top of one run each
    assert net.wrong_accepted == 0
    assert all(net.book.run(w) >= 300 for w in net.workers)


def test_trust_snaps_back_when_a_worker_turns_bad() -> None:
    net = Network({f"w{i}": Worker() for i in range(6)})
    net.run(2000)
    assert net.book.run("w0") > 100
    net.workers["w0"] = Worker(frozenset(range(CHUNKS)))  # now wrong everywhere
    for _ in range(3):
        net.run_task("w0")
    assert net.book.run("w0") == 0
    assert net.book.score("w0", net.now) < TrustConfig().suspect_score
    plan = ReplicationPolicy(net.book).plan("w0", net.now, net.rng, chunks=CHUNKS)
    assert plan.replicas == 3  # replicated again, outvoted by honest peers
    before = net.wrong_accepted
    for _ in range(20):
        net.run_task("w0")
    assert net.wrong_accepted == before == 0


def test_a_subtle_cheater_is_caught_and_loses_its_trust() -> None:
    # wrong in one chunk of ten: each unreplicated task has a 30 % chance (3 spot checks) of catching it
    net = Network({f"w{i}": Worker() for i in range(6)})
    net.run(2000)
    net.workers["w0"] = Worker(frozenset({7}))
    tasks_until_caught = 0
    while net.book.run("w0") > 0:
        net.run_task("w0")
        tasks_until_caught += 1
        assert tasks_until_caught < 40
    caught_after = net.wrong_accepted
    for _ in range(50):
        net.run_task("w0")
    assert net.wrong_accepted == caught_after  # from now on it is outvoted every time
    assert caught_after <= tasks_until_caught
