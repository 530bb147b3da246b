"""Replicated tasks: a worker that already voted on a task is never given another replica of it.

Found by the simulator (tests/sim): after a disagreement the tally asks for more replicas, and the coordinator
offered one to a worker whose vote was already in; its second receipt for the task was then refused as a replay
and the honest worker was penalised as if it had lied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs.coordinator import Coordinator, WorkerSource
from pangea_p2p.core.jobs.effects import Dispatch
from pangea_p2p.core.jobs.model import VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.scheduler import WorkerView
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.replay import ReplayGuard
from tests.core.jobs.helpers import task, worker

T0 = 1_700_000_000.0
SUBMITTER = Identity(hashlib.sha256(b"submitter").digest())
WORKERS = [Identity(hashlib.sha256(f"w{i}".encode()).digest()) for i in range(6)]


def test_escalated_replicas_go_to_workers_that_have_not_voted() -> None:
    ref = dataclasses.replace(task(path=(SUBMITTER.peer_id,)), issuer=SUBMITTER.peer_id)
    views = [worker(w.peer_id, speed=1e9 * (10 - i)) for i, w in enumerate(WORKERS)]

    def source_views(now: float) -> list[WorkerView]:
        return views

    coord = Coordinator(
        SUBMITTER.peer_id, [ref], VerificationPolicy(VerificationMode.REPLICAS, replicas=3, commit_reveal=False),
        retries_max=3, escalations_max=0, escalation_factor=2.0, queue_timeout_s=60.0, trust=TrustBook(),
        guard=ReplayGuard(VerifyConfig()), source=WorkerSource(source_views, lambda now: None),
        rng=random.Random(1), now=T0,
    )
    first = [e.worker for e in coord.start(T0) if isinstance(e, Dispatch)]
    assert len(first) == 3
    binding = TaskBinding.of(job_id=ref.job_id, task_id=ref.task_id, module_cid=ref.module_cid,
                             input_cid=ref.input_cid, limits=ref.limits, issuer=SUBMITTER.peer_id, chunk_count=1)
    by_id = {w.peer_id: w for w in WORKERS}
    effects = []
    for k, peer in enumerate(first):  # three different answers: no quorum, the tally asks for more replicas
        output = frame_chunks([bytes([k]) * 8])
        receipt = issue_receipt(by_id[peer], binding, output=output, fuel_used=1000 + k, now=T0 + 1,
                                rng=random.Random(k))
        effects += coord.on_result(ref.task_id, peer, ReceiptTree(receipt, ()).encode(), output, T0 + 1)
    more = [e.worker for e in effects if isinstance(e, Dispatch)]
    assert more, "the tally should have asked for more replicas"
    assert not set(more) & set(first)
