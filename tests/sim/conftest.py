from __future__ import annotations

from typing import Any

from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.world import SimResult, Simulation

SMALL: dict[str, Any] = {
    "peers": 60, "jobs": 10, "submitters": 3, "warmup_s": 5.0, "arrival_s": 20.0, "safety_s": 90.0,
    "liveness_s": 90.0, "partition_at_s": 10.0, "partition_for_s": 30.0,
}


def small(**changes: Any) -> SimConfig:
    return SimConfig(**{**SMALL, **changes})


def run_small(**changes: Any) -> SimResult:
    return Simulation(small(**changes), "test").run()


def trust_timeouts(sim: Simulation) -> int:
    total = 0
    for i in range(sim.config.submitters):
        book = sim.peers[i].trust
        for peer in book.peers():
            rec = book.get(peer)
            assert rec is not None
            total += rec.timeouts
    return total
