"""End to end, under load and partitions: real ``pangea node`` processes on 127.0.0.1. A job bigger than the
free slots waits for them (no queue timeout fails it), and a job survives a partition longer than any timeout
of the protocol (its workers frozen for 90 s, then thawed)."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import pytest

from pangea_p2p.sdk.job import Job
from tests.e2e.test_jobs_e2e import network, settings, sha_job, wait_done

pytestmark = pytest.mark.slow
# The submitter cannot run the tasks itself (less memory than they ask for): every task goes to a worker.
NO_LOCAL = settings(compute__memory_bytes_max=64 << 20)


def test_a_job_of_600_tasks_on_3_busy_workers_completes(tmp_path: Path) -> None:
    one_slot = settings(capacity__task_slots=1, compute__queue_max=0)  # full after one task: "busy" beyond that
    with network(tmp_path, [NO_LOCAL] + [one_slot] * 3) as net, net.client() as client:
        chunks = [f"task {i}".encode() for i in range(600)]
        job: Job[list[bytes]] = Job("many", guest="sha256", queue_timeout_s=1.0)
        job.split(lambda data: list(data))
        job.merge(lambda outputs: outputs)
        handle = job.submit(chunks, client)
        status = wait_done(client, handle.job_id, 600)
        assert status["state"] == "done", (status["reason"], status["progress"])
        # 600 tasks through 3 slots: most waited far longer than the 1 s queue timeout, and none failed for it
        assert status["elapsed_s"] > 1.0
        assert status["progress"]["failed"] == 0
        assert handle.outputs() == [hashlib.sha256(c).digest() for c in chunks]
        assert set(status["workers"]) == set(net.ids[1:])


def test_a_job_survives_a_90_s_partition(tmp_path: Path) -> None:
    with network(tmp_path, [NO_LOCAL] + [settings(capacity__task_slots=2)] * 2) as net, net.client() as client:
        chunks = [f"before and after {i}".encode() for i in range(40)]
        handle = sha_job("hash").submit(chunks[:4], client)
        assert wait_done(client, handle.job_id)["state"] == "done"  # the network works
        workers = net.nodes[1:]
        for w in workers:  # the submitter is cut off from every worker: they neither answer nor send anything
            w.proc.send_signal(signal.SIGSTOP)
        try:
            frozen = sha_job("hash").submit(chunks, client)
            started = time.monotonic()
            deadline = started + 90.0
            while time.monotonic() < deadline:  # the job waits through the partition, it does not fail
                status = client.wait_job(frozen.job_id, client.job(frozen.job_id)["version"],
                                         min(5.0, max(0.1, deadline - time.monotonic())))
                assert status["state"] == "running", (status["reason"], client.explain(frozen.job_id))
        finally:
            for w in workers:
                w.proc.send_signal(signal.SIGCONT)
        status = wait_done(client, frozen.job_id, 240)
        assert status["state"] == "done", (status["reason"], client.explain(frozen.job_id))
        assert time.monotonic() - started >= 90.0
        assert frozen.outputs() == [hashlib.sha256(c).digest() for c in chunks]
