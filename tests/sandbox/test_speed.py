from __future__ import annotations

import math

from pangea_p2p.sandbox import measure_speed


def test_measure_speed_reports_fuel_per_second():
    speed = measure_speed(rounds=200_000, repeats=2)
    assert math.isfinite(speed)
    assert speed > 1e6  # any machine that can run wasm at all does more than a million instructions a second
