"""Offline verification of a finished job's receipts, from what the peer's HTTP API hands out.

``verify_job(client, job_id)`` reads the job's evidence pages (``GET /v1/jobs/{id}/evidence``, one request per
page of up to 16 MiB: ``pangea_p2p.core.jobs.evidence``) and trusts nothing the peer says about the work: for
every task it rebuilds the binding the submitter issued (job, task, module, input content id, chunk count,
limits, issuer), decodes the receipt tree, and checks it with ``pangea_p2p.core.verify.tree.verify_tree``
against the downloaded output: every signature and signer key, every binding down the delegation chain, the
fuel sums, and each leaf's part of the output against its content id and Merkle root. With ``check_inputs`` it
also checks the task's framed input against the content id the receipts name, and each of its chunks against
the chunk id the task names, so the receipts are bound to the data the user uploaded.

Freshness is checked as of each root receipt's own date (an audit asks whether the receipts were valid when
they were issued, not whether they are still recent); replays are checked within each tree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.evidence import TaskEvidence, decode_page
from pangea_p2p.core.jobs.model import TASKS_PER_JOB_MAX
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.errors import PangeaError, RemoteProtocolError, VerificationError

if TYPE_CHECKING:
    from pangea_p2p.sdk.client import Client


@dataclass
class JobVerification:
    """The outcome of ``verify_job``: per-task problems (empty when everything verified) and totals."""

    job_id: str
    issuer: str
    verification: str
    tasks: int = 0
    receipts: int = 0
    fuel_used: int = 0
    depth_max: int = 0
    checked: int = 0  # tasks the submitter also checked (spot checks or a vote), per the API
    signers: Counter[str] = field(default_factory=Counter)  # leaf receipts signed, per peer
    problems: dict[str, str] = field(default_factory=dict)  # task id -> why it did not verify
    # task id -> why it was accepted without the check its policy asks for (per the API)
    unchecked: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every receipt verified, and every task got the check its policy asks for."""
        return self.tasks > 0 and not self.problems and not self.unchecked

    def summary(self) -> str:
        if self.problems or not self.tasks:
            first = next(iter(self.problems.items()), ("-", "no tasks"))
            failed = sum(1 for key in self.problems if key != "job")  # "job": the job as a whole, not a task
            return f"FAILED: {failed} of {self.tasks} task(s) did not verify; {first[0]}: {first[1]}"
        if self.unchecked:
            task_id, why = next(iter(self.unchecked.items()))
            return (f"INCOMPLETE: the receipts verify, but {len(self.unchecked)} of {self.tasks} task(s) were "
                    f"accepted unchecked although the policy is {self.verification}; {task_id}: {why}")
        return (
            f"OK: {self.receipts} signed receipt(s) over {self.tasks} task(s) verified offline (signatures, "
            f"bindings, content ids, Merkle roots; delegation depth {self.depth_max}), {len(self.signers)} "
            f"worker(s) signed; {self.checked} task(s) also checked by re-execution or vote"
        )


def verify_job(client: Client, job_id: str, *, check_inputs: bool = True, config: VerifyConfig | None = None,
               module_cid: str | None = None, chunk_cids: list[str] | None = None) -> JobVerification:
    """Verify every task of a done job offline (see the module docstring), from the job's evidence pages (one
    request per page, ``core.jobs.evidence``). ``module_cid`` and ``chunk_cids``: what the caller submitted
    (``JobHandle.verify`` passes them), so the peer's evidence is checked against the caller's own record of the
    job, not only against itself: same module, every chunk in some task, in order, none missing or added."""
    config = config or VerifyConfig()
    report = JobVerification(job_id, "", "")
    covered: list[Any] = []
    start: int | None = 0
    for _ in range(TASKS_PER_JOB_MAX + 1):  # every page but an empty job's holds at least one task
        if start is None:
            break
        try:
            page = decode_page(client.job_evidence(job_id, start, inputs=check_inputs))
        except RemoteProtocolError as exc:
            report.problems["job"] = str(exc)
            return report
        if page.start != start:
            report.problems["job"] = f"evidence page {start} starts at task {page.start}"
            return report
        if start == 0:
            report.issuer, report.verification = str(page.job["issuer"]), str(page.job["verification"])
            if module_cid is not None and page.job["module_cid"] != module_cid:
                report.problems["job"] = f"the job ran module {page.job['module_cid']}, not the submitted {module_cid}"
        for i, task in enumerate(page.tasks, page.start):
            report.tasks += 1
            fields = task.fields if isinstance(task.fields, dict) else {}
            covered.extend(fields.get("chunk_cids") or [])
            try:
                verify_task(report, page.job, task, config, check_inputs=check_inputs)
            except (VerificationError, RemoteProtocolError, PangeaError, LookupError, TypeError, ValueError) as exc:
                report.problems[str(fields.get("task_id", i))] = str(exc) or type(exc).__name__
        start = page.next
    if chunk_cids is not None and covered != list(chunk_cids):
        report.problems["job"] = (f"the tasks cover {len(covered)} chunk(s) that are not the {len(chunk_cids)} "
                                  "submitted ones, in order")
    return report


def verify_task(report: JobVerification, job: dict[str, Any], task: TaskEvidence, config: VerifyConfig, *,
                check_inputs: bool) -> None:
    """Check one task's evidence (raises naming the first problem) and add it to ``report``: its input chunks
    frame to the input id its receipts name and are the chunks it names; its receipt tree verifies (signatures,
    bindings, fuel, each leaf's part of the output against its content id and Merkle root)."""
    fields = task.fields
    if not isinstance(fields, dict):
        raise PangeaError(f"the task's fields are a {type(fields).__name__}, not an object")
    if not task.tree or not fields.get("output_cid") or not fields.get("worker"):
        raise PangeaError("the task has no result")
    if check_inputs:
        if cid_of(task.input) != fields["input_cid"]:
            raise PangeaError(f"the uploaded chunks frame to {cid_of(task.input)}, the receipts name "
                              f"{fields['input_cid']}")
        if [cid_of(c) for c in unframe_chunks(task.input)] != list(fields["chunk_cids"]):
            raise PangeaError("the task's input chunks are not the chunks it names")
    # the job asked about, not the one the evidence names: another job's receipts must not pass for it
    binding = TaskBinding.of(
        job_id=report.job_id, task_id=str(fields["task_id"]), module_cid=str(job["module_cid"]),
        input_cid=str(fields["input_cid"]), limits=ReceiptLimits(**fields["limits"]), issuer=report.issuer,
        chunk_count=int(fields["chunk_count"]),
    )
    tree = ReceiptTree.decode(task.tree, config)
    verified = verify_tree(tree, binding, tree.receipt.issued_at_s, config, worker=str(fields["worker"]),
                           output=task.output)
    report.receipts += verified.receipts
    report.fuel_used += verified.fuel_used
    report.depth_max = max(report.depth_max, _depth(tree))
    report.checked += bool(fields.get("checked"))
    if fields.get("unchecked"):
        report.unchecked[str(fields["task_id"])] = str(fields["unchecked"])
    report.signers.update(leaf.worker for leaf in verified.leaves)


def _depth(tree: ReceiptTree) -> int:
    return 1 + max((_depth(c) for c in tree.children), default=-1) if tree.children else 0
