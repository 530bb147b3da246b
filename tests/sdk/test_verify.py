"""verify_job: offline verification of a job from the result document of the HTTP API, against receipts
really signed by worker identities (tests/sdk/fakes.py runs every task and signs like a worker would).
An honest document verifies; each kind of tampering is reported as a problem of the task it touches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.evidence import EvidencePage, decode_page, encode_page
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.sdk import Job, splits
from pangea_p2p.sdk.verify import JobVerification, verify_job
from tests.sdk.fakes import SUBMITTER, WORKERS, FakePeer

DATA = b"".join(f"line {i}: some words to hash\n".encode() for i in range(30))


def submit(peer: FakePeer, chunks_per_task: int = 4) -> tuple[str, dict[str, Any]]:
    """A done sha256 job of 8 chunks on ``peer``; its id and its result document (the peer's own copy)."""
    job: Job[list[bytes]] = Job("sha", guest="sha256", chunks_per_task=chunks_per_task, verification="spot:1")
    job.split(lambda data: splits.by_count(data, 8))
    job.merge(lambda outputs: outputs)
    handle = job.submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.wait()["state"] == "done"
    return handle.job_id, peer.runs[handle.job_id].doc


def only_problem(report: JobVerification, task_id: str) -> str:
    assert not report.ok
    assert list(report.problems) == [task_id], report.problems
    assert report.summary().startswith(f"FAILED: 1 of {report.tasks} task(s) did not verify; {task_id}: ")
    return report.problems[task_id]


def test_an_honest_job_verifies() -> None:
    peer = FakePeer()
    job_id, _ = submit(peer, chunks_per_task=3)  # tasks of 3, 3 and 2 chunks
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert (report.job_id, report.issuer, report.verification) == (job_id, SUBMITTER.peer_id, "spot:1")
    assert (report.tasks, report.receipts, report.depth_max, report.checked) == (3, 3, 0, 1)
    assert report.signers == {w.peer_id: 1 for w in WORKERS}
    assert report.fuel_used == peer.job(job_id)["fuel_used"] > 0
    assert report.summary().startswith("OK: 3 signed receipt(s) over 3 task(s) verified offline")
    assert "3 worker(s) signed; 1 task(s) also checked" in report.summary()


def test_tasks_accepted_unchecked_under_a_checked_policy_make_the_report_incomplete() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer, chunks_per_task=3)
    doc["tasks"][2]["unchecked"] = "its spot check could not run here (busy)"  # as the peer's document says it
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert not report.problems  # every receipt verifies...
    assert not report.ok  # ... but the job did not get the checks it asked for
    assert report.unchecked == {f"{job_id}/t2": "its spot check could not run here (busy)"}
    assert report.summary() == (
        "INCOMPLETE: the receipts verify, but 1 of 3 task(s) were accepted unchecked although the policy is "
        f"spot:1; {job_id}/t2: its spot check could not run here (busy)")


def test_a_delegated_task_verifies_as_a_receipt_tree() -> None:
    peer = FakePeer(delegate=1)  # task 1 split by WORKERS[0] into halves run by WORKERS[1] and WORKERS[2]
    job_id, doc = submit(peer)
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert report.tasks == 2
    assert report.receipts == 1 + 3
    assert report.depth_max == 1
    assert report.signers == {WORKERS[0].peer_id: 1, WORKERS[1].peer_id: 1, WORKERS[2].peer_id: 1}
    assert doc["workers"][1] == WORKERS[0].peer_id


def test_a_tampered_output_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    chunks = unframe_chunks(peer.blocks[doc["outputs"][1]])
    chunks[2] = bytes(32)  # one wrong digest among the task's outputs, stored under the honest output's id
    peer.blocks[doc["outputs"][1]] = frame_chunks(chunks)
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem.startswith("cid-mismatch: the ")


def test_an_output_cid_swapped_for_another_block_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc["outputs"][0] = peer.upload_block(frame_chunks([bytes(32)] * 4))
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t0")  # type: ignore[arg-type]
    assert problem.startswith("cid-mismatch:")


def test_a_tampered_output_of_a_delegated_task_names_the_leaf() -> None:
    peer = FakePeer(delegate=0)
    job_id, doc = submit(peer)
    chunks = unframe_chunks(peer.blocks[doc["outputs"][0]])
    chunks[3] = bytes(32)  # in the second half: the leaf WORKERS[2] signed
    peer.blocks[doc["outputs"][0]] = frame_chunks(chunks)
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t0")  # type: ignore[arg-type]
    assert problem == f"cid-mismatch: output chunks of leaf 1 ({job_id}/t0.1) are not its output"


def test_a_wrong_worker_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc["workers"][0] = WORKERS[2].peer_id  # the API claims another peer did task 0
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t0")  # type: ignore[arg-type]
    assert problem.startswith("not-assigned: receipt root is signed by")
    assert WORKERS[2].peer_id in problem


def test_a_wrong_input_cid_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    honest = doc["tasks"][1]["input_cid"]
    doc["tasks"][1]["input_cid"] = cid_of(b"some other input")
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem == f"the uploaded chunks frame to {honest}, the receipts name {cid_of(b'some other input')}"
    # without re-framing the inputs, the receipt's binding no longer matches
    problem = only_problem(verify_job(peer, job_id, check_inputs=False), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem == f"cid-mismatch: receipt root names input_cid {honest}, expected {cid_of(b'some other input')}"


def test_a_changed_input_chunk_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc["tasks"][0]["chunk_cids"][2] = peer.upload_block(b"not what was uploaded")
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t0")  # type: ignore[arg-type]
    assert problem.startswith("the uploaded chunks frame to ")
    assert verify_job(peer, job_id, check_inputs=False).ok  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["receipts", "outputs", "workers"])
def test_a_missing_result_is_named(field: str) -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc[field][1] = None
    assert only_problem(verify_job(peer, job_id), f"{job_id}/t1") == "the task has no result"  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["receipts", "outputs", "workers"])
def test_a_short_result_list_is_a_problem_not_a_crash(field: str) -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    del doc[field][1]
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem == "the task has no result"


def test_a_receipt_of_another_task_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer, chunks_per_task=4)
    doc["receipts"][1], doc["workers"][1] = doc["receipts"][0], doc["workers"][0]
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem.startswith(f"cid-mismatch: receipt root names input_cid {doc['tasks'][0]['input_cid']}")
    # the same input in both tasks: the task id still differs
    doc["tasks"][1] = {**doc["tasks"][0], "task_id": f"{job_id}/t1"}
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t1")  # type: ignore[arg-type]
    assert problem.startswith("binding-mismatch: receipt root is for task_id")


def test_a_forged_signature_is_named() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    tree = bytearray.fromhex(doc["receipts"][0])
    tree[-1] ^= 1  # the last byte of the root receipt's signature
    doc["receipts"][0] = tree.hex()
    problem = only_problem(verify_job(peer, job_id), f"{job_id}/t0")  # type: ignore[arg-type]
    assert problem.startswith("bad-signature:")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("issuer", Identity(bytes([9]) * 32).peer_id, "binding-mismatch"),
     ("module_cid", cid_of(b"another module"), "cid-mismatch")],
)
def test_wrong_job_fields_fail_every_task(field: str, value: str, reason: str) -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc[field] = value
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert sorted(report.problems) == [f"{job_id}/t0", f"{job_id}/t1"]
    assert all(p.startswith(f"{reason}:") for p in report.problems.values()), report.problems


def test_raised_limits_in_the_document_are_a_binding_mismatch() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc["tasks"][0]["limits"]["fuel_max"] *= 2
    assert only_problem(verify_job(peer, job_id), f"{job_id}/t0").startswith("binding-mismatch:")  # type: ignore[arg-type]


def test_garbage_in_the_document_is_a_problem_not_a_crash() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    doc["receipts"][0] = "zz"
    doc["tasks"][1] = "not an object"
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert set(report.problems) == {f"{job_id}/t0", "1"}


def test_a_job_without_tasks_is_not_ok() -> None:
    peer = FakePeer()
    job_id, doc = submit(peer)
    for key in ("tasks", "receipts", "outputs", "workers"):
        doc[key] = []
    report = verify_job(peer, job_id)  # type: ignore[arg-type]
    assert not report.ok
    assert report.summary() == "FAILED: 0 of 0 task(s) did not verify; -: no tasks"


def test_the_document_is_really_a_tree_per_task() -> None:
    # the fixture itself: every receipt decodes, and is signed by the worker the document names
    peer = FakePeer(delegate=1)
    _, doc = submit(peer)
    for hex_tree, worker in zip(doc["receipts"], doc["workers"], strict=True):
        assert ReceiptTree.decode(bytes.fromhex(hex_tree), VerifyConfig()).receipt.signer == worker


def test_the_document_of_another_job_does_not_verify() -> None:
    peer = FakePeer()
    asked, _ = submit(peer)
    other, other_doc = submit(peer)
    peer.runs[asked].doc = other_doc  # honest receipts, but for another job than the one asked about
    report = verify_job(peer, asked)  # type: ignore[arg-type]
    assert sorted(report.problems) == [f"{other}/t0", f"{other}/t1"]
    assert all(p.startswith("binding-mismatch: receipt root is for job_id") for p in report.problems.values())


def test_the_handle_checks_the_document_against_what_it_submitted() -> None:
    peer = FakePeer()
    job: Job[list[bytes]] = Job("sha", guest="sha256", chunks_per_task=3, verification="hash")
    job.split(lambda data: splits.by_count(data, 8))
    job.merge(lambda outputs: outputs)
    handle = job.submit(DATA, peer)  # type: ignore[arg-type]
    assert handle.wait()["state"] == "done"
    assert handle.verify().ok
    doc = peer.runs[handle.job_id].doc
    # a peer that quietly drops the last task: every remaining receipt is valid, the job is not what was sent
    dropped = {**doc, **{k: doc[k][:-1] for k in ("tasks", "receipts", "outputs", "workers")}}
    peer.runs[handle.job_id].doc = dropped
    assert verify_job(peer, handle.job_id).ok  # type: ignore[arg-type]  # consistent with itself...
    report = handle.verify()  # ...but not with the submitter's own record
    assert not report.ok
    assert "not the 8 submitted ones" in report.problems["job"]
    assert report.summary().startswith(f"FAILED: 0 of {report.tasks} task(s) did not verify; job: the tasks cover")
    peer.runs[handle.job_id].doc = {**doc, "module_cid": cid_of(b"another module")}
    assert "not the submitted" in handle.verify().problems["job"]


def test_the_whole_job_comes_in_one_request_or_in_pages_and_verifies_alike() -> None:
    one = FakePeer()
    job_id, _ = submit(one, chunks_per_task=1)  # 8 tasks
    assert verify_job(one, job_id).ok  # type: ignore[arg-type]
    assert one.evidence_requests == [(job_id, 0, True)]
    paged = FakePeer(page_bytes_max=1)  # every page holds one task
    job_id, _ = submit(paged, chunks_per_task=1)
    report = verify_job(paged, job_id, check_inputs=False)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert report.tasks == report.receipts == 8
    assert paged.evidence_requests == [(job_id, i, False) for i in range(8)]


class Tampering:
    """A peer's API that changes its honest evidence pages with ``tamper`` before handing them out."""

    def __init__(self, peer: FakePeer, tamper: Callable[[EvidencePage], EvidencePage]) -> None:
        self.peer, self.tamper = peer, tamper

    def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
        page = self.tamper(decode_page(self.peer.job_evidence(job_id, start, inputs=inputs)))
        tasks = page.tasks
        return encode_page(page.job, page.start + len(tasks), lambda i: tasks[i - page.start], page.start)


def test_input_chunks_that_are_not_the_ones_the_task_names_are_named() -> None:
    """The framed input matches the input id the receipts name, but the task claims other chunks: a peer that
    ran the job on other data than it says. Reordered chunk ids are caught too."""
    peer = FakePeer()
    job_id, _ = submit(peer)

    def swap_chunk_ids(page: EvidencePage) -> EvidencePage:
        fields = page.tasks[1].fields
        fields["chunk_cids"][0], fields["chunk_cids"][1] = fields["chunk_cids"][1], fields["chunk_cids"][0]
        return page

    report = verify_job(Tampering(peer, swap_chunk_ids), job_id)  # type: ignore[arg-type]
    assert only_problem(report, f"{job_id}/t1") == "the task's input chunks are not the chunks it names"


def test_a_receipt_moved_to_another_page_slot_is_named() -> None:
    peer = FakePeer()
    job_id, _ = submit(peer)

    def swap_trees(page: EvidencePage) -> EvidencePage:
        a, b = page.tasks
        page.tasks[:] = [replace(a, tree=b.tree), replace(b, tree=a.tree)]
        return page

    report = verify_job(Tampering(peer, swap_trees), job_id)  # type: ignore[arg-type]
    assert sorted(report.problems) == [f"{job_id}/t0", f"{job_id}/t1"]


@pytest.mark.parametrize("page", [b"", b"not framed", frame_chunks([b"{}"]), frame_chunks([b'{"tasks": [1]}']),
                                  frame_chunks([b'{"tasks": [], "start": 0, "next": 0}'])])
def test_a_malformed_evidence_page_is_a_problem_of_the_job(page: bytes) -> None:
    class Garbage:
        def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
            return page

    report = verify_job(Garbage(), "j")  # type: ignore[arg-type]
    assert not report.ok
    assert list(report.problems) == ["job"]


def test_pages_that_do_not_start_where_asked_are_a_problem_of_the_job() -> None:
    peer = FakePeer(page_bytes_max=1)
    job_id, _ = submit(peer)

    class Stuck:
        def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
            return peer.job_evidence(job_id, 0, inputs=inputs)  # always the first page

    report = verify_job(Stuck(), job_id)  # type: ignore[arg-type]
    assert report.problems == {"job": "evidence page 1 starts at task 0"}
