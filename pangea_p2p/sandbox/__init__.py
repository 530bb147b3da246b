"""The WebAssembly sandbox: wasmtime with fuel, memory and wall-time limits, typed failures; guests import
nothing (kind 1) or a deterministic WASI allowlist (kind 2, ``wasi``), and Python steps run in MicroPython
(``pystep``).

    from pangea_p2p.sandbox import open_sandbox, SandboxLimits
    async with open_sandbox(SandboxConfig()) as sandbox:
        result = await sandbox.run(module_cid, module_bytes, input_bytes, SandboxLimits(fuel_max=10**9))
        output = result.unwrap()          # or inspect result.failure / result.report
        # a task over a chunk list, one round trip to a sandbox process; fuel_max is the whole task's budget:
        chunks = await sandbox.run_chunks(module_cid, module_bytes, [b"a", b"b"], limits)
        outputs = chunks.unwrap()         # or chunks.failure, chunks.failed_index, chunks.report

``Executor`` runs tasks synchronously in this process (benchmarks, ``measure_speed``, ``local_executor`` for
``Job.run_local`` and ``pangea guest run``); the node uses the pool (``open_sandbox``), whose sandbox
processes keep a wasmtime abort from taking the peer down; modules compile in processes of their own
(``compiler``). The guest ABI is in protocols/guest-abi.md. The pool (and trio), the executor and
``measure_speed`` (wasmtime) are imported lazily: sandbox processes start fast, and code that only needs the
light modules (``pystep``, ``config``, ``result``: the SDK, the CLI) loads no engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pangea_p2p.sandbox.config import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.result import ChunksResult, Failure, MeteringReport, SandboxResult

if TYPE_CHECKING:
    from pangea_p2p.sandbox.executor import Executor
    from pangea_p2p.sandbox.pool import Sandbox, SandboxStats, open_sandbox
    from pangea_p2p.sandbox.speed import measure_speed

__all__ = [
    "ChunksResult",
    "Executor",
    "Failure",
    "MeteringReport",
    "Sandbox",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxResult",
    "SandboxStats",
    "measure_speed",
    "open_sandbox",
]


def __getattr__(name: str) -> Any:
    if name in ("Sandbox", "SandboxStats", "open_sandbox"):
        from pangea_p2p.sandbox import pool

        return getattr(pool, name)
    if name == "Executor":
        from pangea_p2p.sandbox.executor import Executor

        return Executor
    if name == "measure_speed":
        from pangea_p2p.sandbox.speed import measure_speed

        return measure_speed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
