"""The job endpoints of the HTTP API the SDK and `pangea job` call: a bad job request is a 400 that names the
field (parse_job_request), checked directly and through the router, with no socket."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.model import DEFAULT_OPTIONS, VerificationMode
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.node import api
from pangea_p2p.node.api import ApiError, Router
from pangea_p2p.node.job_routes import WAIT_S_MAX, add_job_routes, check_unadvertised_limits, parse_job_request

NOW = 1_750_000_000.0
CHUNKS = [b"first chunk", b"second", b"third and last"]
MODULE = b"\x00asm\x01\x00\x00\x00"


class Blocks:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, cid: str) -> bytes | None:
        return self.data.get(cid)

    def put(self, data: bytes, persist: bool = False) -> str:
        self.data[cid_of(data)] = bytes(data)
        return cid_of(data)


class Compute:
    """What parse_job_request and the block and job routes use of the node's ComputeService."""

    def __init__(self) -> None:
        self.blocks = Blocks()
        self.jobs: dict[str, Any] = {}
        self.submitted: list[Any] = []
        self.self_id = "12D3KooWSubmitter"
        self.admission = SimpleNamespace(config=AdmissionConfig())  # this peer's own limits as a worker
        for chunk in [*CHUNKS, MODULE]:
            self.blocks.put(chunk)

    def submit(self, spec: Any, now: float) -> Any:
        self.submitted.append(spec)
        raise AssertionError("a test submitted a job")


def request(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"module_cid": cid_of(MODULE), "chunk_cids": [cid_of(c) for c in CHUNKS]}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def bad_request(doc: Any, code: str = "bad_request") -> str:
    with pytest.raises(ApiError) as info:
        parse_job_request(doc, Compute().blocks, NOW)
    assert (info.value.status, info.value.code) == (400, code)
    return info.value.message


def test_a_minimal_request_gets_the_defaults() -> None:
    spec = parse_job_request(request(), Compute().blocks, NOW)
    assert spec.module_cid == cid_of(MODULE)
    assert spec.chunk_cids == tuple(cid_of(c) for c in CHUNKS)
    assert spec.chunk_sizes == tuple(len(c) for c in CHUNKS)
    assert spec.limits == DEFAULT_OPTIONS.limits.receipt_limits()
    assert (spec.limits.fuel_max, spec.limits.memory_bytes_max, spec.limits.wall_time_s,
            spec.limits.output_bytes_max) == (10_000_000_000, 100 << 20, 30.0, 16 << 20)  # as before JobRequest
    assert spec.chunks_per_task == 1
    assert spec.verification.mode is VerificationMode.HASH
    assert spec.deadline_s == NOW + 86400.0  # a day by default
    assert (spec.retries_max, spec.escalations_max, spec.depth_max) == (3, 2, 2)
    assert len(spec.job_id) == 16


def test_every_field_is_taken() -> None:
    spec = parse_job_request(request(
        job_id="my-job", chunks_per_task=2, limits={"fuel_max": 1000, "wall_time_s": 2}, verification="replicas:5",
        deadline_s=30, retries_max=0, escalations_max=1, depth_max=0, queue_timeout_s=5.5,
        fuel_per_chunk_estimate=77), Compute().blocks, NOW)
    assert spec.job_id == "my-job"
    assert spec.task_count == 2
    assert (spec.limits.fuel_max, spec.limits.wall_time_s) == (1000, 2.0)
    assert spec.limits.memory_bytes_max == DEFAULT_OPTIONS.limits.memory_bytes_max
    assert (spec.verification.mode, spec.verification.replicas) == (VerificationMode.REPLICAS, 5)
    assert spec.deadline_s == NOW + 30
    assert (spec.retries_max, spec.escalations_max, spec.depth_max) == (0, 1, 0)
    assert (spec.queue_timeout_s, spec.fuel_per_chunk_estimate) == (5.5, 77)


@pytest.mark.parametrize("doc", [None, [], "job", 3])
def test_the_request_must_be_an_object(doc: Any) -> None:
    assert bad_request(doc).startswith("config request: the job request must be a JSON object, got ")


def test_an_unknown_field_is_named() -> None:
    message = bad_request(request(chunk_size=4))
    assert message.startswith("config chunk_size: unknown field; known: ")
    assert "chunks_per_task" in message


@pytest.mark.parametrize("chunk_cids", [..., "bafkrei", [1, 2], None, {"a": 1}])
def test_chunk_cids_must_be_a_list_of_strings(chunk_cids: Any) -> None:
    assert bad_request(request(chunk_cids=chunk_cids)) == "config chunk_cids: must be a list of content ids"


def test_a_chunk_not_in_the_block_store_is_named() -> None:
    missing = cid_of(b"never uploaded")
    message = bad_request(request(chunk_cids=[cid_of(CHUNKS[0]), missing]), code="missing_block")
    assert message == f"chunk {missing} is not in this peer's block store (POST it first)"


@pytest.mark.parametrize("module_cid", [..., "", 7])
def test_module_cid_must_be_a_non_empty_string(module_cid: Any) -> None:
    assert bad_request(request(module_cid=module_cid)).startswith("config module_cid: must be a non-empty content id")


@pytest.mark.parametrize("limits", [[], "big", {"fuel": 10}])
def test_limits_must_be_an_object_of_known_keys(limits: Any) -> None:
    assert bad_request(request(limits=limits)).startswith("config limits: must be an object with keys among fuel_max")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"chunk_cids": []}, "config chunk_cids: need 1..1048576 chunks, got 0"),
        ({"chunks_per_task": 0}, "config chunks_per_task:"),
        ({"chunks_per_task": 4}, "config chunks_per_task: must be in 1..3, got 4"),
        ({"verification": "bogus"}, "config verification: 'bogus'"),
        ({"verification": "spot:x"}, "config verification: 'spot:x': 'x' is not a number"),
        ({"retries_max": 99}, "config retries_max:"),
        ({"depth_max": 9}, "config depth_max:"),
        ({"queue_timeout_s": 0}, "config queue_timeout_s:"),
        ({"job_id": "a/b"}, "config job_id:"),
        ({"limits": {"fuel_max": -1}}, "limits.fuel_max"),
        ({"limits": {"wall_time_s": "long"}}, "limits.wall_time_s"),
        # the value has the wrong type: the message still names the field
        ({"chunks_per_task": "two"}, "chunks_per_task"),
        ({"retries_max": [3]}, "retries_max"),
        ({"escalations_max": None}, "escalations_max"),
        ({"depth_max": "deep"}, "depth_max"),
        ({"queue_timeout_s": "soon"}, "queue_timeout_s"),
        ({"fuel_per_chunk_estimate": "many"}, "fuel_per_chunk_estimate"),
        ({"deadline_s": "tomorrow"}, "deadline_s"),
        ({"job_id": 5}, "job_id"),
        ({"chunks_per_task": 1.5}, "chunks_per_task"),
        ({"chunks_per_task": True}, "chunks_per_task"),
        # values the network cannot carry
        ({"deadline_s": -5}, "deadline_s"),
        ({"deadline_s": math.nan}, "deadline_s"),
        ({"fuel_per_chunk_estimate": -1}, "fuel_per_chunk_estimate"),
        ({"fuel_per_chunk_estimate": 1 << 64}, "fuel_per_chunk_estimate"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_field(changes: dict[str, Any], field: str) -> None:
    assert field in bad_request(request(**changes))


# --- through the router -----------------------------------------------------------------------------------


def router() -> tuple[Router, Compute]:
    r, compute = Router(), Compute()
    add_job_routes(r, compute)  # type: ignore[arg-type]
    return r, compute


async def test_post_job_with_a_bad_field_answers_400_naming_it() -> None:
    r, compute = router()
    response = await r.dispatch("POST", "/v1/jobs", json.dumps(request(chunks_per_task="x")).encode())
    assert response.status == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "bad_request"
    assert "chunks_per_task" in error["message"]
    response = await r.dispatch("POST", "/v1/jobs", b"{not json")
    assert (response.status, json.loads(response.body)["error"]["code"]) == (400, "bad_json")
    assert compute.submitted == []


async def test_post_job_with_an_unknown_module_answers_400() -> None:
    r, _ = router()
    missing = cid_of(b"not uploaded")
    response = await r.dispatch("POST", "/v1/jobs", json.dumps(request(module_cid=missing)).encode())
    assert response.status == 400
    assert json.loads(response.body)["error"] == {
        "code": "missing_block", "message": f"module {missing} is not in this peer's block store"}


async def test_blocks_and_chunks_round_trip() -> None:
    r, compute = router()
    response = await r.dispatch("POST", "/v1/chunks", frame_chunks([b"x", b"", b"yz"]))
    assert response.status == 200
    cids = json.loads(response.body)["cids"]
    assert cids == [cid_of(b"x"), cid_of(b""), cid_of(b"yz")]
    assert compute.blocks.get(cids[0]) == b"x"
    got = await r.dispatch("GET", f"/v1/blocks/{cids[2]}", b"")
    assert (got.status, got.body) == (200, b"yz")
    bad = await r.dispatch("POST", "/v1/chunks", b"\x05\x00")
    assert (bad.status, json.loads(bad.body)["error"]["code"]) == (400, "bad_chunks")
    missing = await r.dispatch("GET", f"/v1/blocks/{cid_of(b'nothing')}", b"")
    assert missing.status == 404
    unknown = await r.dispatch("GET", "/v1/jobs/nope", b"")
    assert (unknown.status, json.loads(unknown.body)["error"]["code"]) == (404, "no_such_job")


async def test_status_explain_result_and_trust_show_audits_corrections_and_evidence() -> None:
    from pangea_p2p.core.jobs.model import JobState
    from pangea_p2p.core.trust import TrustBook, TrustConfig
    from pangea_p2p.node.compute import JobWatch
    from tests.core.jobs.coord_driver import Driver, FakeWorker, chunks_for, pid

    # two colluders agree on a wrong answer; every result is audited here and corrected
    d = Driver([FakeWorker("x", behaviour="byzantine"), FakeWorker("y", behaviour="byzantine")], chunks_for(1),
               policy="replicas:2", trust=TrustBook(TrustConfig(audit_rate_new=1.0, audit_budget=1.0)))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    r, compute = router()
    compute.jobs["job"] = d.job
    compute.trust = d.trust  # type: ignore[attr-defined]
    compute.watch = lambda job_id: JobWatch()  # type: ignore[attr-defined]
    status = json.loads((await r.dispatch("GET", "/v1/jobs/job", b"")).body)
    assert status["audits"]["corrected"] == 1
    explain = json.loads((await r.dispatch("GET", "/v1/jobs/job/explain", b"")).body)
    assert list(explain["corrections"]) == ["job/t0"]
    result = json.loads((await r.dispatch("GET", "/v1/jobs/job/result", b"")).body)
    (task,) = result["tasks"]
    assert task["audit"] == "corrected"
    assert len(task["corrections"]) == 1
    assert result["workers"] == [d.submitter]
    rows = {row["peer_id"]: row for row in json.loads((await r.dispatch("GET", "/v1/trust", b"")).body)["trust"]}
    assert rows[pid("x")]["lies"] == rows[pid("y")]["lies"] == 1


async def test_the_evidence_pages_of_a_done_job_verify_with_the_sdk_and_tampering_is_caught() -> None:
    from pangea_p2p.core.jobs.evidence import decode_page
    from pangea_p2p.core.jobs.model import JobState
    from pangea_p2p.sdk.verify import verify_job
    from tests.core.jobs.coord_driver import Driver, FakeWorker, chunks_for

    d = Driver([FakeWorker("x"), FakeWorker("y")], chunks_for(3, per_task=2))
    d.start()
    d.run_to_end()
    assert d.job.state is JobState.DONE
    r, compute = router()
    compute.jobs["job"] = d.job
    compute.blocks = d.blocks  # type: ignore[assignment]
    compute.self_id = d.submitter

    async def pages(**query: object) -> dict[int, bytes]:
        """Every page, by start, as the API answers them (what a Client's job_evidence returns)."""
        out: dict[int, bytes] = {}
        start: int | None = 0
        while start is not None:
            response = await r.dispatch("GET", f"/v1/jobs/job/evidence?start={start}" + "".join(
                f"&{k}={v}" for k, v in query.items()), b"")
            assert (response.status, response.content_type) == (200, "application/octet-stream")
            out[start] = response.body
            start = decode_page(response.body).next
        return out

    class Api:
        def __init__(self, answers: dict[int, bytes]) -> None:
            self.answers = answers

        def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
            return self.answers[start]

    answers = await pages()
    (page,) = [decode_page(a) for a in answers.values()]
    result = json.loads((await r.dispatch("GET", "/v1/jobs/job/result", b"")).body)
    assert [t.fields for t in page.tasks] == [{**t, "worker": w, "output_cid": o} for t, w, o in
                                              zip(result["tasks"], result["workers"], result["outputs"], strict=True)]
    assert [t.tree.hex() for t in page.tasks] == result["receipts"]
    assert all(t.input and t.output for t in page.tasks)
    report = verify_job(Api(answers), "job", chunk_cids=list(d.job.spec.chunk_cids))  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert (report.tasks, report.receipts) == (3, 3)
    # without inputs
    (plain,) = (await pages(inputs=0)).values()
    assert [t.input for t in decode_page(plain).tasks] == [b"", b"", b""]
    assert verify_job(Api({0: plain}), "job", check_inputs=False).ok  # type: ignore[arg-type]
    # an output the peer changed after the receipt was signed
    output_cid = result["outputs"][1]
    d.blocks.data[output_cid] = frame_chunks([b"forged", b"output"])
    report = verify_job(Api(await pages()), "job")  # type: ignore[arg-type]
    assert list(report.problems) == ["job/t1"]
    assert report.problems["job/t1"].startswith("cid-mismatch:")
    bad = await r.dispatch("GET", "/v1/jobs/job/evidence?start=4", b"")
    assert (bad.status, json.loads(bad.body)["error"]["message"]) == (400, "start must be in 0..3, got 4")


# --- values no peer could take, job ids, waits --------------------------------------------------------------


async def test_an_output_above_this_peers_maximum_is_refused_at_submit() -> None:
    """Peers do not advertise their output maximum, so placement cannot avoid it: refused at once, not after four
    failed attempts."""
    r, compute = router()
    response = await r.dispatch("POST", "/v1/jobs", json.dumps(request(limits={"output_bytes_max": 32 << 20})).encode())
    assert response.status == 400
    assert json.loads(response.body)["error"] == {"code": "bad_request", "message": (
        "config limits.output_bytes_max: must be in 0..16777216 (this peer's compute.output_bytes_max; peers do not "
        "advertise theirs), got 33554432")}
    assert compute.submitted == []


def test_what_this_peer_accepts_passes_and_a_task_input_above_its_maximum_does_not() -> None:
    local = AdmissionConfig(limits_max=ReceiptLimits(10**10, 100 << 20, 30.0, 1000), input_bytes_max=1024)
    blocks = Compute().blocks
    for chunk in (b"a" * 600, b"b" * 500):
        blocks.put(chunk)
    cids = [cid_of(b"a" * 600), cid_of(b"b" * 500)]
    fits = parse_job_request(request(chunk_cids=cids, limits={"output_bytes_max": 1000}), blocks, NOW)
    check_unadvertised_limits(fits, local)  # 1000 bytes of output, inputs of 600 and 500 bytes: every peer may
    both = parse_job_request(request(chunk_cids=cids, chunks_per_task=2, limits={"output_bytes_max": 1000}), blocks,
                             NOW)
    with pytest.raises(ApiError) as info:
        check_unadvertised_limits(both, local)
    assert info.value.message == (
        "config chunks_per_task: a task's input must be at most 1024 bytes (this peer's compute.input_bytes_max; "
        "peers do not advertise theirs), got 1100: use fewer or smaller chunks per task")
    with pytest.raises(ApiError, match=r"limits\.output_bytes_max: must be in 0\.\.1000 "):
        check_unadvertised_limits(parse_job_request(request(chunk_cids=cids), blocks, NOW), local)


@pytest.mark.parametrize("job_id", ["a%3Fb", "a%00b", "a%0Ab", "x" * 65, "a.b", "%2F", "a+b"])
async def test_a_job_id_no_job_can_have_is_a_400_in_every_path(job_id: str) -> None:
    r, _ = router()
    for suffix in ("", "/wait", "/result", "/explain", "/logs"):
        response = await r.dispatch("GET", f"/v1/jobs/{job_id}{suffix}", b"")
        assert response.status == 400
        error = json.loads(response.body)["error"]
        assert error["code"] == "bad_job_id"
        assert error["message"].endswith("must be 1..64 characters of A-Z a-z 0-9 - _")
    assert (await r.dispatch("DELETE", f"/v1/jobs/{job_id}", b"")).status == 400


def running_job() -> tuple[Router, Any]:
    """A router over a job that is running (its tasks offered, no answer yet) and the job's watch."""
    from pangea_p2p.node.compute import JobWatch
    from tests.core.jobs.coord_driver import Driver, FakeWorker, chunks_for

    d = Driver([FakeWorker("x")], chunks_for(2), policy="hash", auto=False)
    d.start()
    assert not d.job.state.final
    r, compute = router()
    watch = JobWatch()
    compute.jobs["job"] = d.job
    compute.watch = lambda job_id: watch  # type: ignore[attr-defined]
    return r, watch


@pytest.mark.parametrize("query", ["timeout_s=-1", "timeout_s=nan", "timeout_s=inf", "timeout_s=-inf",
                                   "timeout_s=soon", "timeout_s=1e999", "seen=x", "seen=1.5"])
async def test_a_bad_wait_is_a_400_naming_it(query: str) -> None:
    r, _ = running_job()
    response = await r.dispatch("GET", f"/v1/jobs/job/wait?{query}", b"")
    assert response.status == 400
    error = json.loads(response.body)["error"]
    name = query.partition("=")[0]
    assert error["code"] == "bad_request"
    assert error["message"].startswith(f"{name} must be ")
    assert "\n" not in error["message"]


@pytest.mark.parametrize(("timeout_s", "waited"), [(0, 0), (3, 3), (WAIT_S_MAX, WAIT_S_MAX), (40, WAIT_S_MAX),
                                                   (59.5, WAIT_S_MAX), (1e9, WAIT_S_MAX)])
async def test_every_wait_is_answered_within_the_cap(autojump_clock: trio.testing.MockClock, timeout_s: float,
                                                     waited: float) -> None:
    """A wait longer than WAIT_S_MAX is answered at WAIT_S_MAX with the status as it is (once 30..60 s closed the
    connection unanswered: the connection timeout was 30 s and the cap 60 s)."""
    r, _ = running_job()
    start = trio.current_time()
    response = await r.dispatch("GET", f"/v1/jobs/job/wait?timeout_s={timeout_s}&seen=0", b"")
    assert response.status == 200
    assert json.loads(response.body)["state"] == "running"
    assert trio.current_time() - start == pytest.approx(waited)


async def test_a_wait_returns_when_the_job_changes(autojump_clock: trio.testing.MockClock) -> None:
    r, watch = running_job()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()

        async def change() -> None:
            await trio.sleep(2)
            watch.bump()

        nursery.start_soon(change)
        response = await r.dispatch("GET", "/v1/jobs/job/wait?timeout_s=20&seen=0", b"")
    assert json.loads(response.body)["version"] == 1
    assert trio.current_time() - start == pytest.approx(2)


def test_a_wait_is_answered_before_anything_gives_up_on_it() -> None:
    """The class of the 30..60 s bug: the wait cap sits below the API's handler timeout and the SDK client's
    default read timeout (whose waits ask for at most half of it)."""
    from pangea_p2p.sdk.client import Client

    with Client("127.0.0.1:9") as client:
        assert client.timeout_s > WAIT_S_MAX
    assert WAIT_S_MAX < api.HANDLER_TIMEOUT_S
