"""Placement: how big a task is, whether to run it here, split it, or send it to which neighbour.

Everything here is a pure function of the task, the candidate workers (built from capacity adverts, the trust
book and measured round-trip times) and the time; the coordinator calls it, the simulator runs it unchanged.

Cost model. A task's *complexity* is its expected seconds on a reference peer: fuel estimate / reference
speed + input bytes / reference bandwidth. On a given worker its *expected duration* is
    rtt + input_bytes / bandwidth + fuel_estimate / (speed_fuel_per_s) * (1 + queued / slots)
where ``queued`` counts the tasks we already sent that worker and are still out. The fuel estimate is the
job's own estimate per chunk, or what its completed tasks used so far, or (first tasks) the task's fuel budget.

Decisions (``place``), in order:
1. candidates = workers whose advert accepts the task's limits, with a free slot (by their advert, minus
   what we have out with them), not excluded (already ran or failed this task, cooling down after it could
   not be reached, or on the task's path), with trust above ``trust_floor``, and reachable (see *NAT* below);
2. if the task is bigger than ``split_above_s`` on the best single worker, has more than one chunk, may still
   be split (depth < depth_max) and there are at least two candidates: SPLIT into parts;
3. otherwise run LOCAL when this peer has a free slot and is no slower than the best candidate (ties go to
   local: no transfer, no trust needed), else DELEGATE to the best-ranked candidates (replicas of a vote:
   to candidates drawn at random, see below);
4. no candidate and no local slot: QUEUE, with a reason a user can read.
Ranking: expected duration, scaled down by trust (a peer with a long valid record is preferred at equal
speed), never two replicas on the same worker.

NAT. ``WorkerView.link`` says how a worker is reached: directly (or by a connection it opened to us, or one
DCUtR hole-punched: any task), through a circuit relay, or not at all (its advert says it is private and has no
relay address yet, and we hold no connection to it: it waits like a busy worker, until a relay is reserved).
A relayed worker takes an input of at most ``relayed_input_bytes_max`` bytes, and only tasks that fit the
circuit its relays grant (the advert's ``relay_circuit_s`` / ``relay_circuit_bytes``, or ``relay_circuit_s``
/ ``relay_circuit_bytes`` of this config when it states none): input plus the largest output within the
circuit's bytes, and ``longest_s`` (its whole fuel budget at the worker's speed, both transfers at
``relayed_bandwidth_bytes_per_s``) within its lifetime: answers go back on the stream the offer came on, so a
circuit that closes mid-task loses the task. The circuit we already hold to it must still have that long to
live (``relay_circuit_age_s``); if not, the worker waits like a busy one until the relay closes that circuit
and the next offer opens a fresh one. Its transfers count at that bandwidth in the expected duration (a relay's
uplink is shared by its circuits, two hops each).

Defences against lying adverts (Sybils). An advertised speed is a claim nobody checked, so:
- *speed cap*: an unverified speed (``WorkerView.speed_verified`` False) counts for at most
  ``speed_cap_factor`` times the median speed of the workers offered (``speed_cap``); a peer that advertises
  100x gains no more priority than an honest fast one. A verified speed (this peer's own, or one the driver
  measured) is taken as it is. The median is robust while liars are fewer than half the candidates.
- *independent replicas*: when the request carries an rng (the coordinator passes one for every replica of
  a vote, also a single top-up replica), the delegates are drawn at random among the eligible workers,
  without replacement, each with weight ``replica_weight(trust)`` (1 at zero trust, up to
  ``replica_weight_max`` for a long valid record, below 1 for a negative one) — not taken from the top of
  the ranking. Each replica is then an independent draw, so a party holding a fraction f of the eligible
  workers fills k of n replicas with probability about C(n,k) f^k (1-f)^(n-k), whatever it advertises
  (BOINC issues the replicas of a workunit to hosts of unrelated users in the same way). Without an rng
  (single-replica work: HASH, an ADAPTIVE primary, a split's parts) placement stays by rank. The price: a
  vote no longer goes to the fastest workers (in the simulator, replicas:3 job latency p50 ~1 s -> ~3 s).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from pangea_p2p.core.capacity import CapacityAdvert
from pangea_p2p.core.jobs.model import TaskRef, as_int
from pangea_p2p.core.nat import CIRCUIT_DEFAULT, Link, Reachability
from pangea_p2p.core.verify.config import check_range

REFERENCE_SPEED_FUEL_PER_S = 1e9
REFERENCE_BANDWIDTH_BYTES_PER_S = 50e6
RTT_UNKNOWN_S = 0.005


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A candidate worker as the scheduler sees it."""

    peer_id: str
    speed_fuel_per_s: float
    slots_free: int
    slots_total: int
    fuel_max: int
    memory_bytes_max: int
    wall_time_s_max: float
    trust: float = 0.0
    rtt_s: float = RTT_UNKNOWN_S
    outstanding: int = 0  # tasks we have out with this worker now
    speed_verified: bool = False  # measured by us (or this peer's own), not only advertised: never capped
    link: Link = Link.DIRECT  # how we reach it: a relayed worker gets only small inputs, an unreachable one none
    relay_circuit_s: float = 0.0  # a relayed worker's circuits live this long (0: not stated)
    relay_circuit_bytes: int = 0  # ... and carry this many bytes (0: not stated)
    relay_circuit_age_s: float | None = None  # the relayed connection we hold to it was opened this long ago

    @classmethod
    def from_advert(cls, advert: CapacityAdvert, trust: float, rtt_s: float | None, outstanding: int,
                    link: Link | None = None, circuit_age_s: float | None = None) -> WorkerView:
        """``link``: how we are connected to it now, if we are; else what its advert says (``advert_link``).
        ``circuit_age_s``: how long ago the relayed connection we hold to it was opened."""
        cap = advert.capacity
        # The advert's free-slot count is seconds old and already counts our own tasks there; the slots it
        # has in all, minus what we have out with it, is the better guess. Another issuer's load shows up as
        # a "busy" rejection (the worker queues up to its queue_max first), which costs one round trip.
        return cls(
            advert.peer_id, cap.speed_fuel_per_s, cap.task_slots_total, cap.task_slots_total, cap.fuel_max,
            cap.memory_bytes_max, cap.wall_time_s_max, trust, RTT_UNKNOWN_S if rtt_s is None else rtt_s, outstanding,
            link=advert_link(advert) if link is None else link, relay_circuit_s=float(cap.relay_circuit_s),
            relay_circuit_bytes=cap.relay_circuit_bytes,
            relay_circuit_age_s=circuit_age_s if link is Link.RELAYED else None,
        )


def advert_link(advert: CapacityAdvert) -> Link:
    """How a worker we hold no connection to will be reached: through its relays if it says it is private and
    has relay addresses, not at all if it is private without any, else directly (unknown reachability is tried
    directly, as before adverts said)."""
    cap = advert.capacity
    if cap.reachability != Reachability.PRIVATE.value:
        return Link.DIRECT
    return Link.RELAYED if cap.relay_addrs else Link.UNREACHABLE


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    split_above_s: float = 30.0  # a task expected to take longer than this on one worker is split if it can be
    trust_floor: float = -10.0  # workers scoring below this get no work
    trust_weight: float = 0.02  # how much one point of trust shortens the expected duration (2 %)
    bandwidth_bytes_per_s: float = REFERENCE_BANDWIDTH_BYTES_PER_S
    parts_max: int = 16  # a split makes at most this many parts
    speed_cap_factor: float = 2.0  # an unverified advertised speed counts up to this times the median one
    replica_trust_weight: float = 0.25  # replica draws: weight 1 + this * trust (1 / (1 + this * |trust|) if < 0)
    replica_weight_max: float = 4.0  # ... at most this (a long record helps, it cannot monopolise the votes)
    # a worker reached only through a circuit relay gets tasks with at most this many input bytes: relays cap
    # the bytes and duration of a circuit (protocols/nat.md), so big inputs go to direct or hole-punched ones
    relayed_input_bytes_max: int = 256 << 10
    relayed_bandwidth_bytes_per_s: float = 1e6  # a relayed transfer's rate, for the expected duration
    # assumed of a relay whose worker's advert states no circuit limits: what our own relays grant by default
    relay_circuit_s: float = float(CIRCUIT_DEFAULT.duration_s)
    relay_circuit_bytes: int = CIRCUIT_DEFAULT.bytes

    def __post_init__(self) -> None:
        as_int("parts_max", self.parts_max, 2, 1024)
        as_int("relayed_input_bytes_max", self.relayed_input_bytes_max, 0, 1 << 40)
        as_int("relay_circuit_bytes", self.relay_circuit_bytes, 1, 1 << 50)
        for name, low, high in (("split_above_s", 0.001, 86400.0), ("trust_floor", -1e9, 1e9),
                                ("trust_weight", 0.0, 100.0), ("bandwidth_bytes_per_s", 1e3, 1e12),
                                ("speed_cap_factor", 1.0, 1e6), ("replica_trust_weight", 0.0, 100.0),
                                ("replica_weight_max", 1.0, 1e6), ("relayed_bandwidth_bytes_per_s", 1e3, 1e12),
                                ("relay_circuit_s", 1.0, 7 * 86400.0)):
            check_range(name, getattr(self, name), low, high)


@dataclass(frozen=True, slots=True)
class Placement:
    """The scheduler's answer. Exactly one of the kinds applies."""

    kind: str  # "local" | "delegate" | "split" | "queue"
    workers: tuple[str, ...] = ()  # for "delegate": best first
    parts: int = 0  # for "split"
    reason: str = ""  # why: shown by `pangea job explain`
    expected_s: float = 0.0


def fuel_estimate(task: TaskRef, learned_fuel_per_chunk: float | None) -> float:
    """Expected fuel of ``task``: the job's estimate, else what completed tasks used, else its budget."""
    if task.fuel_per_chunk_estimate > 0:
        return min(float(task.fuel_per_chunk_estimate * task.chunk_count), float(task.limits.fuel_max))
    if learned_fuel_per_chunk is not None:
        return min(learned_fuel_per_chunk * task.chunk_count, float(task.limits.fuel_max))
    return float(task.limits.fuel_max)


def complexity_s(task: TaskRef, fuel: float) -> float:
    """Expected seconds of ``task`` on a reference peer (1e9 fuel/s, 50 MB/s, nothing queued)."""
    return fuel / REFERENCE_SPEED_FUEL_PER_S + task.input_bytes / REFERENCE_BANDWIDTH_BYTES_PER_S


def expected_s(task: TaskRef, fuel: float, worker: WorkerView, cfg: SchedulerConfig, local: bool = False) -> float:
    transfer = 0.0 if local else worker.rtt_s + task.input_bytes / bandwidth(worker, cfg)
    queue_factor = 1.0 + worker.outstanding / max(1, worker.slots_total)
    return transfer + fuel / max(worker.speed_fuel_per_s, 1.0) * queue_factor


def bandwidth(worker: WorkerView, cfg: SchedulerConfig) -> float:
    """The transfer rate assumed to ``worker``: through a relay, ``relayed_bandwidth_bytes_per_s``."""
    return cfg.relayed_bandwidth_bytes_per_s if worker.link is Link.RELAYED else cfg.bandwidth_bytes_per_s


def relay_problem(task: TaskRef, worker: WorkerView, cfg: SchedulerConfig, busy_ok: bool = False) -> str | None:
    """Why a relayed ``worker`` cannot take ``task`` through its relays' circuits (see *NAT*), or None
    (``busy_ok``: or could, through a fresh circuit, once the one we hold has closed)."""
    if task.input_bytes > cfg.relayed_input_bytes_max:
        return (f"is reached only through a relay, which takes inputs up to {cfg.relayed_input_bytes_max} bytes "
                f"(task has {task.input_bytes})")
    moved = task.input_bytes + task.limits.output_bytes_max
    circuit_bytes = worker.relay_circuit_bytes or cfg.relay_circuit_bytes
    if moved > circuit_bytes:
        return (f"is reached through a relay whose circuits carry {circuit_bytes} bytes (task may move {moved}: "
                f"lower its output_bytes_max)")
    circuit_s = worker.relay_circuit_s or cfg.relay_circuit_s
    longest = longest_s(task, worker, cfg)
    if longest > circuit_s:
        return f"is reached through a relay whose circuits live {circuit_s:g} s (task may take {longest:.0f} s)"
    left = None if worker.relay_circuit_age_s is None else circuit_s - worker.relay_circuit_age_s
    if left is not None and longest > left and not busy_ok:
        return f"is reached through a relayed circuit that closes in {left:.0f} s (task may take {longest:.0f} s)"
    return None


def longest_s(task: TaskRef, worker: WorkerView, cfg: SchedulerConfig) -> float:
    """The longest ``task`` may take on ``worker``: its whole fuel budget at the worker's speed (at most its
    wall-time limit over all its chunks), both transfers at the worker's bandwidth, and a round trip."""
    run = min(task.limits.fuel_max / max(worker.speed_fuel_per_s, 1.0), task.chunk_count * task.limits.wall_time_s)
    moved = task.input_bytes + task.limits.output_bytes_max
    return worker.rtt_s + moved / bandwidth(worker, cfg) + run


def ineligible(task: TaskRef, worker: WorkerView, cfg: SchedulerConfig, *, busy_ok: bool = False) -> str | None:
    """Why ``worker`` cannot take ``task`` (a short phrase), or None if it can (``busy_ok``: or could, once it
    has a free slot)."""
    lim = task.limits
    if lim.fuel_max > worker.fuel_max:
        return f"accepts at most {worker.fuel_max} fuel (task needs {lim.fuel_max})"
    if lim.memory_bytes_max > worker.memory_bytes_max:
        return (f"accepts at most {worker.memory_bytes_max >> 20} MiB of memory "
                f"(task needs {lim.memory_bytes_max >> 20} MiB)")
    if lim.wall_time_s > worker.wall_time_s_max:
        return f"accepts at most {worker.wall_time_s_max:g} s of wall time (task needs {lim.wall_time_s:g} s)"
    if worker.slots_free - worker.outstanding <= 0 and not busy_ok:
        return "has no free task slot"
    if worker.trust < cfg.trust_floor:
        return f"trust {worker.trust:.1f} below {cfg.trust_floor:g}"
    if worker.link is Link.RELAYED:
        return relay_problem(task, worker, cfg, busy_ok)
    if worker.link is Link.UNREACHABLE and not busy_ok:  # it will be, once it holds a relay reservation
        return "is behind a NAT and holds no relay reservation yet"
    return None


def speed_cap(workers: list[WorkerView], cfg: SchedulerConfig) -> float:
    """The most an unverified advertised speed counts for: ``speed_cap_factor`` x the median speed offered."""
    if not workers:
        return math.inf
    speeds = sorted(w.speed_fuel_per_s for w in workers)
    mid = len(speeds) // 2
    median = speeds[mid] if len(speeds) % 2 else (speeds[mid - 1] + speeds[mid]) / 2.0
    return cfg.speed_cap_factor * median


def capped(workers: list[WorkerView], cap: float) -> list[WorkerView]:
    """``workers`` with every unverified speed above ``cap`` lowered to it."""
    return [
        w if w.speed_verified or w.speed_fuel_per_s <= cap else replace(w, speed_fuel_per_s=cap) for w in workers
    ]


def replica_weight(trust: float, cfg: SchedulerConfig) -> float:
    """How likely a worker is drawn for a replica, relative to a newcomer (weight 1)."""
    if trust >= 0.0:
        return min(cfg.replica_weight_max, 1.0 + cfg.replica_trust_weight * trust)
    return 1.0 / (1.0 + cfg.replica_trust_weight * -trust)


def draw(ranked: list[tuple[float, WorkerView]], n: int, rng: random.Random,
         cfg: SchedulerConfig) -> list[tuple[float, WorkerView]]:
    """``n`` distinct workers drawn at random from ``ranked``, weighted by ``replica_weight`` (in a fixed order,
    by peer id, so that the draw depends on the rng and the set of workers only)."""
    pool = sorted(ranked, key=lambda sw: sw[1].peer_id)
    weights = [replica_weight(w.trust, cfg) for _, w in pool]
    chosen: list[tuple[float, WorkerView]] = []
    while pool and len(chosen) < n:
        x = rng.random() * sum(weights)
        i = 0
        while i < len(pool) - 1 and x >= weights[i]:
            x -= weights[i]
            i += 1
        chosen.append(pool.pop(i))
        weights.pop(i)
    return chosen


def rank(task: TaskRef, fuel: float, workers: list[WorkerView], cfg: SchedulerConfig) -> list[tuple[float, WorkerView]]:
    """Eligible workers by effective expected duration, best first (ties broken by peer id: deterministic)."""
    scored = []
    for w in workers:
        if ineligible(task, w, cfg) is None:
            score = expected_s(task, fuel, w, cfg) / (1.0 + cfg.trust_weight * max(w.trust, 0.0))
            scored.append((score, w))
    scored.sort(key=lambda sw: (sw[0], sw[1].peer_id))
    return scored


@dataclass
class PlaceRequest:
    task: TaskRef
    fuel: float
    workers: list[WorkerView]
    local: WorkerView | None  # this peer, if it may run the task itself (None: it must not, e.g. full)
    exclude: frozenset[str] = field(default_factory=frozenset)
    replicas: int = 1  # how many distinct workers are wanted (redundant execution)
    may_split: bool = True
    rng: random.Random | None = None  # set: draw the delegates at random (replicas of a vote), else by rank


def place(req: PlaceRequest, cfg: SchedulerConfig) -> Placement:
    """Decide where ``req.task`` goes (see the module docstring)."""
    task, fuel = req.task, req.fuel
    cap = speed_cap(req.workers, cfg)
    candidates = capped([w for w in req.workers if w.peer_id not in req.exclude and w.peer_id not in task.path], cap)
    ranked = rank(task, fuel, candidates, cfg)
    local_ok = req.local is not None and ineligible(task, req.local, cfg) is None
    best_remote = ranked[0][0] if ranked else math.inf
    local_s = expected_s(task, fuel, req.local, cfg, local=True) if local_ok and req.local else math.inf
    best_single = min(best_remote, local_s)
    if (
        req.may_split and req.replicas == 1 and task.chunk_count > 1 and task.depth < task.depth_max
        and best_single > cfg.split_above_s and len(ranked) >= 2
    ):
        parts = min(task.chunk_count, cfg.parts_max, len(ranked) + (1 if local_ok else 0),
                    max(2, math.ceil(best_single / cfg.split_above_s)))
        return Placement("split", parts=parts, expected_s=best_single / parts,
                         reason=f"expected {best_single:.1f} s on one peer, above {cfg.split_above_s:g} s: "
                                f"split into {parts} parts")
    if req.replicas == 1 and local_ok and local_s <= best_remote:
        return Placement("local", expected_s=local_s, reason=f"runs here (expected {local_s:.3f} s)")
    if len(ranked) >= req.replicas or (ranked and req.replicas > 1):
        if req.rng is not None:
            picked = draw(ranked, req.replicas, req.rng, cfg)
            how = f"drawn at random from {len(ranked)} eligible"
        else:
            picked = ranked[: req.replicas]
            how = "best ranked"
        chosen = tuple(w.peer_id for _, w in picked)
        best = min(score for score, _ in picked)
        return Placement("delegate", workers=chosen, expected_s=best,
                         reason=f"sent to {len(chosen)} worker(s) ({how}), best expected {best:.3f} s")
    return Placement("queue", reason=queue_reason(task, candidates, req, cfg))


def queue_reason(task: TaskRef, candidates: list[WorkerView], req: PlaceRequest, cfg: SchedulerConfig) -> str:
    """Why nobody can take the task now, in words (the most common obstacle first)."""
    if not req.workers:
        return "no worker is known yet (no capacity adverts received)"
    if not candidates:
        return (f"all {len(req.workers)} known workers are out of reach for now (busy or unreachable, cooling down) "
                "or already ran, failed or relayed this task")
    reasons: dict[str, int] = {}
    for w in candidates:
        why = ineligible(task, w, cfg)
        if why is not None:
            key = why.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
    if not reasons:
        return f"{len(candidates)} eligible worker(s), {req.replicas} distinct ones needed"
    parts = [f"{n} worker(s) {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    return f"waiting for a worker: {'; '.join(parts)}"


def split_sizes(chunk_count: int, parts: int) -> list[int]:
    """Chunk counts of ``parts`` near-equal consecutive parts (the larger ones first)."""
    parts = max(1, min(parts, chunk_count))
    base, extra = divmod(chunk_count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
