"""``measure_speed()``: fuel per second of the fixed benchmark guest on this machine (capacity adverts).

A peer calls it once at start. It runs the ``bench`` guest (integer, table and float64 work; see
guests/bench.c) three times in this process and returns the best rate: one core's speed in the unit that
task budgets are written in, so a scheduler can turn a task's ``fuel_max`` into an expected duration.
Takes ~0.1 s.
"""

from __future__ import annotations

import struct

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import PangeaError
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox.config import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.executor import Executor

BENCH_ROUNDS = 3_000_000
BENCH_REPEATS = 3


def measure_speed(rounds: int = BENCH_ROUNDS, repeats: int = BENCH_REPEATS) -> float:
    """Fuel per second of one core running the benchmark guest (best of ``repeats`` runs)."""
    module = load_guest("bench")
    cid = cid_of(module)
    data = struct.pack("<I", rounds)
    limits = SandboxLimits(fuel_max=10**10, wall_time_s=30.0, memory_bytes_max=16 * 1024 * 1024)
    best = 0.0
    with Executor(SandboxConfig(workers=1)) as executor:
        for _ in range(repeats):
            result = executor.run(cid, module, data, limits)
            if result.failure is not None:
                raise PangeaError(f"speed benchmark failed: {result.failure.message}")
            best = max(best, result.report.fuel_used / max(result.report.wall_time_s, 1e-9))
    return best
