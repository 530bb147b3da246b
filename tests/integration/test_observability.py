"""What a running peer shows about itself: /metrics in the Prometheus text format, the dashboard's files and JSON
endpoints, and its workers' task lifecycle in the log (JSON lines). Real peers on 127.0.0.1 in one trio process,
a real job."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pangea_p2p import logs
from pangea_p2p.core.jobs.model import JobState, VerificationPolicy
from pangea_p2p.node.peer import Peer
from pangea_p2p.testing import open_network, wait_for
from tests.integration.test_jobs import SETTINGS, finished, network_ready, submit

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(http: httpx.AsyncClient, peer: Peer) -> Samples:
    res = await http.get(f"http://127.0.0.1:{peer.api_port}/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(res.text)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """pangea's log as JSON lines into a buffer (what `pangea node --log-format json` writes)."""
    root = logging.getLogger(logs.ROOT)
    saved = root.handlers[:], root.level, root.propagate
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    yield buf
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


async def test_metrics_endpoints_and_task_logs_follow_a_real_job(tmp_path: Path, json_log: io.StringIO) -> None:
    async with open_network(3, tmp_path, SETTINGS) as peers, httpx.AsyncClient(trust_env=False) as http:
        await network_ready(peers)
        submitter, workers = peers[0], peers[1:]
        before = {p.peer_id: await scrape(http, p) for p in peers}
        for p in peers:
            assert 1 <= value(before[p.peer_id], "pangea_connected_peers") <= 2  # the DHT may link 1 and 2 later
            assert value(before[p.peer_id], "pangea_sandbox_fuel_total") == 0
            assert value(before[p.peer_id], "pangea_advert_rejections_total", reason="bad_signature") == 0
        chunks = [f"metrics {i}".encode() * 50 for i in range(6)]
        run = submit(submitter, chunks, verification=VerificationPolicy.parse("replicas:2"))
        logs.get_logger("test").warning("test.something_odd", detail="for the recent errors")
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()

        after = await scrape(http, submitter)
        assert value(after, "pangea_jobs", state="done") == 1
        assert value(after, "pangea_jobs", state="running") == 0
        assert value(after, "pangea_job_tasks", state="done") == 6
        assert value(after, "pangea_verification_outcomes_total", outcome="valid") >= 6  # two replicas agreed
        assert value(after, "pangea_verification_outcomes_total", outcome="proven_lie") == 0
        trusted = sum(value(after, "pangea_trust_peers", band=b) for b in ("suspect", "negative", "neutral",
                                                                          "positive"))
        assert trusted == len(submitter.compute.trust.peers()) >= 1  # type: ignore[union-attr]
        assert value(after, "pangea_trust_peers", band="positive") >= 1
        compute_out = value(after, "pangea_stream_bytes_total", protocol="compute", direction="out")
        assert compute_out > 0
        transport_out = value(after, "pangea_transport_bytes_total", direction="out")
        assert transport_out > compute_out  # the compute stream's bytes, encrypted, and the DHT's and gossip's
        assert value(after, "pangea_transport_bytes_total", direction="in") > value(
            before[submitter.peer_id], "pangea_transport_bytes_total", direction="in") > 0
        assert value(after, "pangea_log_records_total", level="warning") >= 1

        served = 0.0
        for w in workers:
            got = await scrape(http, w)
            ran = sum(v for (name, _), v in got.items() if name == "pangea_sandbox_runs_total")
            served += value(got, "pangea_served_results_total")
            # each peer's registry reads that peer (several peers in one process do not clash)
            assert value(got, "pangea_served_results_total") == w.compute.behaviour.counters["results_sent"]  # type: ignore[union-attr]
            if value(got, "pangea_served_results_total") == 0:
                continue
            assert ran >= 1
            assert value(got, "pangea_sandbox_fuel_total") > 0
            assert value(got, "pangea_sandbox_seconds_total", clock="wall") > 0
            assert value(got, "pangea_stream_bytes_total", protocol="compute", direction="in") > 0
            assert value(got, "pangea_stream_bytes_total", protocol="compute", direction="out") > 0
        worked_here = sum(n for w, n in run.workers.items() if w == submitter.peer_id)
        assert served >= 6 - worked_here > 0  # each peer's own registry: the workers' counts are theirs

        # the dashboard's endpoints
        base = f"http://127.0.0.1:{submitter.api_port}"
        page = await http.get(base + "/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/dashboard.js">' in page.text
        script = await http.get(base + "/static/dashboard.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "Authorization" in script.text
        for bad in ("/static/nope.js", "/static/..%2Fapi.py", "/static/.hidden.css", "/static/api.py"):
            assert (await http.get(base + bad)).status_code == 404, bad
        timeline = (await http.get(f"{base}/v1/jobs/{run.spec.job_id}/tasks")).json()
        assert [t["task_id"] for t in timeline["tasks"]] == list(run.spec.task_ids())
        for t in timeline["tasks"]:
            assert t["state"] == "done"
            assert 0 <= t["start_s"] <= t["end_s"] <= timeline["elapsed_s"]
            assert t["worker"] in {p.peer_id for p in peers}
            assert t["verification"]["replicas"] == 2
        assert (await http.get(f"{base}/v1/jobs/{run.spec.job_id}/tasks?limit=0")).status_code == 400
        assert len((await http.get(f"{base}/v1/jobs/{run.spec.job_id}/tasks?limit=2")).json()["tasks"]) == 2
        errors = (await http.get(base + "/v1/errors")).json()
        assert any(r["event"] == "test.something_odd" and r["fields"] == {"detail": "for the recent errors"}
                   for r in errors["records"])
        await wait_for(lambda: set(submitter.rtt_s) == {w.peer_id for w in workers}, 30)  # pinged on connecting
        network = (await http.get(base + "/v1/peers")).json()["peers"]
        assert {r["peer_id"] for r in network} == {w.peer_id for w in workers}
        for r in network:
            assert r["reached"] == "direct"
            assert r["capacity"]["task_slots_total"] == 2
            assert 0 < r["rtt_ms"] < 1000

    # every worker that ran a task logged its life as JSON lines, in order
    events = [json.loads(line) for line in json_log.getvalue().splitlines()]
    task_events = [e for e in events if e["event"].startswith("task.") and "task" in e]
    served_tasks = {e["task"] for e in task_events if e["event"] == "task.result_sent"}
    assert served_tasks
    steps = ["task.accepted", "task.running", "task.done", "task.result_sent"]
    for task in served_tasks:  # each of its replicas (every peer logs into this one process): step after step
        at = {step: [i for i, e in enumerate(task_events) if e["task"] == task and e["event"] == step]
              for step in steps}
        assert len({len(v) for v in at.values()}) == 1, at
        for k in range(len(at["task.done"])):
            assert [at[step][k] for step in steps] == sorted(at[step][k] for step in steps), at
            done = task_events[at["task.done"][k]]
            assert int(done["fuel"]) > 0
            assert float(done["time_s"]) >= 0
