"""HTTP API endpoints for blocks and jobs (what the SDK and `pangea job ...` call).

    POST   /v1/blocks                 raw bytes            -> {"cid", "size"}             (application/octet-stream)
    POST   /v1/chunks                 a framed chunk list  -> {"cids": [...]} (each chunk stored as a block; ditto)
    GET    /v1/blocks/{cid}           -> raw bytes
    POST   /v1/jobs                   JSON job request (pangea_p2p/core/jobs/request.py) -> job status
    GET    /v1/jobs                   -> {"jobs": [status, ...]}
    GET    /v1/jobs/{id}              -> status (progress, fuel, workers, ETA)
    GET    /v1/jobs/{id}/wait?timeout_s=S&seen=N -> status, after it changed (N = the status "version" seen) or
                                          S seconds (at most WAIT_S_MAX: a longer wait is answered then; ask again)
    GET    /v1/jobs/{id}/result       -> {"outputs": [cid per task], "receipts": [hex receipt tree per task],
                                          "workers", "issuer", "module_cid", "tasks": [binding fields per task]}
    GET    /v1/jobs/{id}/evidence?start=I&inputs=1 -> a page of the job's receipts, outputs and inputs, for an
                                          offline verifier (binary; pangea_p2p/core/jobs/evidence.py)
    GET    /v1/jobs/{id}/explain      -> the reason chain of every task that is not done (?all=1: of every task)
    GET    /v1/jobs/{id}/tasks?limit=N -> its first N tasks (default 1000) for a timeline: state, worker, backers,
                                          start_s / end_s (seconds after the job was created; null when not
                                          seen by this run of the peer), fuel, how it was verified
    DELETE /v1/jobs/{id}              -> cancel; status
    GET    /v1/trust                  -> {"trust": [{"peer_id", "score", "valid", "invalid", "timeouts",
                                             "outvoted", "lies", "proven", "vindicated"}, ...]}

Every bad value is a 400 naming it: the job request's fields and their ranges (``JobRequest``), limits above what
this peer accepts of what no peer advertises (``check_unadvertised_limits``), a job id in a path that no job can
have (``check_job_id``), a wait's ``timeout_s`` or ``seen``.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

import trio

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.evidence import TaskEvidence, encode_page
from pangea_p2p.core.jobs.model import JobSpec, TaskState, check_job_id
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.errors import ConfigError, RemoteProtocolError
from pangea_p2p.node.api import BYTES, ApiError, ApiRequest, ApiResponse, Router

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.behaviour import JobRun
    from pangea_p2p.core.jobs.tasks import TaskView
    from pangea_p2p.node.compute import ComputeService, JobWatch

# The longest a wait is held before it is answered with the status as it is: below the SDK client's 30 s read
# timeout and the API's HANDLER_TIMEOUT_S, so a wait is always answered before anything gives up on it.
WAIT_S_MAX = 25.0
TASKS_LIMIT_DEFAULT, TASKS_LIMIT_MAX = 1000, 10_000


class BlockSource(Protocol):
    def get(self, cid: str) -> bytes | None: ...


def job_status(run: JobRun, watch: JobWatch, now: float) -> dict[str, Any]:
    progress = run.progress()
    total = run.spec.task_count
    done = progress[TaskState.DONE.value]
    elapsed = (run.finished_s or now) - run.created_s
    eta = None
    if 0 < done < total and not run.state.final:
        eta = round(elapsed / done * (total - done), 3)
    return {
        "job_id": run.spec.job_id,
        "state": run.state.value,
        "reason": run.reason,
        "tasks_total": total,
        "progress": progress,
        "fraction_done": round(done / total, 4),
        "fuel_used": run.fuel_used(),
        "elapsed_s": round(elapsed, 3),
        "eta_s": eta,
        "workers": dict(sorted(run.workers.items())),
        "verification": str(run.spec.verification),
        "unchecked": len(run.unchecked()),  # tasks accepted without the check the policy asks for
        "audits": run.audits(),  # tasks per audit state; "corrected": results an audit replaced (see explain)
        "version": watch.version,
    }


def task_rows(run: JobRun, watch: JobWatch, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` tasks of ``run`` for a timeline (GET /v1/jobs/{id}/tasks)."""
    rows = []
    for view in run.tasks()[:limit]:
        tid = view.task_id
        start, end = watch.started_s.get(tid), watch.ended_s.get(tid)
        rows.append({
            "task_id": tid,
            "state": view.state.value,
            "worker": view.worker or None,
            "backers": list(view.backers),
            "out_with": list(view.out_with),
            "start_s": None if start is None else round(start - run.created_s, 4),
            "end_s": None if end is None else round(end - run.created_s, 4),
            "fuel_used": view.fuel_used,
            "verification": {"checked": view.checked, "unchecked": view.unchecked_why, "replicas": view.replicas,
                             "spot_checks": view.spot_checks, "audit": view.audit.value,
                             "corrections": len(view.corrections)},
        })
    return rows


def parse_job_request(doc: Any, blocks: BlockSource, now: float) -> JobSpec:
    """The JobSpec of the API's JSON job request ``doc`` (``JobRequest.from_json``), with the sizes of its chunks
    in ``blocks``; ApiError(400) naming the bad field, or the chunk that was never uploaded."""
    try:
        request = JobRequest.from_json(doc)
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    sizes = []
    for cid in request.chunk_cids:
        data = blocks.get(cid)
        if data is None:
            raise ApiError(400, "missing_block", f"chunk {cid} is not in this peer's block store (POST it first)")
        sizes.append(len(data))
    return request.to_spec(sizes, now, secrets.token_hex(8))


def task_fields(run: JobRun, i: int, e: TaskView) -> dict[str, Any]:
    """What an offline verifier needs to rebuild task ``i``'s binding, and how it was checked."""
    return {
        "task_id": e.ref.task_id,
        "input_cid": e.ref.input_cid,
        "chunk_count": e.ref.chunk_count,
        "chunk_cids": [run.spec.chunk_cids[c] for c in run.spec.task_chunks(i)],
        "limits": dataclasses.asdict(e.limits),
        "checked": e.checked,
        "unchecked": e.unchecked_why,
        "audit": e.audit.value,
        "corrections": list(e.corrections),  # what audits changed in its accepted result
    }


def check_unadvertised_limits(spec: JobSpec, local: AdmissionConfig) -> None:
    """ApiError(400) when ``spec`` asks of a worker more than this peer accepts (``local``) of what peers do not
    advertise: a task's output size and input size. Placement cannot see them, so no peer may take such a task,
    and it would fail attempt after attempt; fuel, memory and wall time are advertised and placed on."""
    asked = spec.limits.output_bytes_max
    if asked > local.limits_max.output_bytes_max:
        raise ApiError(400, "bad_request", f"config limits.output_bytes_max: must be in 0.."
                       f"{local.limits_max.output_bytes_max} (this peer's compute.output_bytes_max; peers do not "
                       f"advertise theirs), got {asked}")
    biggest = max(sum(spec.chunk_sizes[c] for c in spec.task_chunks(i)) for i in range(spec.task_count))
    if biggest > local.input_bytes_max:
        raise ApiError(400, "bad_request", f"config chunks_per_task: a task's input must be at most "
                       f"{local.input_bytes_max} bytes (this peer's compute.input_bytes_max; peers do not advertise "
                       f"theirs), got {biggest}: use fewer or smaller chunks per task")


def wait_args(query: dict[str, str]) -> tuple[float, int]:
    """The ``timeout_s`` (capped at WAIT_S_MAX) and ``seen`` of a wait's query; ApiError(400) naming a bad one."""
    text = query.get("timeout_s", "10")
    try:
        timeout = float(text)
    except ValueError:
        timeout = math.nan
    if not 0 <= timeout < math.inf:  # NaN fails too
        raise ApiError(400, "bad_request", f"timeout_s must be a finite number of seconds >= 0 (waits are answered "
                                           f"after at most {WAIT_S_MAX:g} s), got {text!r}")
    text = query.get("seen", "-1")
    try:
        seen = int(text)
    except ValueError:
        raise ApiError(400, "bad_request", f"seen must be an integer (the status version seen), got {text!r}") from None
    return min(timeout, WAIT_S_MAX), seen


def add_job_routes(router: Router, compute: ComputeService) -> None:
    def run_of(req: ApiRequest) -> JobRun:
        try:
            check_job_id(req.params["job_id"])
        except ConfigError as exc:
            raise ApiError(400, "bad_job_id", str(exc)) from None
        run = compute.jobs.get(req.params["job_id"])
        if run is None:
            raise ApiError(404, "no_such_job", f"no job {req.params['job_id']} on this peer")
        return run

    def status(run: JobRun, now: float) -> dict[str, Any]:
        return job_status(run, compute.watch(run.spec.job_id), now)

    async def post_block(req: ApiRequest) -> ApiResponse:
        cid = compute.blocks.put(req.body, persist=True)
        return ApiResponse.of({"cid": cid, "size": len(req.body)})

    async def post_chunks(req: ApiRequest) -> ApiResponse:
        try:
            chunks = unframe_chunks(req.body)
        except RemoteProtocolError as exc:
            raise ApiError(400, "bad_chunks", f"body is not a framed chunk list: {exc}") from None
        return ApiResponse.of({"cids": [compute.blocks.put(c, persist=True) for c in chunks]})

    async def get_block(req: ApiRequest) -> ApiResponse:
        data = compute.blocks.get(req.params["cid"])
        if data is None:
            raise ApiError(404, "no_such_block", f"block {req.params['cid']} is not here")
        return ApiResponse(200, data, "application/octet-stream")

    async def post_job(req: ApiRequest) -> ApiResponse:
        now = time.time()
        spec = parse_job_request(req.json(), compute.blocks, now)
        if compute.blocks.get(spec.module_cid) is None:
            raise ApiError(400, "missing_block", f"module {spec.module_cid} is not in this peer's block store")
        check_unadvertised_limits(spec, compute.admission.config)
        run = compute.submit(spec, now=now)
        return ApiResponse.of(status(run, now), 201)

    async def list_jobs(_: ApiRequest) -> ApiResponse:
        now = time.time()
        return ApiResponse.of({"jobs": [status(r, now) for r in compute.jobs.values()]})

    async def get_job(req: ApiRequest) -> ApiResponse:
        return ApiResponse.of(status(run_of(req), time.time()))

    async def wait_job(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        timeout, seen = wait_args(req.query)
        watch = compute.watch(run.spec.job_id)
        with trio.move_on_after(timeout):
            while watch.version == seen and not run.state.final:
                await watch.changed.wait()
        return ApiResponse.of(status(run, time.time()))

    async def get_result(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        entries = run.tasks()
        return ApiResponse.of({
            "job_id": run.spec.job_id,
            "state": run.state.value,
            "reason": run.reason,
            "issuer": compute.self_id,
            "module_cid": run.spec.module_cid,
            "verification": str(run.spec.verification),
            "outputs": [e.output_cid or None for e in entries],
            "receipts": [e.tree.hex() if e.tree else None for e in entries],
            "workers": [e.worker or None for e in entries],
            # what an offline verifier needs to rebuild each task's binding (pangea_p2p.sdk.verify)
            "tasks": [task_fields(run, i, e) for i, e in enumerate(entries)],
        })

    async def evidence(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        try:
            start = int(req.query.get("start", "0"))
        except ValueError:
            raise ApiError(400, "bad_request", "start must be an integer") from None
        entries = run.tasks()
        if not 0 <= start <= len(entries):
            raise ApiError(400, "bad_request", f"start must be in 0..{len(entries)}, got {start}")
        inputs = req.query.get("inputs", "1") not in ("0", "", "false")

        def task(i: int) -> TaskEvidence:
            e = entries[i]
            output = compute.blocks.get(e.output_cid) if e.output_cid else None
            framed_input = compute.blocks.get(e.ref.input_cid) if inputs else None
            fields = {**task_fields(run, i, e), "worker": e.worker or None, "output_cid": e.output_cid or None}
            return TaskEvidence(fields, e.tree or b"", output or b"", framed_input or b"")

        job = {"job_id": run.spec.job_id, "state": run.state.value, "issuer": compute.self_id,
               "module_cid": run.spec.module_cid, "verification": str(run.spec.verification)}
        return ApiResponse(200, encode_page(job, len(entries), task, start), "application/octet-stream")

    async def explain(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        done = req.query.get("all", "0") not in ("0", "", "false")
        return ApiResponse.of({
            "job_id": run.spec.job_id,
            "state": run.state.value,
            "reason": run.reason,
            "tasks": {tid: {"state": run.task(tid).state.value, "reasons": reasons}
                      for tid, reasons in run.explain(done=done).items()},
            "corrections": run.corrections(),  # what audits changed in accepted results, per task
        })

    async def tasks(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        try:
            limit = int(req.query.get("limit", str(TASKS_LIMIT_DEFAULT)))
        except ValueError:
            limit = -1
        if not 1 <= limit <= TASKS_LIMIT_MAX:
            raise ApiError(400, "bad_request", f"limit must be an integer from 1 to {TASKS_LIMIT_MAX}")
        now = time.time()
        return ApiResponse.of({
            "job_id": run.spec.job_id,
            "state": run.state.value,
            "issuer": compute.self_id,
            "verification": str(run.spec.verification),
            "elapsed_s": round((run.finished_s or now) - run.created_s, 4),
            "tasks_total": run.spec.task_count,
            "tasks": task_rows(run, compute.watch(run.spec.job_id), limit),
        })

    async def logs(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        found = compute.task_logs.of_tasks(run.spec.task_ids())
        return ApiResponse.of({"job_id": run.spec.job_id, "tasks": {
            t: {"worker": entry.worker, "log": entry.log.decode("utf-8", errors="replace")}
            for t, entry in found.items()}})

    async def cancel(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        compute.cancel(run.spec.job_id)
        return ApiResponse.of(status(run, time.time()))

    async def trust(_: ApiRequest) -> ApiResponse:
        now, book = time.time(), compute.trust
        rows = []
        for peer_id in book.peers():
            rec = book.get(peer_id)
            if rec is not None:
                rows.append({"peer_id": peer_id, "score": round(book.score(peer_id, now), 4), "valid": rec.valid,
                             "invalid": rec.invalid, "timeouts": rec.timeouts, "outvoted": rec.outvoted,
                             "lies": rec.lies, "proven": rec.proven, "vindicated": rec.vindicated})
        return ApiResponse.of({"trust": sorted(rows, key=lambda r: -float(r["score"]))})

    router.add("GET", "/v1/trust", trust)
    router.add("POST", "/v1/blocks", post_block, body=BYTES)
    router.add("POST", "/v1/chunks", post_chunks, body=BYTES)
    router.add("GET", "/v1/blocks/{cid}", get_block)
    router.add("POST", "/v1/jobs", post_job)
    router.add("GET", "/v1/jobs", list_jobs)
    router.add("GET", "/v1/jobs/{job_id}", get_job)
    router.add("GET", "/v1/jobs/{job_id}/wait", wait_job)
    router.add("GET", "/v1/jobs/{job_id}/result", get_result)
    router.add("GET", "/v1/jobs/{job_id}/evidence", evidence)
    router.add("GET", "/v1/jobs/{job_id}/explain", explain)
    router.add("GET", "/v1/jobs/{job_id}/logs", logs)
    router.add("GET", "/v1/jobs/{job_id}/tasks", tasks)
    router.add("DELETE", "/v1/jobs/{job_id}", cancel)
