"""This process's own executor, for running steps where the user is (``Job.run_local``, ``pangea guest run``).

One ``Executor`` per process, created on first use and kept, so a module -- the Python interpreter above
all, 0.7 s to compile -- is compiled once per process; one caller at a time (a lock). Its maxima are the
sandbox's absolute ones: locally the user who asks for limits owns the machine, so every task's own limits
apply as given.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from pangea_p2p.sandbox.config import (
    FUEL_ABSOLUTE_MAX,
    MEMORY_BYTES_ABSOLUTE_MAX,
    OUTPUT_BYTES_ABSOLUTE_MAX,
    WALL_TIME_S_ABSOLUTE_MAX,
    SandboxConfig,
    SandboxLimits,
)
from pangea_p2p.sandbox.executor import Executor

_lock = threading.Lock()
_executor: Executor | None = None


@contextlib.contextmanager
def local_executor() -> Iterator[Executor]:
    """The process's executor, held for the duration of the block."""
    global _executor
    with _lock:
        if _executor is None:
            maxima = SandboxLimits(fuel_max=FUEL_ABSOLUTE_MAX, memory_bytes_max=MEMORY_BYTES_ABSOLUTE_MAX,
                                   wall_time_s=WALL_TIME_S_ABSOLUTE_MAX, output_bytes_max=OUTPUT_BYTES_ABSOLUTE_MAX)
            _executor = Executor(SandboxConfig(limits_max=maxima, workers=1))
        yield _executor
