"""GET /metrics: a peer's state in the Prometheus text exposition format.

Every value is read from the running peer when it is scraped (``PeerCollector.collect``), so nothing on the
peer's hot paths touches prometheus_client, and each peer has a registry of its own (several peers in one
process do not clash; the global registry is never used). Every label takes a bounded set of values: task and
job states, outcome kinds, failure kinds, rejection reasons, trust bands, protocol names.

    pangea_connected_peers, pangea_routing_table_peers, pangea_directory_adverts       gauges
    pangea_adverts_accepted_total, pangea_advert_rejections_total{reason}              counters
    pangea_jobs{state}, pangea_job_tasks{state}                                        gauges (jobs submitted here)
    pangea_job_tasks_unchecked, pangea_job_task_audits{state}                          gauges
    pangea_verification_outcomes_total{outcome}                                        counter (trust book records)
    pangea_trust_peers{band}                                                           gauge
    pangea_served_offers_total{verdict}, pangea_served_results_total, pangea_splits_total
    pangea_sandbox_runs_total{result}, pangea_sandbox_seconds_total{clock}, pangea_sandbox_fuel_total
    pangea_transport_bytes_total{direction}                                            counter (all connections)
    pangea_stream_bytes_total{protocol,direction}                                      counter (compute, block)
    pangea_log_records_total{level}                                                    warnings and errors logged
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pangea_p2p.core.capacity import AdvertRejection
from pangea_p2p.core.jobs.model import JobState, TaskState
from pangea_p2p.core.jobs.tasks import AuditState
from pangea_p2p.core.trust import Outcome, TrustBook
from pangea_p2p.net.traffic import IN, OUT, TRANSPORT

if TYPE_CHECKING:
    from pangea_p2p.node.state import Peer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TRUST_BANDS = ("suspect", "negative", "neutral", "positive")  # pangea_trust_peers{band}


def trust_band(book: TrustBook, score: float) -> str:
    if score < book.config.suspect_score:
        return "suspect"
    return "negative" if score < 0 else "neutral" if score == 0 else "positive"


class PeerCollector:
    """The metrics of one running peer (see the module docstring)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def collect(self) -> Iterator[Metric]:
        peer, now = self.peer, time.time()
        yield _gauge("pangea_connected_peers", "Peers with an open libp2p connection", len(peer.connected_peers()))
        yield _gauge("pangea_routing_table_peers", "Peers in the Kademlia routing table",
                     len(peer.routing_table_peers()))
        yield _gauge("pangea_directory_adverts", "Live capacity adverts in the directory", len(peer.directory))
        yield _counter("pangea_adverts_accepted", "Capacity adverts accepted", peer.directory.accepted_total)
        rejected = CounterMetricFamily("pangea_advert_rejections", "Capacity adverts rejected, by reason",
                                       labels=["reason"])
        for reason in AdvertRejection:
            rejected.add_metric([reason.value], peer.directory.rejections.get(reason, 0))
        yield rejected
        if peer.compute is not None:
            yield from self._compute(now)
        yield from self._traffic()
        logged = CounterMetricFamily("pangea_log_records", "Warnings and errors this peer logged", labels=["level"])
        for level in ("warning", "error", "critical"):
            logged.add_metric([level], peer.recent.counts.get(level, 0))
        yield logged

    def _compute(self, now: float) -> Iterator[Metric]:
        compute = self.peer.compute
        assert compute is not None
        runs = list(compute.jobs.values())
        jobs = GaugeMetricFamily("pangea_jobs", "Jobs submitted at this peer, by state", labels=["state"])
        tasks = GaugeMetricFamily("pangea_job_tasks", "Tasks of the jobs submitted here, by state", labels=["state"])
        audits = GaugeMetricFamily("pangea_job_task_audits", "Tasks of the jobs submitted here, by audit state",
                                   labels=["state"])
        job_counts = dict.fromkeys(JobState, 0)
        task_counts = {s.value: 0 for s in TaskState}
        audit_counts = {s.value: 0 for s in AuditState}
        unchecked = 0
        for run in runs:
            job_counts[run.state] += 1
            for state, n in run.progress().items():
                task_counts[state] = task_counts.get(state, 0) + n
            for state, n in run.audits().items():
                audit_counts[state] = audit_counts.get(state, 0) + n
            unchecked += len(run.unchecked())
        for job_state, n in job_counts.items():
            jobs.add_metric([job_state.value], n)
        for state, n in task_counts.items():
            tasks.add_metric([state], n)
        for state, n in audit_counts.items():
            audits.add_metric([state], n)
        yield from (jobs, tasks, audits)
        yield _gauge("pangea_job_tasks_unchecked", "Tasks accepted without the check their job's policy asks for",
                     unchecked)

        book = compute.trust
        outcomes = CounterMetricFamily("pangea_verification_outcomes",
                                       "Verified outcomes of workers' answers recorded in the trust book, by outcome",
                                       labels=["outcome"])
        for outcome in Outcome:
            outcomes.add_metric([outcome.value], book.outcomes[outcome])
        yield outcomes
        bands = dict.fromkeys(TRUST_BANDS, 0)
        for peer_id in book.peers():
            bands[trust_band(book, book.score(peer_id, now))] += 1
        trust = GaugeMetricFamily("pangea_trust_peers", "Peers in the trust book, by trust band", labels=["band"])
        for band, n in bands.items():
            trust.add_metric([band], n)
        yield trust

        counters = compute.behaviour.counters
        offers = CounterMetricFamily("pangea_served_offers", "Task offers from other peers, by verdict",
                                     labels=["verdict"])
        offers.add_metric(["admitted"], counters["offers_admitted"])
        offers.add_metric(["rejected"], counters["offers_rejected"])
        yield offers
        yield _counter("pangea_served_results", "Results this peer sent for tasks it served",
                       counters["results_sent"])
        yield _counter("pangea_splits", "Served tasks this peer split into parts", counters["splits"])

        usage = compute.usage
        sandbox_runs = CounterMetricFamily("pangea_sandbox_runs", "Sandbox runs, by result (ok or the failure kind)",
                                           labels=["result"])
        for result, n in sorted(usage.runs.items()):
            sandbox_runs.add_metric([result], n)
        yield sandbox_runs
        seconds = CounterMetricFamily("pangea_sandbox_seconds", "Time spent in sandbox runs", labels=["clock"])
        seconds.add_metric(["wall"], usage.wall_time_s)
        seconds.add_metric(["cpu"], usage.cpu_time_s)
        yield seconds
        yield _counter("pangea_sandbox_fuel", "Fuel (wasm instructions) used by sandbox runs", usage.fuel)

    def _traffic(self) -> Iterator[Metric]:
        counts = self.peer.traffic.bytes
        transport = CounterMetricFamily("pangea_transport_bytes", "Bytes on this peer's libp2p connections (TCP "
                                        "payload: every protocol, with encryption and multiplexing)",
                                        labels=["direction"])
        streams = CounterMetricFamily("pangea_stream_bytes", "Bytes on this peer's compute and block streams",
                                      labels=["protocol", "direction"])
        for direction in (IN, OUT):
            transport.add_metric([direction], counts.get((TRANSPORT, direction), 0))
            for protocol in ("compute", "block"):
                streams.add_metric([protocol, direction], counts.get((protocol, direction), 0))
        yield transport
        yield streams


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def registry_of(peer: Peer) -> CollectorRegistry:
    """A registry of this peer's own, holding its collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PeerCollector(peer))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
