"""An in-memory stand-in for a peer's HTTP API, for the SDK and `pangea job` tests (no sockets, no sleeps).

``FakePeer`` has the methods of ``pangea_p2p.sdk.client.Client`` that the SDK and the CLI call. It keeps blocks
by content id, validates a job request with the node's own ``parse_job_request``, runs every task in this
process's sandbox over the uploaded chunks, and signs one execution receipt per task as a worker would, so
``get_result``'s document (pangea_p2p/node/job_routes.py) it hands out verifies offline. With ``delegate`` a
task is split by its worker into two sub-tasks run by two other peers, and comes back as a receipt tree.

Progress is scripted, not timed: status version ``v`` has ``v`` tasks done, and each ``wait_job(seen=v)`` returns
version ``v + 1``, up to the final status.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.admission import AdmissionConfig
from pangea_p2p.core.jobs.evidence import JOB_FIELDS, PAGE_BYTES_MAX, TaskEvidence, encode_page
from pangea_p2p.core.jobs.model import JobSpec
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.node.api import ApiError
from pangea_p2p.node.config import ComputeConfig
from pangea_p2p.node.job_routes import check_unadvertised_limits, parse_job_request
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits
from pangea_p2p.sdk.client import ApiCallFailed

NOW = 1_750_000_000.0
SUBMITTER = Identity(bytes([1]) * 32)
WORKERS = (Identity(bytes([2]) * 32), Identity(bytes([3]) * 32), Identity(bytes([4]) * 32))


@dataclasses.dataclass
class FakeRun:
    spec: JobSpec
    statuses: list[dict[str, Any]]
    doc: dict[str, Any]
    explain: dict[str, Any]
    version: int = 0


class FakePeer:
    """A peer's API in this process (see the module docstring)."""

    def __init__(self, *, delegate: int | None = None, job_ids: list[str] | None = None,
                 page_bytes_max: int = PAGE_BYTES_MAX) -> None:
        self.blocks: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.runs: dict[str, FakeRun] = {}
        self.waits: list[tuple[str, int]] = []
        self.explained: list[tuple[str, bool]] = []  # (job id, done) of each explain call
        self.closed = False
        self.page_bytes_max = page_bytes_max  # of an evidence page
        self.evidence_requests: list[tuple[str, int, bool]] = []  # (job id, start, inputs) of each page asked for
        self.tokens: list[str | None] = []  # the API token of each client made (tests/cli/test_job_cli.py)
        compute = ComputeConfig()  # what this peer would run for others: a peer's default compute.* maxima
        self.limits = AdmissionConfig(limits_max=ReceiptLimits(compute.fuel_max, compute.memory_bytes_max,
                                                               compute.wall_time_s_max, compute.output_bytes_max),
                                      input_bytes_max=compute.input_bytes_max)
        self._delegate = delegate
        self._job_ids = list(job_ids or [])

    # --- what a Client does -------------------------------------------------------------------------------

    def __enter__(self) -> FakePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def upload_block(self, data: bytes) -> str:
        cid = cid_of(data)
        self.blocks[cid] = bytes(data)
        return cid

    def upload_chunks(self, framed: bytes) -> list[str]:
        return [self.upload_block(c) for c in unframe_chunks(framed)]

    def block(self, cid: str) -> bytes:
        if cid not in self.blocks:
            raise ApiCallFailed(404, "no_such_block", f"block {cid} is not here")
        return self.blocks[cid]

    def submit_job(self, request: JobRequest) -> dict[str, Any]:
        doc = request.to_json()  # what a Client sends
        self.requests.append(copy.deepcopy(doc))
        if self._job_ids and "job_id" not in doc:
            doc = {**doc, "job_id": self._job_ids.pop(0)}
        try:
            spec = parse_job_request(doc, self.blocks, NOW)
            if spec.module_cid not in self.blocks:
                raise ApiError(400, "missing_block", f"module {spec.module_cid} is not in this peer's block store")
            check_unadvertised_limits(spec, self.limits)
        except ApiError as exc:
            raise ApiCallFailed(exc.status, exc.code, exc.message) from None
        self.runs[spec.job_id] = self._run(spec)
        return self.job(spec.job_id)

    def jobs(self) -> dict[str, Any]:
        return {"jobs": [self.job(j) for j in self.runs]}

    def job(self, job_id: str) -> dict[str, Any]:
        run = self._get(job_id)
        return copy.deepcopy(run.statuses[run.version])

    def wait_job(self, job_id: str, seen: int, timeout_s: float = 10.0) -> dict[str, Any]:
        self.waits.append((job_id, seen))
        run = self._get(job_id)
        run.version = min(max(run.version, seen + 1), len(run.statuses) - 1)
        return self.job(job_id)

    def job_result(self, job_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._get(job_id).doc)

    def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
        """The evidence page the node would send (``core.jobs.evidence``), built from ``job_result``'s document
        and the blocks here as they are now (a test tampers with either); garbage in the document goes out as
        garbage (a receipt that is not hex, as its raw text)."""
        self.evidence_requests.append((job_id, start, inputs))
        doc = self.job_result(job_id)  # (a test may replace job_result: the evidence follows)

        def at(key: str, i: int) -> Any:
            return doc[key][i] if i < len(doc[key]) else None

        def task(i: int) -> TaskEvidence:
            fields, tree_hex, output_cid = doc["tasks"][i], at("receipts", i), at("outputs", i)
            framed_input = b""
            if isinstance(fields, dict):
                framed_input = frame_chunks([self.blocks[c] for c in fields["chunk_cids"]]) if inputs else b""
                fields = {**fields, "worker": at("workers", i), "output_cid": output_cid}
            try:
                tree = bytes.fromhex(tree_hex or "")
            except ValueError:
                tree = str(tree_hex).encode()
            return TaskEvidence(fields, tree, self.blocks.get(output_cid or "", b""), framed_input)

        job = {k: doc[k] for k in JOB_FIELDS}
        return encode_page(job, len(doc["tasks"]), task, start, bytes_max=self.page_bytes_max)

    def explain(self, job_id: str, *, done: bool = False) -> dict[str, Any]:
        self.explained.append((job_id, done))
        return copy.deepcopy(self._get(job_id).explain)

    def cancel(self, job_id: str) -> dict[str, Any]:
        run = self._get(job_id)
        status = copy.deepcopy(run.statuses[run.version])
        status.update(state="cancelled", reason="cancelled by the submitter", version=run.version + 1)
        run.statuses = [*run.statuses[: run.version + 1], status]
        run.version += 1
        return copy.deepcopy(status)

    def _get(self, job_id: str) -> FakeRun:
        if job_id not in self.runs:
            raise ApiCallFailed(404, "no_such_job", f"no job {job_id} on this peer")
        return self.runs[job_id]

    # --- running a job ------------------------------------------------------------------------------------

    def _run(self, spec: JobSpec) -> FakeRun:
        module = self.blocks[spec.module_cid]
        limits = SandboxLimits(**dataclasses.asdict(spec.limits))
        outputs: list[str | None] = []
        receipts: list[str | None] = []
        workers: list[str | None] = []
        tasks: list[dict[str, Any]] = []
        failures: dict[str, str] = {}
        fuel = 0
        with Executor(SandboxConfig(limits_max=limits, workers=1)) as executor:
            for i, task_id in enumerate(spec.task_ids()):
                chunk_cids = [spec.chunk_cids[c] for c in spec.task_chunks(i)]
                chunks = [self.blocks[c] for c in chunk_cids]
                input_cid = cid_of(frame_chunks(chunks))
                tasks.append({"task_id": task_id, "input_cid": input_cid, "chunk_count": len(chunks),
                              "chunk_cids": chunk_cids, "limits": dataclasses.asdict(spec.limits), "checked": i == 0})
                binding = TaskBinding.of(job_id=spec.job_id, task_id=task_id, module_cid=spec.module_cid,
                                         input_cid=input_cid, limits=spec.limits, issuer=SUBMITTER.peer_id,
                                         chunk_count=len(chunks))
                if i == self._delegate:
                    tree, framed, used = self._delegated(executor, module, binding, chunks, limits)
                    worker = WORKERS[0]
                else:
                    worker = WORKERS[i % len(WORKERS)]
                    result = executor.run_chunks(spec.module_cid, module, chunks, limits)
                    if result.failure is not None:
                        failures[task_id] = f"chunk {result.failed_index}: {result.failure.message}"
                        outputs.append(None)
                        receipts.append(None)
                        workers.append(None)
                        continue
                    framed, used = frame_chunks(result.unwrap()), result.report.fuel_used
                    tree = ReceiptTree(issue_receipt(worker, binding, output=framed, fuel_used=used, now=NOW,
                                                     rng=random.Random(i)))
                fuel += used
                outputs.append(self.upload_block(framed))
                receipts.append(tree.encode().hex())
                workers.append(worker.peer_id)
        state = "failed" if failures else "done"
        reason = f"task {next(iter(failures))} failed: {next(iter(failures.values()))}" if failures else ""
        doc = {"job_id": spec.job_id, "state": state, "reason": reason, "issuer": SUBMITTER.peer_id,
               "module_cid": spec.module_cid, "verification": str(spec.verification), "outputs": outputs,
               "receipts": receipts, "workers": workers, "tasks": tasks}
        total = spec.task_count
        done = total - len(failures)
        statuses = [self._status(spec, "running", "", v, min(v, done), 0, fuel * min(v, done) // max(1, done))
                    for v in range(done + 1)]
        statuses.append(self._status(spec, state, reason, done + 1, done, len(failures), fuel))
        explain = {"job_id": spec.job_id, "state": state, "reason": reason,
                   "tasks": {t: {"state": "failed", "reasons": [why]} for t, why in failures.items()}}
        return FakeRun(spec, statuses, doc, explain)

    def _delegated(self, executor: Executor, module: bytes, binding: TaskBinding, chunks: list[bytes],
                   limits: SandboxLimits) -> tuple[ReceiptTree, bytes, int]:
        """Task ``binding`` split by WORKERS[0] into two halves run by WORKERS[1] and WORKERS[2]."""
        assert len(chunks) >= 2, "a delegated task needs two chunks or more"
        half = len(chunks) // 2
        lim = binding.limits
        child_limits = ReceiptLimits(lim.fuel_max // 2, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max)
        children, outs, used = [], [], 0
        for k, (part, worker) in enumerate([(chunks[:half], WORKERS[1]), (chunks[half:], WORKERS[2])]):
            child = TaskBinding.of(job_id=binding.job_id, task_id=f"{binding.task_id}.{k}",
                                   parent_task_id=binding.task_id, module_cid=binding.module_cid,
                                   input_cid=cid_of(frame_chunks(part)), limits=child_limits,
                                   issuer=WORKERS[0].peer_id, chunk_count=len(part))
            ran = executor.run_chunks(binding.module_cid, module, part, limits)
            result, fuel = ran.unwrap(), ran.report.fuel_used
            children.append(ReceiptTree(issue_receipt(worker, child, output=frame_chunks(result), fuel_used=fuel,
                                                       now=NOW, rng=random.Random(100 + k))))
            outs.extend(result)
            used += fuel
        tree = delegate(WORKERS[0], binding, children, now=NOW, rng=random.Random(99))
        return tree, frame_chunks(outs), used

    @staticmethod
    def _status(spec: JobSpec, state: str, reason: str, version: int, done: int, failed: int,
                fuel: int) -> dict[str, Any]:
        total = spec.task_count
        running = 0 if state != "running" else min(1, total - done)
        pending = total - done - failed - running
        return {
            "job_id": spec.job_id, "state": state, "reason": reason, "tasks_total": total,
            "progress": {"pending": pending, "running": running, "verifying": 0, "done": done, "failed": failed,
                         "cancelled": 0},
            "fraction_done": round(done / total, 4), "fuel_used": fuel, "elapsed_s": 0.5 * version,
            "eta_s": 0.5 * (total - done) if 0 < done < total and state == "running" else None,
            "workers": {w.peer_id: 1 for w in WORKERS[: min(done, len(WORKERS))]},
            "verification": str(spec.verification), "version": version,
        }
