"""End to end, across a peer's death and restart: a `kill -9`'d peer leaves no sandbox process behind, and a
submitter's trust in a liar survives its restart (the liar gets no work in the next job)."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from pangea_p2p.core.jobs.scheduler import SchedulerConfig
from pangea_p2p.sdk.job import Job, Limits
from tests.e2e.nodeproc import NodeProcess, wait_gone
from tests.e2e.test_jobs_e2e import FAST, LOCAL, network, settings, sha_job, wait_done

pytestmark = pytest.mark.slow
FLOOR = SchedulerConfig().trust_floor
NO_LOCAL = settings(compute__memory_bytes_max=64 << 20)  # the submitter cannot run the tasks itself


def sent_to(client: object, job_id: str) -> set[str]:
    """The peers the submitter sent any task of ``job_id`` to (its explain's reasons)."""
    tasks = client.explain(job_id)["tasks"].values()  # type: ignore[attr-defined]
    return {r.split()[2] for t in tasks for r in t["reasons"] if r.startswith("sent to ")}


def test_a_killed_peer_leaves_no_sandbox_process_behind(tmp_path: Path) -> None:
    with network(tmp_path, [NO_LOCAL, settings(capacity__task_slots=1)]) as net, net.client() as client:
        job: Job[list[bytes]] = Job("spin", guest="infinite_loop", verification="replicas:1",
                                    limits=Limits(fuel_max=10**11, wall_time_s=300.0))
        job.split(lambda n: [bytes([i]) for i in range(n)])
        job.merge(lambda outputs: outputs)
        handle = job.submit(1, client)
        worker = psutil.Process(net.nodes[1].proc.pid)
        deadline = time.monotonic() + 60
        while net.ids[1] not in sent_to(client, handle.job_id):
            assert time.monotonic() < deadline, client.explain(handle.job_id)
            time.sleep(0.05)  # polling the API
        first_cpu: dict[int, float] = {}
        spinning = None
        while spinning is None:  # the guest's sandbox process is seen burning a second of CPU
            assert time.monotonic() < deadline, client.explain(handle.job_id)
            for kid in worker.children(recursive=True):
                try:
                    cpu = kid.cpu_times().user
                except psutil.NoSuchProcess:
                    continue
                if cpu - first_cpu.setdefault(kid.pid, cpu) >= 1.0:
                    spinning = kid
            time.sleep(0.1)  # sampling CPU time
        descendants = [kid.pid for kid in worker.children(recursive=True)]
        assert spinning.pid in descendants
        net.nodes[1].stop(signal.SIGKILL)
        left = wait_gone(descendants, timeout_s=10)
        for pid in left:
            psutil.Process(pid).kill()
        assert not left, f"sandbox processes outlived their kill -9'd peer: {left}"


def _saved_record(path: Path, peer_id: str) -> dict[str, int] | None:
    """The trust record of ``peer_id`` in another process's trust file (None: not there yet)."""
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            row = db.execute("SELECT record FROM trust WHERE peer = ?", (peer_id,)).fetchone()
        except sqlite3.Error:
            return None
    return None if row is None else dict(json.loads(row[0]))


def test_trust_in_a_liar_survives_a_kill_and_restart_of_the_submitter(tmp_path: Path) -> None:
    liar = settings(faults__byzantine="wrong_output")
    slots = settings(capacity__task_slots=6)  # a slot per replica (see the Byzantine test in test_jobs_e2e)
    # the submitter can re-run the tasks: its audits of the disputed votes prove the liar (outvotes alone are weak)
    with network(tmp_path, [slots, slots, slots, liar + slots], env={"PANGEA_ALLOW_FAULTS": "1"}) as net:
        liar_id, honest = net.ids[3], net.ids[1:3]
        chunks = [f"vote {i}".encode() for i in range(6)]
        with net.client() as client:
            handle = sha_job("replicas:3").submit(chunks, client)
            status = wait_done(client, handle.job_id)
            assert status["state"] == "done", client.explain(handle.job_id)
            before = {row["peer_id"]: row for row in client.trust()["trust"]}
            assert before[liar_id]["score"] < FLOOR, before
        # a caught liar is written soon (no clean shutdown needed): wait for it, then kill -9 the submitter
        trust_file = tmp_path / "p0" / "trust.sqlite"
        deadline = time.monotonic() + 30
        evidence = ("valid", "invalid", "timeouts", "outvoted", "lies", "proven", "vindicated")
        # (the proven lie is the strong event that put it below the floor: an outvote alone costs 2)
        while not ((rec := _saved_record(trust_file, liar_id)) and int(rec["lies"]) + int(rec["proven"]) >= 1):
            assert time.monotonic() < deadline, "the liar's record was not saved"
            time.sleep(0.1)  # polling another process's file
        net.nodes[0].stop(signal.SIGKILL)
        net.nodes[0].kill()
        # what the file held when the peer died (later evidence may have been saved before the kill, or not:
        # saves of weaker events are batched)
        saved = _saved_record(trust_file, liar_id)
        assert saved is not None
        net.nodes[0] = NodeProcess(tmp_path / "p0", *LOCAL, *FAST, *slots, "--bootstrap", net.nodes[1].addrs()[0])
        net.nodes[0].addrs()
        with net.client() as client:
            after = {row["peer_id"]: row for row in client.trust()["trust"]}
            assert after[liar_id]["score"] < FLOOR, after
            assert {k: after[liar_id][k] for k in evidence} == {k: saved[k] for k in evidence}
            assert after[liar_id]["outvoted"] + after[liar_id]["lies"] >= 1  # caught: outvoted, or proven
            assert all(after[p]["score"] > FLOOR for p in honest), after
            net.wait_for_adverts(client)
            again = [f"again {i}".encode() for i in range(4)]
            handle = sha_job("replicas:2").submit(again, client)
            status = wait_done(client, handle.job_id)
            assert status["state"] == "done", client.explain(handle.job_id)
            assert handle.outputs() == [hashlib.sha256(c).digest() for c in again]
            assert liar_id not in sent_to(client, handle.job_id), "the liar got work after the restart"
