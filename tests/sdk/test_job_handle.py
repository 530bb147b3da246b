"""Job.submit / Job.run and JobHandle against an in-memory peer (tests/sdk/fakes.py): the request the SDK
sends passes the node's own request parser, progress arrives in order, failures carry their reasons."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

import pytest

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import CHUNKS_PER_JOB_MAX, TASKS_PER_JOB_MAX, JobOptions, VerificationPolicy
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.errors import ConfigError, PangeaError
from pangea_p2p.guests import load_guest
from pangea_p2p.sdk import Job, JobFailed, Limits, Progress, UncheckedResultWarning, splits
from pangea_p2p.sdk.client import ApiCallFailed
from pangea_p2p.sdk.job import fit_chunking
from tests.sdk.fakes import NOW, WORKERS, FakePeer


def sha_job(**kwargs: Any) -> Job[list[bytes]]:
    job: Job[list[bytes]] = Job("sha", guest="sha256", **kwargs)
    job.split(lambda data: splits.fixed_size(data, 10))
    job.merge(lambda outputs: outputs)
    return job


DATA = bytes(range(200)) + b"the end"
EXPECTED = [hashlib.sha256(c).digest() for c in splits.fixed_size(DATA, 10)]  # 21 chunks


def test_submit_uploads_the_module_and_chunks_and_sends_a_valid_request() -> None:
    peer = FakePeer()
    job = sha_job(chunks_per_task=4, verification="spot:2", retries_max=1, depth_max=0, deadline_s=90.0,
                  fuel_per_chunk_estimate=5000, limits=Limits(fuel_max=10**9, memory_bytes_max=1 << 20,
                                                              wall_time_s=5.0, output_bytes_max=4096))
    handle = job.submit(DATA, peer)  # type: ignore[arg-type]
    (request,) = peer.requests
    assert request["module_cid"] == cid_of(load_guest("sha256"))
    assert peer.blocks[request["module_cid"]] == load_guest("sha256")
    assert [peer.blocks[c] for c in request["chunk_cids"]] == splits.fixed_size(DATA, 10)
    assert request["chunks_per_task"] == 4
    assert request["limits"] == {"fuel_max": 10**9, "memory_bytes_max": 1 << 20, "wall_time_s": 5.0,
                                 "output_bytes_max": 4096}
    assert request["verification"] == "spot:2"
    assert (request["retries_max"], request["depth_max"], request["fuel_per_chunk_estimate"]) == (1, 0, 5000)
    assert request["deadline_s"] == 90.0
    spec = peer.runs[handle.job_id].spec
    assert spec.task_count == 6  # 21 chunks, 4 per task
    assert handle.last_status["state"] == "running"


def test_every_option_of_a_job_request_is_a_job_argument() -> None:
    peer = FakePeer()
    arguments = {"chunks_per_task": 2, "limits": Limits(fuel_max=10**9), "verification": "replicas:5",
                 "deadline_s": 90.0, "retries_max": 0, "escalations_max": 1, "depth_max": 0, "queue_timeout_s": 5.5,
                 "fuel_per_chunk_estimate": 77}
    assert set(arguments) == {f.name for f in dataclasses.fields(JobOptions)}
    job = sha_job(**arguments)
    handle = job.submit(DATA, peer, job_id="named")  # type: ignore[arg-type]
    (request,) = peer.requests
    assert JobRequest.from_json(request) == JobRequest(
        request["module_cid"], tuple(request["chunk_cids"]), job.options, "named")
    assert job.options == JobOptions(**{**arguments, "verification": VerificationPolicy.parse("replicas:5")})
    spec = peer.runs["named"].spec
    assert (handle.job_id, spec.escalations_max, spec.queue_timeout_s, spec.deadline_s) == ("named", 1, 5.5,
                                                                                            NOW + 90.0)


@pytest.mark.parametrize(
    ("arguments", "key"),
    [({"retries_max": 99}, "retries_max"), ({"escalations_max": -1}, "escalations_max"),
     ({"queue_timeout_s": 0}, "queue_timeout_s"), ({"depth_max": 9}, "depth_max"),
     ({"deadline_s": -1.0}, "deadline_s"), ({"fuel_per_chunk_estimate": -5}, "fuel_per_chunk_estimate")],
)
def test_a_bad_job_argument_is_refused_when_the_job_is_defined(arguments: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        sha_job(**arguments)
    assert info.value.key == key


def test_a_bad_job_id_is_refused_before_anything_is_uploaded() -> None:
    peer = FakePeer()
    with pytest.raises(ConfigError, match="job_id"):
        sha_job().submit(DATA, peer, job_id="has space")  # type: ignore[arg-type]
    assert (peer.blocks, peer.requests) == ({}, [])


def test_chunks_per_task_is_capped_at_the_chunk_count_and_the_default_deadline_is_sent() -> None:
    peer = FakePeer()
    sha_job(chunks_per_task=50).submit(b"short", peer)  # type: ignore[arg-type]
    (request,) = peer.requests
    assert request["chunks_per_task"] == 1
    assert request["deadline_s"] == 86400.0  # the default: a day


def test_run_returns_what_run_local_returns_and_reports_progress_in_order() -> None:
    peer = FakePeer()
    job = sha_job(chunks_per_task=5)
    seen: list[Progress] = []
    got = job.run(DATA, peer, progress=seen.append, progress_interval_s=0)  # type: ignore[arg-type]
    assert got == EXPECTED == job.run_local(DATA)
    assert [s["version"] for s in seen] == list(range(1, 6 + 1))  # 5 tasks: versions 1..5 then the final one
    assert [s["progress"]["done"] for s in seen] == [1, 2, 3, 4, 5, 5]
    assert seen[-1]["state"] == "done"
    assert all(s["state"] == "running" for s in seen[:-1])
    job_id = seen[-1]["job_id"]
    assert peer.waits == [(job_id, v) for v in range(6)]  # each long-poll names the version it has seen


def test_progress_is_one_readable_line_per_interval_and_always_the_final_status() -> None:
    peer = FakePeer()
    seen: list[Progress] = []
    sha_job(chunks_per_task=5).run(DATA, peer, progress=seen.append, progress_interval_s=3600)  # type: ignore[arg-type]
    assert len(peer.waits) == 6  # six status changes, shown: the first one and the final one
    assert [str(p) for p in seen] == ["1/5 tasks done, 1 running, ETA 2.0 s", "5/5 tasks done in 3.0 s"]
    assert (seen[0].done, seen[0].total, seen[0].running, seen[0].eta_s) == (1, 5, 1, 2.0)


def status(state: str = "running", eta_s: float | None = None, elapsed_s: float = 1.0, reason: str = "",
           **counts: int) -> Progress:
    progress = {"pending": 0, "running": 0, "verifying": 0, "done": 0, "failed": 0, "cancelled": 0, **counts}
    return Progress({"state": state, "reason": reason, "tasks_total": 40, "progress": progress, "eta_s": eta_s,
                     "elapsed_s": elapsed_s, "version": 3})


@pytest.mark.parametrize(("p", "line"), [
    (status(done=12, running=1, verifying=1, eta_s=3.2), "12/40 tasks done, 2 running, ETA 3.2 s"),
    (status(done=0, pending=40), "0/40 tasks done, 0 running"),
    (status(done=1, running=2, failed=1, eta_s=75), "1/40 tasks done, 2 running, 1 failed, ETA 75 s"),
    (status(done=1, running=2, eta_s=600), "1/40 tasks done, 2 running, ETA 10 min"),
    (status(done=1, eta_s=0.25), "1/40 tasks done, 0 running, ETA 0.25 s"),
    (status("done", done=40, elapsed_s=12.4), "40/40 tasks done in 12 s"),
    (status("cancelled", done=3, cancelled=37, reason="cancelled by the submitter"),
     "3/40 tasks done in 1.0 s, 37 cancelled (cancelled: cancelled by the submitter)"),
])
def test_a_progress_line(p: Progress, line: str) -> None:
    assert str(p) == line
    assert p["version"] == 3  # still the status document


def test_a_failed_jobs_progress_line_names_the_failures_and_the_reason() -> None:
    peer = FakePeer()
    job = sha_job(chunks_per_task=5, limits=Limits(fuel_max=1))  # every task runs out of fuel
    seen: list[Progress] = []
    with pytest.raises(JobFailed):
        job.run(DATA, peer, progress=seen.append)  # type: ignore[arg-type]
    line = str(seen[-1])
    assert line.startswith("0/5 tasks done in 0.50 s, 5 failed (failed: task ")
    assert "\n" not in line


def test_more_chunks_than_a_job_may_have_tasks_run_several_chunks_per_task(caplog: pytest.LogCaptureFixture) -> None:
    options = JobOptions(chunks_per_task=1)
    with caplog.at_level(logging.WARNING, logger="pangea.sdk"):
        fitted = fit_chunking(options, TASKS_PER_JOB_MAX * 2 + 1)
    assert fitted.chunks_per_task == 3
    assert fitted.chunks_per_task == -(-(TASKS_PER_JOB_MAX * 2 + 1) // TASKS_PER_JOB_MAX)
    (record,) = caplog.records
    assert record.getMessage() == (f"{TASKS_PER_JOB_MAX * 2 + 1} chunks at 1 per task would be "
                                   f"{TASKS_PER_JOB_MAX * 2 + 1} tasks, at most {TASKS_PER_JOB_MAX}: running 3 chunks "
                                   "per task")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pangea.sdk"):
        assert fit_chunking(JobOptions(chunks_per_task=4), TASKS_PER_JOB_MAX * 3).chunks_per_task == 4
        assert fit_chunking(options, TASKS_PER_JOB_MAX).chunks_per_task == 1  # fits as it is: unchanged, silent
    assert not caplog.records


class RecordingPeer:
    """Takes uploads and a job request without running anything (FakePeer would run every task)."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []

    def upload_block(self, data: bytes) -> str:
        return cid_of(data)

    def upload_chunks(self, framed: bytes) -> list[str]:
        return [cid_of(c) for c in unframe_chunks(framed)]

    def submit_job(self, request: JobRequest) -> dict[str, Any]:
        self.requests.append(JobRequest.from_json(request.to_json()))  # what the peer parses (and checks)
        return {"job_id": "j", "state": "running", "version": 0}


def test_a_text_split_into_lines_with_more_lines_than_a_job_may_have_tasks_is_submitted() -> None:
    """The README's case: a 5 MB text split into one line per chunk made more tasks than a job may have."""
    peer = RecordingPeer()
    job: Job[int] = Job("lines", guest="echo")
    job.split(lambda data: data.splitlines(keepends=True))
    job.merge(len)
    job.submit(b"".join(b"word %d and more\n" % i for i in range(TASKS_PER_JOB_MAX + 10)), peer)  # type: ignore[arg-type]
    (request,) = peer.requests
    assert (len(request.chunk_cids), request.options.chunks_per_task) == (TASKS_PER_JOB_MAX + 10, 2)


def test_a_split_into_more_chunks_than_a_job_may_have_is_refused_before_uploading() -> None:
    peer = FakePeer()
    job: Job[int] = Job("tiny", guest="echo")
    job.split(lambda data: [b""] * (CHUNKS_PER_JOB_MAX + 1))
    job.merge(len)
    with pytest.raises(ConfigError, match=r"^config split: 1048577 chunks, a job takes at most 1048576: split into "
                                          r"fewer, larger chunks"):
        job.submit(b"", peer)  # type: ignore[arg-type]
    assert not peer.blocks


def test_outputs_and_receipts_of_a_done_job() -> None:
    peer = FakePeer()
    handle = sha_job(chunks_per_task=8).submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.wait()["state"] == "done"
    assert handle.outputs() == EXPECTED
    trees = [ReceiptTree.decode(r, VerifyConfig()) for r in handle.receipts()]
    assert len(trees) == 3
    assert [t.receipt.signer for t in trees] == [w.peer_id for w in WORKERS]
    assert [t.receipt.binding.chunk_count for t in trees] == [8, 8, 5]
    assert handle.status()["state"] == "done"


def test_a_failed_job_raises_job_failed_with_status_and_explain() -> None:
    peer = FakePeer()
    job: Job[list[bytes]] = Job("probe", guest="probe", chunks_per_task=2)
    job.split(lambda chunks: chunks)
    job.merge(lambda outputs: outputs)
    handle = job.submit([b"Ea", b"Eb", b"Ec", b"Tu"], peer)  # type: ignore[arg-type]
    with pytest.raises(JobFailed, match=rf"job {handle.job_id} failed: task {handle.job_id}/t1 failed") as info:
        handle.result()
    assert info.value.status["state"] == "failed"
    assert info.value.status["progress"]["failed"] == 1
    reasons = info.value.explain["tasks"][f"{handle.job_id}/t1"]["reasons"]
    assert "unreachable" in reasons[0]
    with pytest.raises(PangeaError, match=r"has 2 of 4 chunk\(s\) without output \(failed\); partial_outputs\(\)"):
        handle.outputs()
    partial = handle.partial_outputs()  # what the failed job did get done
    assert partial[2:] == [None, None]  # the second task (two chunks) failed
    assert partial[0] is not None
    assert partial[1] is not None


def test_wait_gives_up_after_its_timeout() -> None:
    peer = FakePeer()
    handle = sha_job().submit(DATA, peer)  # type: ignore[arg-type]
    with pytest.raises(PangeaError, match=rf"job {handle.job_id} still running after 0 s"):
        handle.wait(timeout_s=0)
    assert peer.waits == []


def test_cancel_ends_the_wait() -> None:
    peer = FakePeer()
    handle = sha_job().submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.cancel()["state"] == "cancelled"
    assert handle.status()["state"] == "cancelled"
    with pytest.raises(JobFailed, match="cancelled: cancelled by the submitter"):
        handle.result()


def test_explain_is_the_peers_document() -> None:
    peer = FakePeer()
    handle = sha_job().submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.explain() == {"job_id": handle.job_id, "state": "done", "reason": "", "tasks": {}}
    assert handle.explain(done=True) == {"job_id": handle.job_id, "state": "done", "reason": "", "tasks": {}}
    assert peer.explained == [(handle.job_id, False), (handle.job_id, True)]


def test_an_incomplete_job_uploads_nothing() -> None:
    peer = FakePeer()
    job: Job[None] = Job("no-merge", guest="echo")
    job.split(lambda data: [data])
    with pytest.raises(ConfigError, match="has no merge step"):
        job.submit(b"x", peer)  # type: ignore[arg-type]
    assert peer.blocks == {}
    assert peer.requests == []


def test_a_request_the_peer_refuses_surfaces_as_api_call_failed() -> None:
    peer = FakePeer(job_ids=["has a space"])
    with pytest.raises(ApiCallFailed, match="job_id") as info:
        sha_job().submit(DATA, peer)  # type: ignore[arg-type]
    assert (info.value.status, info.value.code) == (400, "bad_request")


def test_framed_outputs_on_the_peer_are_one_per_chunk() -> None:
    peer = FakePeer()
    handle = sha_job(chunks_per_task=7).submit(DATA, peer)  # type: ignore[arg-type]
    doc = peer.job_result(handle.job_id)
    assert [len(unframe_chunks(peer.block(c))) for c in doc["outputs"]] == [7, 7, 7]


def test_a_result_with_tasks_accepted_unchecked_warns_how_many_and_why() -> None:
    peer = FakePeer()
    job: Job[list[bytes]] = Job("sha", guest="sha256", verification="spot:1")
    job.split(lambda chunks: chunks)
    job.merge(lambda outputs: outputs)
    handle = job.submit([b"a", b"b"], peer)  # type: ignore[arg-type]
    run = peer.runs[handle.job_id]
    why = "1 of 2 task(s) accepted unchecked although the policy is spot:1: its spot check could not run here (busy)"
    run.statuses[-1].update(unchecked=1, reason=why)  # as the peer says it
    with pytest.warns(UncheckedResultWarning, match=r"accepted unchecked although the policy is spot:1"):
        outputs = handle.result()
    assert len(outputs) == 2


def test_corrections_are_what_the_peers_audits_changed() -> None:
    peer = FakePeer()
    handle = sha_job(chunks_per_task=8).submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.wait()["state"] == "done"
    assert handle.corrections() == {}
    doc = peer.runs[handle.job_id].doc
    doc["tasks"][1]["corrections"] = ["audit: this peer's re-execution gives ..."]
    assert handle.corrections() == {doc["tasks"][1]["task_id"]: ["audit: this peer's re-execution gives ..."]}
