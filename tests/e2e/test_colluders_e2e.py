"""End to end against colluders: five workers of real ``pangea node`` processes on 127.0.0.1, two of which run
their own patched execution step (tests/e2e/colluder/sitecustomize.py) and answer every task with the same wrong
bytes. Under replicas:3 and under adaptive the final result is the right one, the colluders end below the trust
floor and the honest workers above it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pangea_p2p.core.jobs.scheduler import SchedulerConfig
from tests.e2e.test_jobs_e2e import network, settings, sha_job, wait_done

pytestmark = pytest.mark.slow
COLLUDER = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "colluder"), os.environ.get("PYTHONPATH", "")])}
FLOOR = SchedulerConfig().trust_floor


@pytest.mark.parametrize("policy", ["replicas:3", "adaptive"])
def test_two_colluders_among_five_workers_never_make_the_final_result_and_fall_below_the_floor(
        tmp_path: Path, policy: str) -> None:
    slots = settings(capacity__task_slots=4)
    colluders = {4: COLLUDER, 5: COLLUDER}
    with network(tmp_path, [slots] * 6, node_env=colluders) as net, net.client() as client:
        liars = {net.ids[i] for i in colluders}
        honest = set(net.ids[1:]) - liars
        chunks = [f"{policy} task {i}".encode() for i in range(40)]
        handle = sha_job(policy).submit(chunks, client)
        status = wait_done(client, handle.job_id, 300)
        assert status["state"] == "done", (status["reason"], client.explain(handle.job_id))
        wrong = [i for i, (out, c) in enumerate(zip(handle.outputs(), chunks, strict=True))
                 if out != hashlib.sha256(c).digest()]
        tasks = client.explain(handle.job_id, done=True)["tasks"]
        why = {t: tasks[f"{handle.job_id}/t{t}"]["reasons"] for t in wrong}
        assert not wrong, f"wrong results {wrong}, liars {sorted(liars)}: {why}"  # the final result is right
        scores = {row["peer_id"]: row["score"] for row in client.trust()["trust"]}
        for liar in liars:
            assert scores.get(liar, 0.0) < FLOOR, f"liar {liar} at {scores.get(liar)}: {scores}; {tasks}"
        for peer in honest & set(scores):
            assert scores[peer] > FLOOR, (peer, scores)
        assert handle.verify().ok
