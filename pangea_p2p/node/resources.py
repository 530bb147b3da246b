"""What this machine can offer: cores and free memory (its speed is ``pangea_p2p.sandbox.measure_speed``)."""

from __future__ import annotations

import os

import psutil


def cpu_cores() -> int:
    """Cores this process may run on (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def memory_free_bytes() -> int:
    return int(psutil.virtual_memory().available)
