"""Job model (task creation and metadata, split edge cases) and the worker's admission control."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.admission import AdmissionConfig, AdmissionControl, Verdict
from pangea_p2p.core.jobs.config import CoordinatorConfig, WorkerSource
from pangea_p2p.core.jobs.model import JobSpec, VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.reachability import Reachability
from pangea_p2p.core.jobs.scheduler import SchedulerConfig
from pangea_p2p.core.jobs.splitting import split_coordinator, split_task
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import ConfigError
from tests.core.jobs.helpers import LIMITS, MODULE_CID, task, worker


def spec(chunks: int = 10, per_task: int = 3, **kw: object) -> JobSpec:
    cids = tuple(cid_of(bytes([i])) for i in range(chunks))
    return JobSpec("job1", MODULE_CID, cids, tuple(1 for _ in cids), LIMITS, chunks_per_task=per_task, **kw)  # type: ignore[arg-type]


def test_tasks_cover_every_chunk_once_in_order() -> None:
    s = spec(10, 3)
    assert s.task_count == 4
    assert s.task_ids() == ["job1/t0", "job1/t1", "job1/t2", "job1/t3"]
    ranges = [list(s.task_chunks(i)) for i in range(s.task_count)]
    assert ranges == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # uneven: the last task is shorter


def test_one_chunk_and_one_task_per_chunk() -> None:
    assert spec(1, 1).task_count == 1
    assert spec(5, 1).task_count == 5
    assert spec(5, 5).task_count == 1


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"job_id": "has space"}, "job_id"),
        ({"job_id": "a/b"}, "job_id"),
        ({"chunks_per_task": 0}, "chunks_per_task"),
        ({"chunks_per_task": 11}, "chunks_per_task"),
        ({"retries_max": 99}, "retries_max"),
        ({"depth_max": 9}, "depth_max"),
        ({"queue_timeout_s": 0}, "queue_timeout_s"),
    ],
)
def test_spec_validation_names_the_field(kw: dict[str, object], key: str) -> None:
    base = spec()
    with pytest.raises(ConfigError, match=key):
        replace(base, **kw)  # type: ignore[arg-type]


def test_empty_job_rejected() -> None:
    with pytest.raises(ConfigError, match="chunks"):
        JobSpec("j", MODULE_CID, (), (), LIMITS)


@pytest.mark.parametrize(
    ("text", "mode", "k"),
    [("hash", VerificationMode.HASH, None), ("spot:3", VerificationMode.SPOT, 3),
     ("replicas:5", VerificationMode.REPLICAS, 5), ("adaptive", VerificationMode.ADAPTIVE, None)],
)
def test_verification_policy_parse(text: str, mode: VerificationMode, k: int | None) -> None:
    policy = VerificationPolicy.parse(text)
    assert policy.mode is mode
    assert str(policy) == text
    if mode is VerificationMode.SPOT:
        assert policy.spot_checks == k
    if mode is VerificationMode.REPLICAS:
        assert policy.replicas == k


@pytest.mark.parametrize("bad", ["fast", "spot:x", "replicas:0", "hash:2"])
def test_verification_policy_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ConfigError, match="verification"):
        VerificationPolicy.parse(bad)


def test_a_split_tasks_coordinator_decides_by_the_peers_coordinator_config() -> None:
    chunks = [bytes([i]) for i in range(4)]
    framed = frame_chunks(chunks)
    parent = replace(task("j/t0", chunks=4), input_cid=cid_of(framed), input_bytes=len(framed))
    parts = [p for p, _ in split_task(parent, framed, 2, "middle")]
    config = CoordinatorConfig(timeout_factor=6.0, scheduler=SchedulerConfig(trust_floor=-1.0))
    made = {}
    for given in (config, None):
        made[given] = split_coordinator(
            "middle", parts, trust=TrustBook(), guard=ReplayGuard(VerifyConfig()), source=WorkerSource(
                lambda now: [worker("a"), worker("b")], lambda now: None),
            rng=random.Random(1), now=0.0, inflight={}, reachability=Reachability(), config=given)
    assert made[config].config is config
    assert made[None].config == CoordinatorConfig()


def test_split_task_metadata_and_inputs() -> None:
    chunks = [bytes([i]) * (i + 1) for i in range(7)]
    framed = frame_chunks(chunks)
    parent = replace(task("j/t3", chunks=7), input_cid=cid_of(framed), input_bytes=len(framed))
    parts = split_task(parent, framed, 3, "middle")
    assert [p.task_id for p, _ in parts] == ["j/t3.0", "j/t3.1", "j/t3.2"]
    assert [p.chunk_count for p, _ in parts] == [3, 2, 2]
    rebuilt = [c for _, data in parts for c in unframe_chunks(data)]
    assert rebuilt == chunks
    for k, (p, data) in enumerate(parts):
        assert p.parent_task_id == "j/t3"
        assert p.issuer == "middle"
        assert p.depth == parent.depth + 1
        assert p.path == (*parent.path, "middle")
        assert (p.partition_index, p.partition_count) == (k, 3)
        assert p.input_cid == cid_of(data)
        assert p.module_cid == parent.module_cid
    assert sum(p.limits.fuel_max for p, _ in parts) <= parent.limits.fuel_max


def svc(slots: int = 2, queue: int = 0, **kw: object) -> AdmissionControl:
    return AdmissionControl("me", AdmissionConfig(slots=slots, queue_max=queue, **kw))  # type: ignore[arg-type]


def test_admission_runs_within_capacity_then_rejects_busy() -> None:
    w = svc(slots=2)
    assert w.admit(task("j/a"), "submitter", [], 0.0).verdict is Verdict.RUN
    assert w.admit(task("j/b"), "submitter", [], 0.0).verdict is Verdict.RUN
    assert w.free_slots() == 0
    busy = w.admit(task("j/c"), "submitter", [], 0.0)
    assert busy.verdict is Verdict.REJECT
    assert "busy" in busy.reason
    w.release("j/a")
    assert w.admit(task("j/c"), "submitter", [], 0.0).verdict is Verdict.RUN


@pytest.mark.parametrize(
    ("offer", "sender", "why"),
    [
        (task(path=("submitter", "me")), "submitter", "cycle"),
        (task(depth=3, depth_max=2), "submitter", "depth 3"),
        (task(), "someone-else", "came from someone-else"),
        (task(fuel=10**16), "submitter", "fuel_max"),
        (task(memory=2 << 30), "submitter", "memory_bytes_max"),
        (task(input_bytes=1 << 40), "submitter", "input of"),
    ],
)
def test_admission_refuses_rule_breaking_offers(offer: object, sender: str, why: str) -> None:
    verdict = svc().admit(offer, sender, [], 0.0)  # type: ignore[arg-type]
    assert verdict.verdict is Verdict.REJECT
    assert why in verdict.reason


def test_the_same_task_is_not_admitted_twice() -> None:
    w = svc()
    w.admit(task("j/a"), "submitter", [], 0.0)
    assert "already running" in w.admit(task("j/a"), "submitter", [], 0.0).reason


def test_admission_splits_a_task_too_big_for_this_peer() -> None:
    w = svc(speed_fuel_per_s=1e7)
    big = task("j/big", chunks=16, fuel=10**10)  # 100 s on the best neighbour, 1000 s here
    neighbours = [worker(p, speed=1e8) for p in "abc"]
    verdict = w.admit(big, "submitter", neighbours, 0.0)
    assert verdict.verdict is Verdict.SPLIT
    assert verdict.parts >= 2
    assert "split" in verdict.reason


def test_worker_config_validated() -> None:
    with pytest.raises(ConfigError, match=r"compute\.slots"):
        AdmissionConfig(slots=0)
    with pytest.raises(ConfigError, match=r"compute\.input_bytes_max"):
        AdmissionConfig(input_bytes_max=1)
    assert ReceiptLimits is not None


def test_split_admissions_count_toward_the_admission_bound() -> None:
    # A task this peer splits costs it a coordinator and its neighbours' slots: an issuer must not be able to
    # make it split without bound while its advert still shows free slots.
    s = svc(slots=1, queue=1, speed_fuel_per_s=1e7)
    neighbours = [worker(p, speed=1e8) for p in "abc"]

    def offer(task_id: str) -> Verdict:
        return s.admit(task(task_id, chunks=16, fuel=10**10), "submitter", neighbours, 0.0).verdict

    assert [offer("j/t0"), offer("j/t1")] == [Verdict.SPLIT, Verdict.SPLIT]
    refused = s.admit(task("j/t2", chunks=16, fuel=10**10), "submitter", neighbours, 0.0)
    assert refused.verdict is Verdict.REJECT
    assert "busy" in refused.reason
    s.release("j/t0")
    assert offer("j/t2") is Verdict.SPLIT
