"""HTTP API endpoints for blocks and jobs (what the SDK and `pangea job ...` call).

    POST   /v1/blocks                 raw bytes            -> {"cid", "size"}
    POST   /v1/chunks                 a framed chunk list  -> {"cids": [...]} (each chunk stored as a block)
    GET    /v1/blocks/{cid}           -> raw bytes
    POST   /v1/jobs                   JSON job request     -> job status
    GET    /v1/jobs                   -> {"jobs": [status, ...]}
    GET    /v1/jobs/{id}              -> status (progress, fuel, workers, ETA)
    GET    /v1/jobs/{id}/wait?timeout_s=S&seen=N -> status, after it changed (N = the status "version" seen) or S
    GET    /v1/jobs/{id}/result       -> {"outputs": [cid per task], "receipts": [hex receipt tree per task],
                                          "workers", "issuer", "module_cid", "tasks": [binding fields per task]}
    GET    /v1/jobs/{id}/explain      -> the reason chain of every task that is not done (?all=1: of every task)
    DELETE /v1/jobs/{id}              -> cancel; status
    GET    /v1/trust                  -> {"trust": [{"peer_id", "score", "valid", "invalid", "timeouts"}, ...]}
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs.model import JobSpec, TaskState, VerificationPolicy
from pangea_p2p.core.verify.receipts import ReceiptLimits
from pangea_p2p.errors import ConfigError, PangeaError, RemoteProtocolError
from pangea_p2p.node.api import ApiError, ApiRequest, ApiResponse, Router

if TYPE_CHECKING:
    from pangea_p2p.node.compute import ComputeService, JobRun

WAIT_S_MAX = 60.0
LIMIT_KEYS = ("fuel_max", "memory_bytes_max", "wall_time_s", "output_bytes_max")
DEFAULT_LIMITS = ReceiptLimits(10_000_000_000, 100 << 20, 30.0, 16 << 20)


def job_status(run: JobRun, now: float) -> dict[str, Any]:
    coord = run.coordinator
    progress = coord.progress()
    total = len(coord.tasks)
    done = progress[TaskState.DONE.value]
    elapsed = (coord.finished_s or now) - run.created_s
    eta = None
    if 0 < done < total and not coord.state.final:
        eta = round(elapsed / done * (total - done), 3)
    return {
        "job_id": run.spec.job_id,
        "state": coord.state.value,
        "reason": coord.reason,
        "tasks_total": total,
        "progress": progress,
        "fraction_done": round(done / total, 4),
        "fuel_used": coord.fuel_used(),
        "elapsed_s": round(elapsed, 3),
        "eta_s": eta,
        "workers": dict(sorted(run.workers.items())),
        "verification": str(run.spec.verification),
        "version": run.version,
    }


def parse_job_request(doc: Any, compute: ComputeService, now: float) -> JobSpec:
    """A JobSpec from the API's JSON; ApiError(400) naming the bad field."""
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_request", "the job request must be a JSON object")
    known = {"job_id", "module_cid", "chunk_cids", "chunks_per_task", "limits", "verification", "deadline_s",
             "retries_max", "escalations_max", "depth_max", "queue_timeout_s", "fuel_per_chunk_estimate"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    chunk_cids = doc.get("chunk_cids")
    if not isinstance(chunk_cids, list) or not all(isinstance(c, str) for c in chunk_cids):
        raise ApiError(400, "bad_request", "chunk_cids must be a list of content ids")
    sizes = []
    for cid in chunk_cids:
        data = compute.blocks.get(cid)
        if data is None:
            raise ApiError(400, "missing_block", f"chunk {cid} is not in this peer's block store (POST it first)")
        sizes.append(len(data))
    limits_doc = doc.get("limits", {})
    if not isinstance(limits_doc, dict) or set(limits_doc) - set(LIMIT_KEYS):
        raise ApiError(400, "bad_request", f"limits must be an object with keys among {', '.join(LIMIT_KEYS)}")
    job_id = doc.get("job_id")
    if job_id is not None and not isinstance(job_id, str):
        raise ApiError(400, "bad_request", f"job_id must be a string, got {job_id!r}")
    deadline = doc.get("deadline_s")
    if deadline is not None and not 0 < _float(doc, "deadline_s", 0.0) < math.inf:
        raise ApiError(400, "bad_request", f"deadline_s must be a positive number of seconds, got {deadline!r}")
    fuel_estimate = _int(doc, "fuel_per_chunk_estimate", 0)
    if not 0 <= fuel_estimate < 1 << 64:
        raise ApiError(400, "bad_request", f"fuel_per_chunk_estimate must be in 0..2^64-1, got {fuel_estimate}")
    try:
        limits = ReceiptLimits(**{k: limits_doc.get(k, getattr(DEFAULT_LIMITS, k)) for k in LIMIT_KEYS})
        return JobSpec(
            job_id=job_id or secrets.token_hex(8),
            module_cid=_str(doc, "module_cid"),
            chunk_cids=tuple(chunk_cids),
            chunk_sizes=tuple(sizes),
            limits=limits,
            chunks_per_task=_int(doc, "chunks_per_task", 1),
            verification=VerificationPolicy.parse(str(doc.get("verification", "hash"))),
            deadline_s=math.inf if deadline is None else now + float(deadline),
            retries_max=_int(doc, "retries_max", 3),
            escalations_max=_int(doc, "escalations_max", 2),
            depth_max=_int(doc, "depth_max", 2),
            queue_timeout_s=_float(doc, "queue_timeout_s", 60.0),
            fuel_per_chunk_estimate=fuel_estimate,
        )
    except ApiError:
        raise
    except ConfigError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except (TypeError, ValueError, PangeaError) as exc:
        raise ApiError(400, "bad_request", f"invalid job request: {exc}") from None


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_request", f"{key} must be a non-empty string")
    return value


def _int(doc: dict[str, Any], key: str, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "bad_request", f"{key} must be an integer, got {value!r}")
    return value


def _float(doc: dict[str, Any], key: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ApiError(400, "bad_request", f"{key} must be a number, got {value!r}")
    return float(value)


def add_job_routes(router: Router, compute: ComputeService) -> None:
    def run_of(req: ApiRequest) -> JobRun:
        run = compute.jobs.get(req.params["job_id"])
        if run is None:
            raise ApiError(404, "no_such_job", f"no job {req.params['job_id']} on this peer")
        return run

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
        spec = parse_job_request(req.json(), compute, now)
        if compute.blocks.get(spec.module_cid) is None:
            raise ApiError(400, "missing_block", f"module {spec.module_cid} is not in this peer's block store")
        run = compute.submit(spec, now=now)
        return ApiResponse.of(job_status(run, now), 201)

    async def list_jobs(_: ApiRequest) -> ApiResponse:
        now = time.time()
        return ApiResponse.of({"jobs": [job_status(r, now) for r in compute.jobs.values()]})

    async def get_job(req: ApiRequest) -> ApiResponse:
        return ApiResponse.of(job_status(run_of(req), time.time()))

    async def wait_job(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        try:
            timeout = min(WAIT_S_MAX, float(req.query.get("timeout_s", "10")))
            seen = int(req.query.get("seen", "-1"))
        except ValueError:
            raise ApiError(400, "bad_request", "timeout_s and seen must be numbers") from None
        with trio.move_on_after(timeout):
            while run.version == seen and not run.coordinator.state.final:
                await run.changed.wait()
        return ApiResponse.of(job_status(run, time.time()))

    async def get_result(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        entries = [run.coordinator.tasks[t] for t in run.spec.task_ids()]
        return ApiResponse.of({
            "job_id": run.spec.job_id,
            "state": run.coordinator.state.value,
            "issuer": compute.self_id,
            "module_cid": run.spec.module_cid,
            "verification": str(run.spec.verification),
            "outputs": [e.output_cid or None for e in entries],
            "receipts": [e.tree.hex() if e.tree else None for e in entries],
            "workers": [e.worker or None for e in entries],
            # what an offline verifier needs to rebuild each task's binding (pangea_p2p.sdk.verify)
            "tasks": [{
                "task_id": e.ref.task_id,
                "input_cid": e.ref.input_cid,
                "chunk_count": e.ref.chunk_count,
                "chunk_cids": [run.spec.chunk_cids[c] for c in run.spec.task_chunks(i)],
                "limits": dataclasses.asdict(e.limits or e.ref.limits),
                "checked": e.checked,
            } for i, e in enumerate(entries)],
        })

    async def explain(req: ApiRequest) -> ApiResponse:
        run = run_of(req)
        coord = run.coordinator
        done = req.query.get("all", "0") not in ("0", "", "false")
        return ApiResponse.of({
            "job_id": run.spec.job_id,
            "state": coord.state.value,
            "reason": coord.reason,
            "tasks": {tid: {"state": coord.tasks[tid].state.value, "reasons": reasons}
                      for tid, reasons in coord.explain(done=done).items()},
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
        return ApiResponse.of(job_status(run, time.time()))

    async def trust(_: ApiRequest) -> ApiResponse:
        now, book = time.time(), compute.trust
        rows = []
        for peer_id in book.peers():
            rec = book.get(peer_id)
            if rec is not None:
                rows.append({"peer_id": peer_id, "score": round(book.score(peer_id, now), 4), "valid": rec.valid,
                             "invalid": rec.invalid, "timeouts": rec.timeouts})
        return ApiResponse.of({"trust": sorted(rows, key=lambda r: -float(r["score"]))})

    router.add("GET", "/v1/trust", trust)
    router.add("POST", "/v1/blocks", post_block)
    router.add("POST", "/v1/chunks", post_chunks)
    router.add("GET", "/v1/blocks/{cid}", get_block)
    router.add("POST", "/v1/jobs", post_job)
    router.add("GET", "/v1/jobs", list_jobs)
    router.add("GET", "/v1/jobs/{job_id}", get_job)
    router.add("GET", "/v1/jobs/{job_id}/wait", wait_job)
    router.add("GET", "/v1/jobs/{job_id}/result", get_result)
    router.add("GET", "/v1/jobs/{job_id}/explain", explain)
    router.add("GET", "/v1/jobs/{job_id}/logs", logs)
    router.add("DELETE", "/v1/jobs/{job_id}", cancel)
