"""What this machine can offer: cores, free memory, measured speed."""

from __future__ import annotations

import hashlib
import os
import time

import psutil


def cpu_cores() -> int:
    """Cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def memory_free_bytes() -> int:
    return int(psutil.virtual_memory().available)


def measure_speed_fuel_per_s(duration_s: float = 0.05) -> float:
    """Speed of one core in fuel per second.

    Until the sandbox lands this is a CPU micro-benchmark (sha256 throughput scaled to roughly the fuel rate of
    wasmtime on the machines in ../shared/notes: ~1.5e9 fuel/s against ~1.7 GB/s of sha256).
    """
    block = b"\x5a" * 65536
    deadline = time.perf_counter() + duration_s
    start, n = time.perf_counter(), 0
    while time.perf_counter() < deadline:
        hashlib.sha256(block).digest()
        n += 1
    bytes_per_s = n * len(block) / (time.perf_counter() - start)
    return bytes_per_s * (1.5e9 / 1.7e9)
