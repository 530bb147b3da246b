"""Limits of one task (``SandboxLimits``) and the node's sandbox configuration (``SandboxConfig``).

Both are frozen and validated on construction: a value out of its allowed range raises
``ConfigError(key, "... allowed range ...")``. A task asks for ``SandboxLimits``; the node's ``SandboxConfig``
holds the maxima (``limits_max``) a task may ask for, the worker count, the queue bounds and the caches.
Limits that arrive from a remote peer go through ``SandboxLimits.parse``, which returns a REJECTED
``Failure`` instead of raising (a peer's bad value is not our configuration error).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pangea_p2p.errors import ConfigError, FailureKind
from pangea_p2p.sandbox.result import Failure

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

FUEL_ABSOLUTE_MAX = 10**15            # ~10 days of wasm at 1e9 fuel/s
MEMORY_BYTES_ABSOLUTE_MAX = 4 * GiB   # wasm32 address space
WALL_TIME_S_ABSOLUTE_MAX = 86_400.0
OUTPUT_BYTES_ABSOLUTE_MAX = 1 * GiB
# The summed output of one task crosses the worker pipe in one response (u32 lengths, bounded memory).
TASK_OUTPUT_BYTES_ABSOLUTE_MAX = 2 * GiB
WASM_PAGE_BYTES = 64 * KiB
# max_wasm_stack above 2 MiB makes wasmtime 50 panic and abort the whole process (notes §2).
WASM_STACK_BYTES_ABSOLUTE_MAX = 2 * MiB


def _check_int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is outside the allowed range {low}..{high}")


def _check_float(key: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is outside the allowed range {low}..{high}")


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one task may use. Defaults: 10^10 fuel, 100 MiB of memory, 30 s, 16 MiB of output."""

    fuel_max: int = 10_000_000_000
    memory_bytes_max: int = 100 * MiB
    wall_time_s: float = 30.0
    output_bytes_max: int = 16 * MiB

    def __post_init__(self) -> None:
        _check_int("fuel_max", self.fuel_max, 1, FUEL_ABSOLUTE_MAX)
        _check_int("memory_bytes_max", self.memory_bytes_max, WASM_PAGE_BYTES, MEMORY_BYTES_ABSOLUTE_MAX)
        _check_float("wall_time_s", self.wall_time_s, 0.001, WALL_TIME_S_ABSOLUTE_MAX)
        _check_int("output_bytes_max", self.output_bytes_max, 0, OUTPUT_BYTES_ABSOLUTE_MAX)

    @classmethod
    def parse(cls, *, fuel_max: object, memory_bytes_max: object, wall_time_s: object,
              output_bytes_max: object) -> SandboxLimits | Failure:
        """Limits sent by a remote peer: the validated limits, or a REJECTED ``Failure`` naming the bad value.

        Integers are accepted for ``wall_time_s`` (and stored as float); anything out of range or of the
        wrong type is refused with the same one-line message a ``ConfigError`` would carry.
        """
        if isinstance(wall_time_s, int) and not isinstance(wall_time_s, bool):
            wall_time_s = float(wall_time_s)
        try:
            return cls(fuel_max=fuel_max, memory_bytes_max=memory_bytes_max,  # type: ignore[arg-type]
                       wall_time_s=wall_time_s, output_bytes_max=output_bytes_max)  # type: ignore[arg-type]
        except ConfigError as exc:
            return Failure(FailureKind.REJECTED, f"task limits refused: {exc.key}: {exc.problem}")

    def excess_over(self, maxima: SandboxLimits) -> str | None:
        """A one-line description of the first limit above ``maxima``, or None when all fit."""
        for f in fields(self):
            asked, allowed = getattr(self, f.name), getattr(maxima, f.name)
            if asked > allowed:
                return f"task asks for {f.name}={asked}, this node allows at most {allowed}"
        return None


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """The node's sandbox: maxima a task may ask for, sandbox processes, caches.

    ``cache_dir``, when set, holds modules this node compiled itself, serialized (native code): it must be
    a directory only this user can write. Nothing else is ever loaded from it.

    ``queue_max`` bounds the tasks waiting for a sandbox process; ``queued_bytes_max`` bounds the input
    bytes of the tasks the pool holds (queued or running): a task that would go past it is REJECTED, except
    when the pool holds nothing (so one task up to the memory limit always fits). ``task_output_bytes_max``
    bounds the summed output of one task's chunks, ``log_bytes_max`` its log (what a WASI guest or a Python
    step prints; the rest is dropped). A module whose compilation crashed or hung a sandbox process is
    quarantined (REJECTED at once) for ``quarantine_s`` seconds.

    Compilation (``compiler``, ``modshape``): a module with more than ``module_functions_max`` functions or
    a function body over ``function_bytes_max`` bytes is refused unread; the others compile in a process
    of their own under ``compile_memory_bytes_max`` of address space and ``compile_time_s_max`` seconds.
    Each sandbox process keeps compiled modules in an LRU of at most ``module_cache_entries`` modules and
    ``module_cache_bytes_max`` bytes of native code; the disk cache holds at most ``disk_cache_bytes_max``.
    """

    limits_max: SandboxLimits = field(default_factory=SandboxLimits)
    workers: int = field(default_factory=_default_workers)
    queue_max: int = 4096
    queued_bytes_max: int = 1 * GiB
    task_output_bytes_max: int = 256 * MiB
    module_cache_entries: int = 64
    module_cache_bytes_max: int = 128 * MiB
    disk_cache_bytes_max: int = 1 * GiB
    module_bytes_max: int = 16 * MiB
    module_functions_max: int = 20_000
    function_bytes_max: int = 1 * MiB
    compile_memory_bytes_max: int = 1 * GiB
    compile_time_s_max: float = 30.0
    log_bytes_max: int = 64 * KiB
    wasm_stack_bytes: int = 1 * MiB
    worker_grace_s: float = 5.0
    worker_start_timeout_s: float = 60.0
    quarantine_s: float = 600.0
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limits_max, SandboxLimits):
            raise ConfigError("limits_max", f"must be SandboxLimits, got {type(self.limits_max).__name__}")
        _check_int("workers", self.workers, 1, 256)
        _check_int("queue_max", self.queue_max, 0, 1_000_000)
        _check_int("queued_bytes_max", self.queued_bytes_max, 1 * MiB, 1024 * GiB)
        _check_int("task_output_bytes_max", self.task_output_bytes_max, 1 * KiB, TASK_OUTPUT_BYTES_ABSOLUTE_MAX)
        _check_int("module_cache_entries", self.module_cache_entries, 1, 10_000)
        _check_int("module_cache_bytes_max", self.module_cache_bytes_max, 1 * MiB, 64 * GiB)
        _check_int("disk_cache_bytes_max", self.disk_cache_bytes_max, 1 * MiB, 1024 * GiB)
        _check_int("module_bytes_max", self.module_bytes_max, 1 * KiB, 256 * MiB)
        _check_int("module_functions_max", self.module_functions_max, 1, 1_000_000)
        _check_int("function_bytes_max", self.function_bytes_max, 1 * KiB, 8 * MiB)
        _check_int("compile_memory_bytes_max", self.compile_memory_bytes_max, 256 * MiB, 64 * GiB)
        _check_float("compile_time_s_max", self.compile_time_s_max, 1.0, 600.0)
        _check_int("log_bytes_max", self.log_bytes_max, 0, 16 * MiB)
        _check_int("wasm_stack_bytes", self.wasm_stack_bytes, 64 * KiB, WASM_STACK_BYTES_ABSOLUTE_MAX)
        _check_float("worker_grace_s", self.worker_grace_s, 0.1, 600.0)
        _check_float("worker_start_timeout_s", self.worker_start_timeout_s, 1.0, 600.0)
        _check_float("quarantine_s", self.quarantine_s, 0.0, 7 * 86_400.0)
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            raise ConfigError("cache_dir", f"must be a path, got {self.cache_dir!r}")

    def default_limits(self) -> SandboxLimits:
        """The limits of a task that asks for none: the issue's defaults, lowered to this node's maxima."""
        defaults, maxima = SandboxLimits(), self.limits_max
        return SandboxLimits(**{f.name: min(getattr(defaults, f.name), getattr(maxima, f.name))
                                for f in fields(SandboxLimits)})

    def to_json(self) -> str:
        """The config as JSON (how the pool hands it to sandbox processes)."""
        data = asdict(self)
        data["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        """Build from a mapping (a TOML table or JSON object); unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown sandbox setting; known: {', '.join(sorted(known))}")
        kwargs = dict(data)
        if "limits_max" in kwargs:
            limits = kwargs["limits_max"]
            if not isinstance(limits, dict):
                raise ConfigError("limits_max", "must be a table of fuel_max, memory_bytes_max, ...")
            limit_keys = {f.name for f in fields(SandboxLimits)}
            bad = sorted(set(limits) - limit_keys)
            if bad:
                raise ConfigError(f"limits_max.{bad[0]}", f"unknown limit; known: {', '.join(sorted(limit_keys))}")
            kwargs["limits_max"] = SandboxLimits(**limits)
        if kwargs.get("cache_dir") is not None:
            kwargs["cache_dir"] = Path(kwargs["cache_dir"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> SandboxConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError("sandbox", "config JSON must be an object")
        return cls.from_dict(data)
