"""``measure_speed``: its arithmetic checked on a fake clock (no timing in the assertion), and one real run."""

from __future__ import annotations

import math
import struct

from pangea_p2p.sandbox import SandboxLimits, measure_speed
from pangea_p2p.sandbox import executor as executor_module
from tests.sandbox.conftest import guest


def test_measure_speed_is_the_best_fuel_per_second_of_its_runs(executor, monkeypatch):
    cid, module = guest("bench")
    fuel = executor.run(cid, module, struct.pack("<I", 50_000), SandboxLimits(fuel_max=10**10)).report.fuel_used
    durations = iter([0.5, 0.25, 1.0])  # seconds each run takes on the fake clock
    now = [100.0]
    started: list[bool] = []

    def fake_perf_counter() -> float:
        # called once when a run starts and once when it ends
        if started:
            started.clear()
            now[0] += next(durations)
        else:
            started.append(True)
        return now[0]

    monkeypatch.setattr(executor_module.time, "perf_counter", fake_perf_counter)
    assert measure_speed(rounds=50_000, repeats=3) == fuel / 0.25


def test_measure_speed_on_this_machine():
    speed = measure_speed(rounds=200_000, repeats=2)
    assert math.isfinite(speed)
    assert speed > 0
