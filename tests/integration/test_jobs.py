"""Jobs on peers in one trio process on 127.0.0.1: delegation, verification policies, faults, explain."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.behaviour import JobRun
from pangea_p2p.core.jobs.events import Fetch, FromWorker
from pangea_p2p.core.jobs.model import JobSpec, JobState, VerificationPolicy
from pangea_p2p.core.trust import TrustBook
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.guests import load_guest
from pangea_p2p.node.blocks import BlockStore
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.peer import Peer, open_peer
from pangea_p2p.testing import local_config, open_network, wait_for

pytestmark = pytest.mark.slow

LIMITS = ReceiptLimits(fuel_max=10**10, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)
SETTINGS = {"capacity.task_slots": 2}


@asynccontextmanager
async def open_peers(base: Path, settings: list[dict[str, Any]]) -> AsyncIterator[list[Peer]]:
    """One peer per entry of ``settings`` (dotted keys), all bootstrapping from the first; ready to work."""
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        for i, extra in enumerate(settings):
            boot = [peers[0].addrs()[0]] if peers else None
            overrides = {k.replace(".", "__"): v for k, v in {**SETTINGS, **extra}.items()}
            peers.append(await stack.enter_async_context(open_peer(local_config(base / f"p{i}", boot, **overrides))))
        await network_ready(peers)
        yield peers


def verify_offline(peer: Peer, run: JobRun) -> list[Any]:
    """Every task's receipt tree verified against the binding rebuilt from the job (as an auditor would)."""
    out = []
    for task_id in run.spec.task_ids():
        entry = run.task(task_id)
        tree = ReceiptTree.decode(entry.tree, VerifyConfig())
        binding = TaskBinding.of(job_id=run.spec.job_id, task_id=task_id, module_cid=run.spec.module_cid,
                                 input_cid=entry.ref.input_cid, limits=entry.limits or LIMITS,
                                 issuer=peer.peer_id, chunk_count=entry.ref.chunk_count)
        data = compute_of(peer).blocks.get(entry.output_cid)
        assert data is not None
        verified = verify_tree(tree, binding, time.time(), VerifyConfig(), worker=entry.worker, output=data)
        assert verified.output_digest == hashlib.sha256(data).digest()
        out.append((tree, verified))
    return out


def depth(tree: ReceiptTree) -> int:
    return 1 + max(depth(c) for c in tree.children) if tree.children else 0


def compute_of(peer: Peer) -> ComputeService:
    assert peer.compute is not None
    return peer.compute


async def network_ready(peers: list[Peer]) -> None:
    ids = {p.peer_id for p in peers}
    await wait_for(lambda: all(set(p.directory.peers(time.time())) == ids for p in peers), 60)


_SUBMITTED_AT: dict[int, ComputeService] = {}  # id(run) -> the compute service it was submitted to


def submit(peer: Peer, chunks: list[bytes], guest: str = "sha256", **spec: Any) -> JobRun:
    compute = compute_of(peer)
    module_cid = compute.blocks.put(load_guest(guest), persist=True)
    cids = tuple(compute.blocks.put(c, persist=True) for c in chunks)
    job = JobSpec(job_id=spec.pop("job_id", f"job{len(compute.jobs)}"), module_cid=module_cid, chunk_cids=cids,
                  chunk_sizes=tuple(len(c) for c in chunks), limits=spec.pop("limits", LIMITS), **spec)
    run = compute.submit(job)
    _SUBMITTED_AT[id(run)] = compute
    return run


def outputs(peer: Peer, run: JobRun) -> list[bytes]:
    compute = compute_of(peer)
    out: list[bytes] = []
    for task_id in run.spec.task_ids():
        data = compute.blocks.get(run.task(task_id).output_cid)
        assert data is not None
        out.extend(unframe_chunks(data))
    return out


async def finished(run: JobRun, timeout_s: float = 60) -> None:
    done = _SUBMITTED_AT[id(run)].watch(run.spec.job_id).done
    with trio.move_on_after(timeout_s):
        await done.wait()
    if not done.is_set():
        raise AssertionError(f"job {run.spec.job_id} not finished after {timeout_s} s: {run.explain()}")


async def test_a_job_runs_on_other_peers_and_its_receipts_verify(tmp_path: Path) -> None:
    async with open_network(4, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        chunks = [f"chunk {i}".encode() * (i + 1) for i in range(12)]
        run = submit(peers[0], chunks, chunks_per_task=2, verification=VerificationPolicy.parse("hash"))
        await finished(run)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        assert len(set(run.workers) - {peers[0].peer_id}) >= 2, f"work spreads over the network: {run.workers}"
        assert sum(run.workers.values()) == run.spec.task_count
        verify_offline(peers[0], run)


async def test_workers_split_big_tasks_and_a_three_level_receipt_chain_verifies(tmp_path: Path) -> None:
    # Workers split anything expected to take over a millisecond: the task goes submitter -> A (splits) ->
    # B (splits) -> C (runs), and the receipt tree the submitter gets is two delegation levels deep.
    split = {"compute.split_above_s": 0.001, "compute.split_parts_max": 2}
    async with open_peers(tmp_path, [{}] + [split] * 6) as peers:
        chunks = [bytes([i]) * 1000 for i in range(4)]
        run = submit(peers[0], chunks, chunks_per_task=4, depth_max=2,
                     verification=VerificationPolicy.parse("spot:1"))
        await finished(run, 90)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        ((tree, verified),) = verify_offline(peers[0], run)
        assert depth(tree) == 2
        assert len(verified.leaves) == 4  # one chunk per leaf at the bottom
        assert verified.fuel_used == sum(leaf.fuel_used for leaf in verified.leaves)
        for child in tree.children:  # no peer twice on a path: submitter -> A -> B -> leaf
            for leaf in child.children:
                path = [peers[0].peer_id, tree.receipt.signer, child.receipt.signer, leaf.receipt.signer]
                assert len(set(path)) == 4, path
        assert peers[0].peer_id not in verified.signers


async def test_a_byzantine_worker_is_outvoted_and_loses_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANGEA_ALLOW_FAULTS", "1")
    # the submitter cannot run these tasks itself (too little memory), so every task is settled by a vote
    no_local = {"compute.memory_bytes_max": 32 << 20}
    async with open_peers(tmp_path, [no_local, {}, {}, {}, {"faults.byzantine": "wrong_output"}]) as peers:
        liar = peers[4].peer_id
        chunks = [f"vote {i}".encode() for i in range(8)]
        run = submit(peers[0], chunks, verification=VerificationPolicy.parse("replicas:3"))
        await finished(run, 90)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        assert liar not in {e.worker for e in run.tasks()}
        trust: TrustBook = compute_of(peers[0]).trust
        now = time.time()
        honest = [trust.score(p.peer_id, now) for p in peers[1:4]]
        assert trust.score(liar, now) < min(honest), (trust.score(liar, now), honest)
        reasons = [r for e in run.tasks() for r in e.reasons]
        assert any(f"{liar} was outvoted" in r for r in reasons)


async def test_a_spot_check_catches_a_byzantine_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANGEA_ALLOW_FAULTS", "1")
    async with open_peers(tmp_path, [{}, {"faults.byzantine": "wrong_output"}, {}]) as peers:
        liar = peers[1].peer_id
        chunks = [f"spot {i}".encode() for i in range(6)]
        run = submit(peers[0], chunks, verification=VerificationPolicy.parse("spot:1"))
        await finished(run, 90)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        assert liar not in {e.worker for e in run.tasks()}
        reasons = [r for e in run.tasks() for r in e.reasons]
        assert any("spot check of chunk 0 failed" in r and liar in r for r in reasons), reasons


async def test_a_task_no_worker_can_take_fails_after_the_queue_timeout_with_its_reason(tmp_path: Path) -> None:
    async with open_network(2, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        huge = ReceiptLimits(fuel_max=10**10, memory_bytes_max=3 << 30, wall_time_s=10.0, output_bytes_max=1 << 20)
        run = submit(peers[0], [b"x"], limits=huge, queue_timeout_s=1.0)
        await finished(run, 30)
        assert run.state is JobState.FAILED
        (reasons,) = run.explain().values()
        assert any("queued" in r and "memory" in r for r in reasons), reasons
        assert "queue timeout" in run.reason


async def test_a_vote_that_lacks_workers_is_settled_by_the_submitters_own_run(tmp_path: Path) -> None:
    # replicas:2 with a single worker: the second replica can never be placed; after a short wait the
    # submitter runs the task itself, accepts its own answer and grades the worker's against it.
    async with open_network(2, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        chunks = [f"pair {i}".encode() for i in range(3)]
        run = submit(peers[0], chunks, verification=VerificationPolicy.parse("replicas:2"))
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        reasons = [r for e in run.tasks() for r in e.reasons]
        assert any(r.startswith("local fallback") for r in reasons), reasons
        record = compute_of(peers[0]).trust.get(peers[1].peer_id)
        assert record is not None
        assert record.valid >= 1
        assert record.invalid == 0, reasons


async def test_a_bug_on_a_worker_is_reported_to_the_issuer_and_both_keep_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_network(3, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        broken = compute_of(peers[1])

        async def explode(*_: Any, **__: Any) -> tuple[bytes, bytes]:
            raise RuntimeError("boom")

        monkeypatch.setattr(broken, "_execute", explode)
        chunks = [f"bug {i}".encode() for i in range(4)]
        run = submit(peers[0], chunks, verification=VerificationPolicy.parse("spot:1"))
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]
        assert peers[1].peer_id not in run.workers
        reasons = [r for e in run.tasks() for r in e.reasons]
        # both workers had free slots, so the broken one was offered tasks; it said why it could not do them
        assert any(r.startswith(f"sent to {peers[1].peer_id}") for r in reasons), reasons
        assert any("internal error on this worker: RuntimeError" in r for r in reasons), reasons
        assert any("task.internal_error" in rec.getMessage() for rec in caplog.records)
        # the broken worker's peer is still up: it still serves blocks and answers offers (with a refusal)
        monkeypatch.undo()
        run2 = submit(peers[0], [b"after"], verification=VerificationPolicy.parse("spot:1"))
        await finished(run2, 60)
        assert run2.state is JobState.DONE


async def test_a_result_nobody_asked_for_is_neither_fetched_nor_stored(tmp_path: Path) -> None:
    async with open_network(2, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        compute = compute_of(peers[0])
        run = submit(peers[0], [b"only"], verification=VerificationPolicy.parse("spot:1"))
        await finished(run, 60)
        task_id = run.spec.task_ids()[0]
        rogue = peers[1].peer_id  # done with the task: it holds no attempt any more
        junk = b"\x01" * 1000
        for i in range(20):
            inline = codec.Result(task_id, b"not a receipt", output_inline=junk + bytes([i]))
            by_cid = codec.Result(task_id, b"not a receipt", output_cid=cid_of(junk + bytes([i])), output_bytes=1001)
            for msg in (inline, by_cid):
                actions = compute.behaviour.handle(time.time(), FromWorker(rogue, msg))
                assert not [a for a in actions if isinstance(a, Fetch)]
            assert compute.blocks.get(cid_of(junk + bytes([i]))) is None
        assert run.state is JobState.DONE


async def test_a_job_whose_inputs_overflow_the_memory_cache_still_completes(tmp_path: Path) -> None:
    # Task inputs go to disk soon after submit (held in memory till then): evicted from the LRU, they are read back.
    async with open_network(3, tmp_path, SETTINGS) as peers:
        await network_ready(peers)
        compute_of(peers[0]).blocks.memory_bytes_max = 100 << 10  # room for two of the inputs below
        chunks = [bytes([i]) * (40 << 10) for i in range(10)]
        run = submit(peers[0], chunks, verification=VerificationPolicy.parse("spot:1"))
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()
        assert outputs(peers[0], run) == [hashlib.sha256(c).digest() for c in chunks]


async def test_task_inputs_waiting_for_the_disk_are_written_when_the_peer_stops(tmp_path: Path) -> None:
    # Found in review: a batch the writer had taken was dropped when shutdown cancelled the writer before its
    # thread started, and close() writes only what no writer took: inputs missing after a restart.
    chunks = [f"input {i}".encode() for i in range(300)]
    async with open_network(1, tmp_path, SETTINGS) as (peer,):
        run = submit(peer, chunks)
        inputs = [entry.ref.input_cid for entry in run.tasks()]
        await trio.lowlevel.checkpoint()  # the writer task starts and takes a batch; the peer stops right after
    store = BlockStore(tmp_path / "p0" / "blocks")  # what a restarted peer reads
    try:
        assert [c for c in inputs if store.get(c) is None] == []
    finally:
        store.close()
