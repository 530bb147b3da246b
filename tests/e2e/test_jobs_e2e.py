"""End to end: jobs on real ``pangea node`` processes on 127.0.0.1, driven through the SDK and HTTP API."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.sdk.client import Client
from pangea_p2p.sdk.job import Job, JobHandle, Limits
from pangea_p2p.sdk.verify import verify_job
from tests.e2e.nodeproc import NodeProcess

pytestmark = pytest.mark.slow
LOCAL = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0"]
FAST = ["--set", "capacity.advert_interval_s=1", "--set", "dht.bootstrap_retry_s_min=0.2"]
BENCH_ROUNDS = 150_000_000  # about a second of the `bench` guest


def settings(**kv: Any) -> list[str]:
    return [a for k, v in kv.items() for a in ("--set", f"{k.replace('__', '.')}={v}")]


class Net:
    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes
        self.ids = [n.addrs()[0].rsplit("/p2p/", 1)[1] for n in nodes]

    def client(self, i: int = 0) -> Client:
        """Node i's client, as a user's: address and token from its data dir."""
        self.nodes[i].addrs()  # serving: DATA_DIR/api and DATA_DIR/api_token are written
        return Client.for_data_dir(self.nodes[i].data_dir, timeout_s=60)

    def wait_for_adverts(self, client: Client, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while len(client.capacity()["adverts"]) < len(self.nodes):
            assert time.monotonic() < deadline, "the peers did not see each other's adverts"
            time.sleep(0.2)  # polling another process's HTTP API


@contextmanager
def network(base: Path, per_node: list[list[str]], env: dict[str, str] | None = None,
            node_env: dict[int, dict[str, str]] | None = None) -> Iterator[Net]:
    """Peers on 127.0.0.1, node 0 the bootstrap; ``env`` for every node, ``node_env[i]`` for node i only."""
    nodes: list[NodeProcess] = []
    saved = dict(os.environ)
    os.environ.update(env or {})
    common = dict(os.environ)

    def start(i: int, *args: str) -> NodeProcess:
        os.environ.clear()
        os.environ.update({**common, **(node_env or {}).get(i, {})})
        return NodeProcess(base / f"p{i}", *LOCAL, *FAST, *args)

    try:
        nodes.append(start(0, *per_node[0]))
        boot = nodes[0].addrs()[0]
        for i, extra in enumerate(per_node[1:], 1):
            nodes.append(start(i, "--bootstrap", boot, *extra))
        net = Net(nodes)
        with net.client() as client:
            net.wait_for_adverts(client)
        yield net
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for node in nodes:
            node.kill()


def sha_job(verification: str, chunks_per_task: int = 1) -> Job[list[bytes]]:
    job: Job[list[bytes]] = Job("sha", guest="sha256", verification=verification, chunks_per_task=chunks_per_task)
    job.split(lambda data: list(data))
    job.merge(lambda outputs: outputs)
    return job


def wait_done(client: Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status = client.job(job_id)
    while status["state"] == "running":
        assert time.monotonic() < deadline, client.explain(job_id)
        status = client.wait_job(job_id, status["version"], 5.0)  # long poll: returns on any change
    return dict(status)


def test_a_job_completes_when_a_worker_process_is_killed_mid_task(tmp_path: Path) -> None:
    workers = settings(capacity__task_slots=1)
    with network(tmp_path, [settings(capacity__task_slots=1)] + [workers] * 3) as net, net.client() as client:
        job: Job[list[bytes]] = Job("busy", guest="bench", verification="spot:1", limits=Limits(fuel_max=10**10))
        job.split(lambda n: [struct.pack("<I", BENCH_ROUNDS + i) for i in range(n)])
        job.merge(lambda outputs: outputs)
        handle = job.submit(6, client)
        # wait until some task is running on a worker, then kill that worker's process (SIGKILL: no goodbye)
        victim = None
        deadline = time.monotonic() + 60
        while victim is None:
            assert time.monotonic() < deadline, client.explain(handle.job_id)
            for reasons in (t["reasons"] for t in client.explain(handle.job_id)["tasks"].values()):
                sent = [r.split()[2] for r in reasons if r.startswith("sent to ")]
                if sent and sent[-1] in net.ids[1:]:
                    victim = sent[-1]
                    break
            else:
                time.sleep(0.05)  # polling the API
        net.nodes[net.ids.index(victim)].stop(signal.SIGKILL)
        status = wait_done(client, handle.job_id, 180)
        assert status["state"] == "done", client.explain(handle.job_id)
        expected = job.run_local(6)
        assert handle.outputs() == expected
        assert handle.verify().ok


def test_a_byzantine_worker_is_outvoted_and_its_trust_drops(tmp_path: Path) -> None:
    liar = settings(faults__byzantine="wrong_output")
    # The submitter cannot run these tasks itself (less memory than they ask for): no local fallback settles a
    # task while the liar's replica is still out, so every task is decided by a vote the liar takes part in.
    no_local = settings(compute__memory_bytes_max=64 << 20)
    # A slot per replica of every task: with fewer, a task's third replica can wait in the queue for the liar's
    # slot while the two honest replicas already agree (a quorum of 2 of 3), and the liar is then never voted on.
    slots = settings(capacity__task_slots=6)
    with network(tmp_path, [no_local, slots, slots, liar + slots], env={"PANGEA_ALLOW_FAULTS": "1"}
                 ) as net, net.client() as client:
        chunks = [f"vote {i}".encode() for i in range(6)]
        handle = sha_job("replicas:3").submit(chunks, client)
        status = wait_done(client, handle.job_id)
        assert status["state"] == "done", client.explain(handle.job_id)
        assert handle.outputs() == [hashlib.sha256(c).digest() for c in chunks]
        assert net.ids[3] not in status["workers"]  # the liar's answer was never the accepted one
        scores = {row["peer_id"]: row for row in client.trust()["trust"]}
        assert net.ids[3] in scores, client.explain(handle.job_id, done=True)
        # outvoted on every task, also where its reveal came after the honest quorum's (the audits of those
        # disputes cannot run here: this peer has less memory than the tasks ask, so no lie is proven)
        assert scores[net.ids[3]]["outvoted"] == len(chunks), client.explain(handle.job_id, done=True)
        assert scores[net.ids[3]]["score"] < min(scores[p]["score"] for p in net.ids[1:3])
        report = handle.verify()
        assert report.ok, report.problems
        assert net.ids[3] not in report.signers


def test_a_three_level_delegation_returns_a_receipt_chain_that_verifies_offline(tmp_path: Path) -> None:
    split = settings(compute__split_above_s=0.001, compute__split_parts_max=2)
    with network(tmp_path, [[]] + [split] * 4) as net, net.client() as client:
        chunks = [bytes([i]) * 4096 for i in range(4)]
        handle = sha_job("spot:1", chunks_per_task=4).submit(chunks, client)
        status = wait_done(client, handle.job_id)
        assert status["state"] == "done", client.explain(handle.job_id)
        assert handle.outputs() == [hashlib.sha256(c).digest() for c in chunks]
        (tree_bytes,) = handle.receipts()
        tree = ReceiptTree.decode(tree_bytes, VerifyConfig())
        levels = [tree.receipt.signer]
        node = tree
        while node.children:
            node = node.children[0]
            levels.append(node.receipt.signer)
        assert len(levels) == 3, levels  # A delegated to B, B delegated to C, C ran
        assert len({net.ids[0], *levels}) == 4  # four different peers on the path
        report = handle.verify()  # offline: signatures, bindings, chunk commitments, inputs
        assert report.ok, report.problems
        assert report.depth_max == 2
        assert report.receipts == 1 + 2 + 4


def test_a_restarted_submitter_resumes_its_job_from_the_journal(tmp_path: Path) -> None:
    slots = settings(capacity__task_slots=1)
    with network(tmp_path, [slots] * 3) as net:
        with net.client() as client:
            job: Job[list[bytes]] = Job("long", guest="bench", verification="spot:1",
                                        limits=Limits(fuel_max=10**10))
            job.split(lambda n: [struct.pack("<I", BENCH_ROUNDS // 2 + i) for i in range(n)])
            job.merge(lambda outputs: outputs)
            handle = job.submit(8, client)
            deadline = time.monotonic() + 90
            status = client.job(handle.job_id)
            while status["progress"]["done"] < 2:  # some tasks done, some not
                assert time.monotonic() < deadline, client.explain(handle.job_id)
                status = client.wait_job(handle.job_id, status["version"], 5.0)
            assert status["state"] == "running"
            done_before = status["progress"]["done"]
        submitter = net.nodes[0]
        assert submitter.stop(signal.SIGTERM) < 10
        stopped_log = list(submitter.stderr)
        submitter.kill()  # closes its pipes
        boot = net.nodes[1].addrs()[0]
        net.nodes[0] = NodeProcess(tmp_path / "p0", *LOCAL, *FAST, *slots, "--bootstrap", boot)
        net.nodes[0].addrs()
        with net.client() as client:
            resumed = client.job(handle.job_id)  # the journal brought it back, with what was done before
            assert resumed["progress"]["done"] >= done_before
            status = wait_done(client, handle.job_id, 180)
            assert status["state"] == "done", client.explain(handle.job_id)
            assert handle_for(client, handle.job_id).outputs() == job.run_local(8)
            # the handle's client died with the old submitter; the new one answers for the same job
            assert verify_job(client, handle.job_id, module_cid=handle.module_cid, chunk_cids=handle.chunk_cids).ok
        assert any("job.resumed" in line for line in net.nodes[0].stderr), (stopped_log[-5:], net.nodes[0].stderr[-20:])


def handle_for(client: Client, job_id: str) -> JobHandle[list[bytes]]:
    return JobHandle(client, job_id, list, client.job(job_id))
