"""Offline verification of a finished job's receipts, from what the peer's HTTP API hands out.

``verify_job(client, job_id)`` trusts nothing the peer says about the work: for every task it rebuilds the
binding the submitter issued (job, task, module, input content id, chunk count, limits, issuer), decodes the
receipt tree, and checks it with ``pangea_p2p.core.verify.tree.verify_tree`` against the downloaded output:
every signature and signer key, every binding down the delegation chain, the fuel sums, and each leaf's part
of the output against its content id and Merkle root. With ``check_inputs`` it also re-frames the task's input
chunks and checks their content id, so the receipts are bound to the data the user uploaded.

Freshness is checked as of each root receipt's own date (an audit asks whether the receipts were valid when
they were issued, not whether they are still recent); replays are checked within each tree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
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
    """Verify every task of a done job offline (see the module docstring). ``module_cid`` and ``chunk_cids``:
    what the caller submitted (``JobHandle.verify`` passes them), so the peer's document is checked against
    the caller's own record of the job, not only against itself: same module, every chunk in some task, in
    order, none missing or added."""
    doc = client.job_result(job_id)
    config = config or VerifyConfig()
    report = JobVerification(job_id, str(doc["issuer"]), str(doc["verification"]))
    if module_cid is not None and doc.get("module_cid") != module_cid:
        report.problems["job"] = f"the job ran module {doc.get('module_cid')}, not the submitted {module_cid}"
    if chunk_cids is not None:
        tasks = doc.get("tasks") if isinstance(doc.get("tasks"), list) else []
        covered = [c for t in tasks if isinstance(t, dict) for c in t.get("chunk_cids", [])]
        if covered != list(chunk_cids):
            report.problems["job"] = (f"the tasks cover {len(covered)} chunk(s) that are not the {len(chunk_cids)} "
                                      "submitted ones, in order")
    for i, task in enumerate(doc["tasks"]):
        report.tasks += 1
        try:
            _verify_task(client, doc, i, task, config, check_inputs, report)
        except (VerificationError, RemoteProtocolError, PangeaError, LookupError, TypeError, ValueError) as exc:
            task_id = task.get("task_id", i) if isinstance(task, dict) else i
            report.problems[str(task_id)] = str(exc) or type(exc).__name__
    return report


def _verify_task(client: Client, doc: dict[str, Any], i: int, task: dict[str, Any], config: VerifyConfig,
                 check_inputs: bool, report: JobVerification) -> None:
    tree_hex, output_cid, worker = (doc[k][i] if i < len(doc[k]) else None for k in ("receipts", "outputs", "workers"))
    if tree_hex is None or output_cid is None or worker is None:
        raise PangeaError("the task has no result")
    if check_inputs:
        framed = frame_chunks([client.block(c) for c in task["chunk_cids"]])
        if cid_of(framed) != task["input_cid"]:
            raise PangeaError(f"the uploaded chunks frame to {cid_of(framed)}, the receipts name {task['input_cid']}")
    # the job asked about, not the one the document names: another job's receipts must not pass for it
    binding = TaskBinding.of(
        job_id=report.job_id, task_id=str(task["task_id"]), module_cid=str(doc["module_cid"]),
        input_cid=str(task["input_cid"]), limits=ReceiptLimits(**task["limits"]), issuer=report.issuer,
        chunk_count=int(task["chunk_count"]),
    )
    tree = ReceiptTree.decode(bytes.fromhex(tree_hex), config)
    output = client.block(output_cid)
    verified = verify_tree(tree, binding, tree.receipt.issued_at_s, config, worker=str(worker), output=output)
    report.receipts += verified.receipts
    report.fuel_used += verified.fuel_used
    report.depth_max = max(report.depth_max, _depth(tree))
    report.checked += bool(task.get("checked"))
    if task.get("unchecked"):
        report.unchecked[str(task["task_id"])] = str(task["unchecked"])
    report.signers.update(leaf.worker for leaf in verified.leaves)


def _depth(tree: ReceiptTree) -> int:
    return 1 + max((_depth(c) for c in tree.children), default=-1) if tree.children else 0
