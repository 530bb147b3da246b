"""The network model: regions, links, bandwidth classes, faults, and the overlays (gossip mesh, DHT).

Latency. Each peer sits in one of the eight regions of libp2p's gossipsub-interop network model (test-plans
``gossipsub-interop/network_graph.py``: region weights and one-way latencies, 2-7 ms inside a region, 60-220 ms
between regions); a message takes the one-way latency of its regions, plus jitter (a per-message uniform
fraction of it), plus its size over the slower of the sender's upload and receiver's download bandwidth (20 %
of peers at 1024 Mbit/s, 80 % at 50 Mbit/s, the same model's node types).

Faults, all drawn from the run's seed:
- loss: compute traffic rides on TCP streams, so a lost segment is retransmitted: each loss adds a
  retransmission timeout (doubling) instead of dropping the message;
- partitions: every peer has a side; a message between different sides is dropped (symmetric), or only the
  messages leaving side 1 are (asymmetric); modes: ``one`` (isolate one peer), ``majority`` (a clean majority /
  minority split), ``islands:K`` (K groups); ``heal`` puts everyone back on one side;
- clogged peers: a clogged peer's messages (both ways) are held until it unclogs (FoundationDB swizzle-clogging);
- slow peers: run tasks ``slow_factor`` times slower than they advertise (they do not know it);
- churn (crash, leave, join, restart) is in world.py: a peer that is down receives nothing.

Overlays. Gossip (capacity adverts) is not simulated message by message: a degree-D random mesh is built once,
and an advert's delivery time to a peer is its shortest-path time over the mesh (Dijkstra over link latency +
transfer + per-hop validation), computed from each peer that needs adverts (a peer with a capacity directory).
During a partition an advert reaches only the publisher's side. DHT lookups take ``ceil(log2(n) / log2(alpha
* ...))``-ish hops: ``dht_hops(n)`` = ceil(log_2(n) / 3) + 1 round trips to random peers (Kademlia, k = 20).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

REGIONS = ("australia", "europe", "east_asia", "west_asia", "na_east", "na_west", "south_africa", "south_america")
REGION_WEIGHTS = (290, 5599, 1059, 161, 2894, 1240, 47, 36)
# One-way latency in ms (symmetric), rows and columns in REGIONS order.
LATENCY_MS = (
    (2, 165, 110, 180, 150, 110, 220, 190),
    (165, 2, 125, 60, 70, 110, 95, 140),
    (110, 125, 4, 110, 140, 100, 175, 175),
    (180, 60, 110, 5, 110, 150, 110, 145),
    (150, 70, 140, 110, 2, 60, 130, 100),
    (110, 110, 100, 150, 60, 2, 160, 100),
    (220, 95, 175, 110, 130, 160, 7, 195),
    (190, 140, 175, 145, 100, 100, 190, 7),
)
BANDWIDTH_CLASSES_BPS = ((1024e6, 0.2), (50e6, 0.8))  # (bits per second, share of peers)
HOP_VALIDATE_S = 0.0005  # a gossip hop checks the advert's signature before passing it on
RTO_S_MIN = 0.2


@dataclass
class Faults:
    loss: float = 0.0
    jitter: float = 0.1


class Network:
    """Per-peer region and bandwidth; partitions, clogs, loss. Indexes are peer numbers 0..n-1."""

    def __init__(self, n: int, rng: random.Random, faults: Faults) -> None:
        self.n = n
        self.rng = rng
        self.faults = faults
        self.region = rng.choices(range(len(REGIONS)), weights=REGION_WEIGHTS, k=n)
        bws = [b for b, _ in BANDWIDTH_CLASSES_BPS]
        self.bandwidth_bps = rng.choices(bws, weights=[w for _, w in BANDWIDTH_CLASSES_BPS], k=n)
        self.latency_s = [[ms / 1000.0 for ms in row] for row in LATENCY_MS]
        self.side: list[int] | None = None  # None: no partition
        self.asymmetric = False
        self.clogged_until: dict[int, float] = {}
        self.dropped = 0
        self.retransmits = 0
        self.clogged = 0

    # --- one message -------------------------------------------------------------------------------------

    def one_way_s(self, a: int, b: int) -> float:
        return self.latency_s[self.region[a]][self.region[b]]

    def blocked(self, a: int, b: int) -> bool:
        side = self.side
        if side is None or side[a] == side[b]:
            return False
        return not self.asymmetric or side[a] == 1

    def delay_s(self, a: int, b: int, size: int, now: float) -> float:
        """Seconds for ``size`` bytes from a to b, sent at ``now`` (faults included; not for blocked links)."""
        base = self.latency_s[self.region[a]][self.region[b]]
        d = base * (1.0 + self.faults.jitter * self.rng.random())
        d += size * 8.0 / min(self.bandwidth_bps[a], self.bandwidth_bps[b])
        loss = self.faults.loss
        if loss > 0.0:
            rto = max(RTO_S_MIN, 3.0 * base)
            while self.rng.random() < loss:
                d += rto
                rto *= 2.0
                self.retransmits += 1
        if self.clogged_until:
            until = max(self.clogged_until.get(a, 0.0), self.clogged_until.get(b, 0.0))
            if until > now + d:
                self.clogged += 1
                d = until - now
        return d

    # --- partitions --------------------------------------------------------------------------------------

    def partition(self, mode: str, rng: random.Random, asymmetric: bool = False, isolate: int | None = None) -> str:
        """Split the network (see the module docstring); returns a description for the trace."""
        n = self.n
        if mode == "one":
            victim = isolate if isolate is not None else rng.randrange(n)
            self.side = [0] * n
            self.side[victim] = 1
        elif mode == "majority":
            order = list(range(n))
            rng.shuffle(order)
            self.side = [0] * n
            for i in order[: (n - 1) // 2]:
                self.side[i] = 1
        elif mode.startswith("islands"):
            k = int(mode.partition(":")[2] or 3)
            self.side = [rng.randrange(k) for _ in range(n)]
        else:
            raise ValueError(f"partition mode {mode!r}: use one, majority or islands:K")
        self.asymmetric = asymmetric
        sizes = [self.side.count(s) for s in range(max(self.side) + 1)]
        return f"partition {mode} {'asymmetric' if asymmetric else 'symmetric'} sides={sizes}"

    def heal(self) -> None:
        self.side = None
        self.asymmetric = False


class Mesh:
    """A random degree-D overlay (gossipsub's mesh) with link weights; shortest delivery times over it."""

    def __init__(self, net: Network, degree: int, rng: random.Random, advert_bytes: int) -> None:
        n = net.n
        self.net = net
        self.adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        half = max(1, degree // 2)
        for a in range(n):
            for _ in range(half):
                b = rng.randrange(n - 1) if n > 1 else 0
                if b >= a:
                    b += 1
                if n > 1:
                    w = self._weight(a, b, advert_bytes)
                    self.adj[a].append((b, w))
                    self.adj[b].append((a, w))

    def _weight(self, a: int, b: int, size: int) -> float:
        net = self.net
        return (net.one_way_s(a, b) + size * 8.0 / min(net.bandwidth_bps[a], net.bandwidth_bps[b])
                + HOP_VALIDATE_S)

    def distances_from(self, src: int) -> list[float]:
        """Shortest gossip delivery time from ``src`` to every peer (inf if unreachable)."""
        dist = [math.inf] * len(self.adj)
        dist[src] = 0.0
        heap = [(0.0, src)]
        adj = self.adj
        while heap:
            d, a = heapq.heappop(heap)
            if d > dist[a]:
                continue
            for b, w in adj[a]:
                nd = d + w
                if nd < dist[b]:
                    dist[b] = nd
                    heapq.heappush(heap, (nd, b))
        return dist


def dht_hops(n: int) -> int:
    """Round trips of a Kademlia lookup in a network of ``n`` peers (k = 20, alpha = 3): O(log n)."""
    return max(1, math.ceil(math.log2(max(2, n)) / 3)) + 1
