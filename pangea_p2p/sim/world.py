"""One simulation run: build the network from the seed, run the workload through a safety phase with faults and
a liveness phase after healing, check invariants after every event, and report metrics.

Theory of operation
-------------------
``Simulation(config)`` derives every random stream from ``config.seed`` (``random.Random(f"{seed}:{name}")``):
regions and bandwidths, the gossip mesh, roles, peer keys (ed25519 seeds), speeds, job inputs, the fault
schedule, and each peer's own rng. Nothing reads the wall clock except the reporting of wall time, and no
module-level ``random`` is used, so ``(seed, config, code)`` fixes the event trace; its digest is in the result.

Phases (TigerBeetle VOPR): *safety*, from 0 to ``safety_s``: jobs arrive, faults happen (partition and heal,
loss, clogs, crashes, leaves, joins, slow peers, Byzantine roles; a submitter that crashes resumes its jobs from
its journal when it restarts, as the node does); *liveness*, ``liveness_s`` more: the
partition heals, clogs clear, loss stops, crashed peers restart, and every job must finish. The checkers run
after every event; a failing run's ``replay`` is the command that reproduces it.

Safety and cost, in the metrics: ``wrong_accepted`` (wrong outputs a coordinator accepted, corrected later or
not), ``wrong_final`` (wrong outputs in the final results of the jobs that ended, read at the end of the run after
any correction: the checkers' ``wrong_final`` invariant) and ``wrong_at_job_end``; ``work_ratio``, the fuel every
peer's modelled sandbox burnt (replicas, spot checks, audits, local runs) over one honest execution of every task
of every ended job; ``lies_sent``, ``lies_escaped`` (lies of the wrong-output roles equal to a final output) and
their ratio ``escape_rate``, set beside bounds.py's analytic value.

Costs at scale: only peers that place work (submitters; all peers with ``directories="all"``) keep a capacity
directory, and a single ``AdvertCache`` makes each distinct advert's signature be checked once in the whole run.
Gossip delivery times come from one Dijkstra per directory holder over the mesh, not from per-hop events.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pangea_p2p.core.capacity import AdvertCache, CapacityDirectory, encode_advert
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.behaviour import JobRun
from pangea_p2p.core.jobs.events import TaskUpdated
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskState, VerificationPolicy
from pangea_p2p.core.nat import CircuitLimit
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.sim.checkers import Checker, SafetyViolation, Violation
from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.loop import EventLoop
from pangea_p2p.sim.nat import Circuit, SimNat
from pangea_p2p.sim.network import Faults, Mesh, Network, dht_hops
from pangea_p2p.sim.peer import SimPeer
from pangea_p2p.sim.sandbox import WRONG_OUTPUT_ROLES, Board, Lies, honest_chunk

T0 = 1_800_000_000.0  # virtual unix time of the start (receipts and adverts carry absolute times)
ISSUER_ROLES = ("wrong", "collude", "copy", "liar", "withhold", "forge", "sybil")


@dataclass
class SimResult:
    config: SimConfig
    metrics: dict[str, Any]
    digest: str
    violations: list[Violation]
    failed: str = ""  # the safety violation that stopped the run (strict mode)
    scenario: str = "custom"
    trace: list[str] = field(default_factory=list)
    replay_keys: tuple[str, ...] = ()  # options to spell out even at their default (the scenario sets them)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.violations

    def replay(self) -> str:
        return f"pangea sim run {self.scenario} {self.config.replay_args(self.replay_keys)}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100.0 * len(s)) - 1))]


class Simulation:
    def __init__(self, config: SimConfig, scenario: str = "custom", replay_keys: tuple[str, ...] = ()) -> None:
        self.config = config
        self.scenario = scenario
        self.replay_keys = replay_keys
        self.t0 = T0
        self.loop = EventLoop(T0, keep_trace=config.keep_trace)
        self.checker = Checker(self, strict=config.checks == "strict")
        self.content: dict[str, bytes] = {}  # content-addressed blocks (inputs, outputs): what fetch-by-cid returns
        self.modules: set[str] = set()  # module cids: modelled, every peer has them
        self.job_runs: dict[str, JobRun] = {}
        self.deferred: dict[int, list[JobSpec]] = {}  # jobs whose submitter was down when they arrived
        self.board: Board = {}  # answers Byzantine peers share
        self.lies: Lies = Counter()  # wrong answers sent, per (module, input, output)
        self.msgs = 0
        self.msg_bytes = 0
        self.advert_delays: list[float] = []
        self.adverts_published = 0
        self.proofs_published = 0
        self.proofs_republished = 0
        self._proofs_flooded: set[bytes] = set()
        self.splits = 0
        self.faults: Counter[str] = Counter()
        self.job_latencies: list[float] = []
        self.jobs_state: Counter[str] = Counter()
        self.useful_fuel = 0
        self.failed_reasons: Counter[str] = Counter()
        self.left: set[int] = set()
        self.joiners: set[int] = set()
        self._build()

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{name}")

    # --- building ---------------------------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        n = cfg.peers
        self.net = Network(n, self.rng("net"), Faults(loss=cfg.loss, jitter=cfg.jitter))
        roles = ["honest"] * n
        workers = list(range(cfg.submitters, n))
        role_rng = self.rng("roles")
        byz = sorted(role_rng.sample(workers, round(cfg.byzantine * len(workers))))
        for k, i in enumerate(byz):
            roles[i] = ISSUER_ROLES[k % len(ISSUER_ROLES)] if cfg.role == "mix" else cfg.role
        slow = set(role_rng.sample(workers, round(cfg.slow * len(workers))))
        self.cache = AdvertCache(entries_max=max(4096, 4 * n))
        holders = list(range(n)) if cfg.directories == "all" else list(range(cfg.submitters))
        speed_rng = self.rng("speeds")
        self.peers: list[SimPeer] = []
        for i in range(n):
            ident = Identity(hashlib.sha256(f"{cfg.seed}:key:{i}".encode()).digest())
            speed = min(5e9, max(2e8, 1e9 * math.exp(speed_rng.gauss(0.0, 0.5))))
            slots = speed_rng.choice((1, 2, 2, 4))
            directory = CapacityDirectory(cache=self.cache) if i in holders else None
            self.peers.append(SimPeer(
                self, i, ident, roles[i], speed, slots, directory=directory, rng=self.rng(f"peer:{i}"),
                slow_factor=cfg.slow_factor if i in slow else 1.0,
            ))
        self.index = {p.peer_id: i for i, p in enumerate(self.peers)}
        limit = CircuitLimit(int(cfg.relay_circuit_s), cfg.relay_circuit_bytes)
        self.nat = None if cfg.nat == 0.0 else SimNat(
            cfg.nat, self.rng("nat"), self.net, self.loop, limit, cfg.relays_wanted, [p.peer_id for p in self.peers],
            self.is_up, self._circuit_closed)
        self.roles = roles
        self.holders = holders
        probe = encode_advert(self.peers[0].identity, 1, T0, T0 + 90.0, self.peers[0].capacity())
        self.mesh = Mesh(self.net, cfg.mesh_degree, self.rng("mesh"), len(probe))
        self.dist = {h: self.mesh.distances_from(h) for h in holders}
        self.dht_hops = dht_hops(n)
        self._schedule()

    def _schedule(self) -> None:
        cfg, loop = self.config, self.loop
        fault_rng = self.rng("faults")
        workers = list(range(cfg.submitters, cfg.peers))
        joiners = set(fault_rng.sample(workers, round(cfg.join * len(workers))))
        self.joiners = joiners
        for i, p in enumerate(self.peers):
            if i in joiners:
                loop.at(T0 + fault_rng.uniform(cfg.warmup_s, cfg.safety_s * 0.6), self._join, i)
                continue
            p.up = True
            loop.at(T0 + fault_rng.uniform(0.0, min(5.0, cfg.warmup_s)), p.publish)
            if p.directory is not None:
                loop.at(T0 + 1.0, p.maintain)
        rest = [w for w in workers if w not in joiners]
        crashers = fault_rng.sample(rest, round(cfg.crash * len(workers)))
        leavers = fault_rng.sample([w for w in rest if w not in set(crashers)], round(cfg.leave * len(workers)))
        for i in crashers:
            t = fault_rng.uniform(cfg.warmup_s, cfg.safety_s * 0.8)
            loop.at(T0 + t, self._crash, i)
            loop.at(T0 + min(t + cfg.restart_s, cfg.safety_s), self._restart, i)
        for i in leavers:
            loop.at(T0 + fault_rng.uniform(cfg.warmup_s, cfg.safety_s * 0.8), self._leave, i)
        clogged = fault_rng.sample(range(cfg.peers), round(cfg.clog * cfg.peers))
        for k, i in enumerate(clogged):  # swizzle: clog one after another, unclog in another order
            start = cfg.partition_at_s + k * 0.05
            loop.at(T0 + start, self._clog, (i, T0 + start + cfg.clog_s * (0.5 + fault_rng.random())))
        if cfg.partition != "none":
            loop.at(T0 + cfg.partition_at_s, self._partition)
            loop.at(T0 + min(cfg.partition_at_s + cfg.partition_for_s, cfg.safety_s), self._heal)
        for i in fault_rng.sample(range(cfg.submitters), round(cfg.submitter_crash * cfg.submitters)):
            t = fault_rng.uniform(cfg.warmup_s + cfg.arrival_s / 4, cfg.warmup_s + cfg.arrival_s)  # jobs in flight
            loop.at(T0 + t, self._crash, i)
            loop.at(T0 + min(t + cfg.restart_s, cfg.safety_s), self._restart, i)
        job_rng = self.rng("jobs")
        modules = [cid_of(f"module-{cfg.seed}-{k}".encode()) for k in range(4)]
        self.modules.update(modules)
        limits = ReceiptLimits(fuel_max=70_000 * cfg.fuel_unit * cfg.chunks_per_task, memory_bytes_max=64 << 20,
                               wall_time_s=120.0, output_bytes_max=1 << 16)
        policy = VerificationPolicy.parse(cfg.policy)
        policy = VerificationPolicy(policy.mode, policy.spot_checks, policy.replicas, cfg.commit_reveal)
        for j in range(cfg.jobs):
            chunks = [job_rng.randbytes(cfg.chunk_bytes) for _ in range(cfg.tasks_per_job * cfg.chunks_per_task)]
            spec = JobSpec(
                job_id=f"job{j}", module_cid=modules[j % len(modules)], chunk_cids=tuple(cid_of(c) for c in chunks),
                chunk_sizes=tuple(len(c) for c in chunks), limits=limits, chunks_per_task=cfg.chunks_per_task,
                verification=policy, retries_max=cfg.retries_max, depth_max=cfg.depth_max,
                fuel_per_chunk_estimate=32768 * cfg.fuel_unit,
            )
            submitter = j % cfg.submitters
            at = T0 + cfg.warmup_s + job_rng.uniform(0.0, cfg.arrival_s)
            loop.at(at, self._submit, (submitter, spec, chunks))

    # --- events ----------------------------------------------------------------------------------------------

    def _submit(self, arg: tuple[int, JobSpec, list[bytes]]) -> None:
        i, spec, chunks = arg
        for c in chunks:
            self.content[cid_of(c)] = c
        peer = self.peers[i]
        if not peer.up:  # its user submits again once it is back
            self.deferred.setdefault(i, []).append(spec)
            return
        peer.submit(spec)
        self.job_runs[spec.job_id] = peer.jobs[spec.job_id]

    def _join(self, i: int) -> None:
        self.faults["joins"] += 1
        self.loop.trace(f"join {i}")
        self.peers[i].up = True
        self.peers[i].publish()
        self.peers[i].maintain()

    def _crash(self, i: int) -> None:
        p = self.peers[i]
        if not p.up:
            return
        self.faults["crashes"] += 1
        self.loop.trace(f"crash {i}")
        self._break_streams(i, *p.crash(), "connection reset: the peer crashed")
        if self.nat is not None:
            self.nat.went_down(i, self.loop.now)

    def _leave(self, i: int) -> None:
        p = self.peers[i]
        if not p.up:
            return
        self.faults["leaves"] += 1
        self.left.add(i)
        self.loop.trace(f"leave {i}")
        self._break_streams(i, *p.crash(), "the peer left")
        if self.nat is not None:
            self.nat.went_down(i, self.loop.now)

    def _break_streams(self, i: int, issuers: list[int], workers: list[int], reason: str) -> None:
        """Peer ``i`` went down: the streams its issuers opened to it and those it opened to its workers reset,
        each seen at the other end one round trip later."""
        for s in issuers:
            if self.reachable(i, s):
                self.loop.after(2 * self.net.one_way_s(i, s), self._session_broken, (s, i, reason))
        for w in workers:
            if self.reachable(i, w):
                self.loop.after(2 * self.net.one_way_s(i, w), self._issuer_lost, (w, i))

    def _issuer_lost(self, arg: tuple[int, int]) -> None:
        w, i = arg
        self.peers[w].issuer_lost(i)

    def _session_broken(self, arg: tuple[int, int, str]) -> None:
        s, i, reason = arg
        self.peers[s].session_broken(i, reason)

    def _circuit_closed(self, issuer: int, worker: int, reason: str) -> None:
        """The relay closed the circuit of ``issuer``'s stream to ``worker``: both ends see it reset."""
        self.loop.trace(f"circuit {issuer}>{worker} closed")
        rtt = 2 * self.net.one_way_s(issuer, worker)
        self.loop.after(rtt, self._session_broken, (issuer, worker, reason))
        self.loop.after(rtt, self._issuer_lost, (worker, issuer))

    def _restart(self, i: int) -> None:
        p = self.peers[i]
        if p.up or i in self.left:
            return
        self.faults["restarts"] += 1
        self.loop.trace(f"restart {i}")
        p.up = True
        p.publish()
        p.maintain()
        for run in p.resume():
            self.job_runs[run.spec.job_id] = run
        for spec in self.deferred.pop(i, []):
            p.submit(spec)
            self.job_runs[spec.job_id] = p.jobs[spec.job_id]

    def _clog(self, arg: tuple[int, float]) -> None:
        i, until = arg
        self.faults["clogs"] += 1
        self.net.clogged_until[i] = until
        self.loop.trace(f"clog {i}")

    def _partition(self, _: object = None) -> None:
        cfg = self.config
        isolate = 0 if cfg.partition == "one" else None  # isolating a submitter is what shows
        text = self.net.partition(cfg.partition, self.rng("partition"), cfg.asymmetric, isolate)
        self.faults["partitions"] += 1
        self.loop.trace(text)

    def _heal(self, _: object = None) -> None:
        if self.net.side is not None:
            self.faults["heals"] += 1
            self.loop.trace("heal")
        self.net.heal()

    # --- network ------------------------------------------------------------------------------------------------

    def peer_id(self, i: int) -> str:
        return self.peers[i].peer_id

    def is_up(self, i: int) -> bool:
        return self.peers[i].up

    def opened_stream(self, issuer: int, worker: int) -> None:
        self.peers[worker].issuers.add(issuer)
        if self.nat is not None:
            self.nat.opened(issuer, worker, self.loop.now)

    def reachable(self, a: int, b: int) -> bool:
        return self.peers[b].up and not self.net.blocked(a, b)

    def dialable(self, a: int, b: int) -> bool:
        return self.reachable(a, b) and (self.nat is None or self.nat.dialable(a, b))

    def circuit_age_s(self, issuer: int, worker: int, now: float) -> float | None:
        return None if self.nat is None else self.nat.circuit_age_s(issuer, worker, now)

    def nat_fields(self, i: int) -> dict[str, Any]:
        nat = self.nat
        if nat is None:
            return {}
        if nat.private[i]:
            nat.keep_relays(i, self.loop.now)
        return nat.advert_fields(i)

    def rtt_s(self, a: int, peer_id: str) -> float:
        b = self.index.get(peer_id)
        if b is None:
            return 0.005
        relay = None if self.nat is None or not self.nat.private[b] else self.nat.relay_of(a, b)
        if relay is not None:
            return 2 * (self.net.one_way_s(a, relay) + self.net.one_way_s(relay, b))
        return 2 * self.net.one_way_s(a, b)

    def send(self, a: int, b: int, msg: codec.Message) -> None:
        data = codec.encode(msg)
        self.msgs += 1
        self.msg_bytes += len(data)
        if not self.reachable(a, b):
            self.net.dropped += 1
            return
        size = len(data) + 64
        if self.nat is not None:
            if isinstance(msg, codec.Offer | codec.Cancel | codec.RevealRequest):
                fetched = msg.ref.input_bytes if isinstance(msg, codec.Offer) else 0  # over the same connection
                route = self.nat.route(a, b, size + fetched)
            else:
                route = self.nat.route(b, a, size)
            if isinstance(route, Circuit):  # both legs, through the relay
                relay, now = route.relay, self.loop.now
                if self.net.blocked(a, relay) or self.net.blocked(relay, b):
                    self.net.dropped += 1
                    return
                delay = self.net.delay_s(a, relay, size, now) + self.net.delay_s(relay, b, size, now)
                self.loop.after(delay, self._deliver, (a, b, data))
                return
            if not route:  # to or from a private worker on a stream whose circuit is gone
                self.net.dropped += 1
                return
        self.loop.after(self.net.delay_s(a, b, size, self.loop.now), self._deliver, (a, b, data))

    def _deliver(self, arg: tuple[int, int, bytes]) -> None:
        a, b, data = arg
        peer = self.peers[b]
        if not peer.up:
            self.net.dropped += 1
            return
        msg = peer.decode_message(data)
        if isinstance(msg, str):
            peer.on_malformed(self.peers[a].peer_id, msg)
            return
        task_id = msg.ref.task_id if isinstance(msg, codec.Offer) else msg.task_id
        self.loop.trace(f"m {a}>{b} {type(msg).__name__} {task_id}")
        if isinstance(msg, codec.Offer | codec.Cancel | codec.RevealRequest):
            peer.on_issuer_message(a, msg)
        else:
            peer.on_worker_message(a, msg)

    def gossip(self, src: int, data: bytes) -> None:
        """Deliver an advert over the mesh to every directory holder on the publisher's side."""
        self.adverts_published += 1
        source = self.peers[src].peer_id
        jitter = self.net.rng
        for h in self.holders:
            if h == src or self.net.blocked(src, h):
                continue
            d = self.dist[h][src]
            if d == math.inf:
                continue
            d *= 1.0 + 0.05 * jitter.random()
            self.advert_delays.append(d)
            self.loop.after(d, self._deliver_advert, (h, data, source))

    def gossip_proof(self, src: int, data: bytes) -> None:
        """Deliver a fraud proof over the mesh to every directory holder on the publisher's side, as an advert.
        Cheap and deterministic: the flood model reaches every holder at once, so a proof that was flooded
        already is not flooded again when a peer that verified it publishes it on (it is counted)."""
        key = hashlib.sha256(data).digest()
        if key in self._proofs_flooded:
            self.proofs_republished += 1
            return
        self._proofs_flooded.add(key)
        self.proofs_published += 1
        source = self.peers[src].peer_id
        for h in self.holders:
            if h == src or self.net.blocked(src, h):
                continue
            d = self.dist[h][src]
            if d != math.inf:
                self.loop.after(d, self._deliver_proof, (h, data, source))

    def _deliver_proof(self, arg: tuple[int, bytes, str]) -> None:
        h, data, source = arg
        self.peers[h].on_proof(data, source)

    def _deliver_advert(self, arg: tuple[int, bytes, str]) -> None:
        h, data, source = arg
        self.peers[h].on_advert(data, source)

    def put(self, data: bytes) -> str:
        cid = cid_of(data)
        self.content[cid] = data
        return cid

    # --- hooks from peers ---------------------------------------------------------------------------------------

    def on_task_update(self, peer: int, act: TaskUpdated) -> None:
        eff = act.update
        if eff.state is TaskState.DONE:
            self.loop.trace(f"done {eff.task_id} by {self.index.get(eff.worker, -1)}")
            if act.job_id and not eff.corrected:
                self.useful_fuel += eff.fuel_used
            self.checker.on_accept(peer, self.peers[peer].peer_id, act)

    def on_job_finished(self, peer: int, run: JobRun, state: JobState, reason: str) -> None:
        self.loop.trace(f"job {run.spec.job_id} {state.value}")
        self.jobs_state[state.value] += 1
        if state is JobState.DONE:
            self.job_latencies.append(self.loop.now - run.created_s)
        else:
            self.failed_reasons[_reason_class(reason)] += 1
        self.checker.on_job_end(run)

    def role_of(self, peer_id: str) -> str:
        i = self.index.get(peer_id)
        return "unknown" if i is None else self.roles[i]

    def all_jobs(self) -> list[JobRun]:
        """Every job submitted, as its submitter runs it now (resumed after a crash: the new run)."""
        return list(self.job_runs.values())

    # --- running ---------------------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.checker.strict and self.checker.violations:
            raise SafetyViolation(str(self.checker.violations[0]))

    def run(self) -> SimResult:
        cfg = self.config
        wall = time.perf_counter()
        failed = ""
        try:
            self.loop.run_until(T0 + cfg.safety_s, self._step)
            self._heal()
            self.net.clogged_until.clear()
            self.net.faults.loss = 0.0
            for i, p in enumerate(self.peers):
                if not p.up and i not in self.left and i not in self.joiners:
                    self._restart(i)
            self.loop.trace("liveness phase")
            self.loop.run_until(T0 + cfg.safety_s + cfg.liveness_s, self._step)
            self.checker.check_liveness()
            self.checker.check_final()
        except SafetyViolation as exc:
            failed = str(exc)
        wall = time.perf_counter() - wall
        return SimResult(cfg, self.metrics(wall), self.loop.digest(), list(self.checker.violations), failed,
                         self.scenario, list(self.loop.records), self.replay_keys)

    def metrics(self, wall_s: float) -> dict[str, Any]:
        jobs = self.all_jobs()
        honest, byz = self._trust_scores()
        executed = sum(p.stats.executed_fuel for p in self.peers)
        ended = [r for r in jobs if r.state in (JobState.DONE, JobState.FAILED)]
        single = sum(self.single_execution_fuel(r.spec) for r in ended)
        wrong_final = self.checker.final_wrong()
        escaped = sum(self.lies[(t.ref.module_cid, t.ref.input_cid, t.output_cid)] for _, t in wrong_final)
        stats: Counter[str] = Counter()
        liars, liar_results = 0, 0
        for p in self.peers:
            for k, v in p.stats_dict().items():
                stats[k] += v
            if p.role in WRONG_OUTPUT_ROLES:
                liars += 1
                liar_results += p.stats_dict()["results_sent"]
        proofs: Counter[str] = Counter({"published": self.proofs_published,
                                        "republished": self.proofs_republished})
        for p in self.peers:
            for k, v in p.behaviour.proofs.counters.items():
                if k != "published":
                    proofs[k] += v
        advert_rejections: Counter[str] = Counter()
        for p in self.peers:
            if p.directory is not None:
                for reason, count in p.directory.rejections.items():
                    advert_rejections[str(reason)] += count
        return {
            "jobs": len(jobs),
            "jobs_done": self.jobs_state["done"],
            "jobs_failed": self.jobs_state["failed"],
            "jobs_running": sum(1 for r in jobs if r.state is JobState.RUNNING),
            "tasks_accepted": len(self.checker.accepted),
            "wrong_accepted": self.checker.counts["wrong_accepted"],
            "wrong_final": len(wrong_final),
            "wrong_at_job_end": self.checker.counts["wrong_at_job_end"],
            "work_ratio": executed / single if single else math.nan,
            "lies_sent": sum(self.lies.values()),
            "lies_escaped": escaped,
            "escape_rate": escaped / sum(self.lies.values()) if self.lies else math.nan,
            "liar_fraction": liars / (len(self.peers) - 1),  # of the peers a submitter may draw (wrong-output roles)
            "liar_share": liar_results / stats["results_sent"] if stats["results_sent"] else math.nan,  # of results
            "no_quorum": self.checker.counts["no_quorum"],
            "bad_signature_accepted": self.checker.counts["bad_signature"],
            "liveness_violations": self.checker.counts["liveness"],
            "local_fallbacks": self.checker.local_accepts,
            "wasted_work": 1.0 - self.useful_fuel / executed if executed else 0.0,
            "latency_p50_s": percentile(self.job_latencies, 50),
            "latency_p90_s": percentile(self.job_latencies, 90),
            "latency_p99_s": percentile(self.job_latencies, 99),
            "advert_p50_s": percentile(self.advert_delays, 50),
            "advert_p99_s": percentile(self.advert_delays, 99),
            "adverts_published": self.adverts_published,
            "advert_deliveries": len(self.advert_delays),
            "advert_cache_hits": self.cache.hits,
            "advert_verifications": self.cache.misses,
            "advert_rejections": dict(advert_rejections),
            "fraud_proofs": dict(proofs),
            "trust_honest": sum(honest) / len(honest) if honest else math.nan,
            "trust_byzantine": sum(byz) / len(byz) if byz else math.nan,
            "trust_separation": _auc(honest, byz),
            "messages": self.msgs,
            "message_bytes": self.msg_bytes,
            "dropped": self.net.dropped,
            "retransmits": self.net.retransmits,
            "clogged_messages": self.net.clogged,
            "splits": self.splits,
            "private_peers": 0 if self.nat is None else sum(self.nat.private),
            "relayed_messages": 0 if self.nat is None else self.nat.counts["relayed_messages"],
            "circuits_closed": 0 if self.nat is None else sum(v for k, v in self.nat.counts.items()
                                                               if k.startswith("closed_")),
            "nat": {} if self.nat is None else dict(self.nat.counts),
            "dht_hops": self.dht_hops,
            "faults": dict(self.faults),
            "failed_reasons": dict(self.failed_reasons),
            "worker_stats": dict(stats),
            "events": self.loop.events,
            "wall_s": wall_s,
            "events_per_s": self.loop.events / wall_s if wall_s > 0 else math.nan,
            "virtual_s": self.loop.now - T0,
        }

    def single_execution_fuel(self, spec: JobSpec) -> int:
        """The fuel one honest execution of every task of ``spec`` burns (the modelled guest's, over its chunks)."""
        return sum(honest_chunk(spec.module_cid, self.content[c])[1] for c in spec.chunk_cids) * self.config.fuel_unit

    def _trust_scores(self) -> tuple[list[float], list[float]]:
        """Each worker's mean score over the submitters that dealt with it, split honest / Byzantine."""
        now = self.loop.now
        scores: dict[str, list[float]] = {}
        for i in range(self.config.submitters):
            book = self.peers[i].trust
            for peer in book.peers():
                scores.setdefault(peer, []).append(book.score(peer, now))
        honest: list[float] = []
        byz: list[float] = []
        for peer, values in sorted(scores.items()):
            (honest if self.role_of(peer) == "honest" else byz).append(sum(values) / len(values))
        return honest, byz


def _auc(honest: list[float], byz: list[float]) -> float:
    """P(a random honest worker scores above a random Byzantine one), ties count half; nan without both."""
    if not honest or not byz:
        return math.nan
    allv = sorted([(v, 0) for v in honest] + [(v, 1) for v in byz])
    wins = 0.0
    i = 0
    byz_below = 0
    while i < len(allv):
        j = i
        while j < len(allv) and allv[j][0] == allv[i][0]:
            j += 1
        h = sum(1 for k in range(i, j) if allv[k][1] == 0)
        b = (j - i) - h
        wins += h * (byz_below + 0.5 * b)
        byz_below += b
        i = j
    return wins / (len(honest) * len(byz))


def _reason_class(reason: str) -> str:
    for key in ("disagree", "queue timeout", "gave up", "deterministic"):
        if key in reason:
            return key
    return reason[:40]
