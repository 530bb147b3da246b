"""Loaded at start-up by the colluding workers of tests/e2e/test_colluders_e2e.py (this directory is put first on
their PYTHONPATH): their own patched execution step, not the project's fault switch. Every task they serve is
answered with the same wrong bytes (a digest of the right output and a shared secret), so two of them agree with
each other on every task and can win a vote together; their own checks (spot checks, audits) stay honest."""

from __future__ import annotations

import hashlib
from typing import Any

from pangea_p2p.core.jobs.events import Executed, Purpose
from pangea_p2p.node import compute

_execute = compute.ComputeService._execute


async def _colluding(self: Any, act: Any) -> Any:
    event = await _execute(self, act)
    if act.purpose is Purpose.SERVE and isinstance(event, Executed) and event.outputs:
        outputs = [hashlib.sha256(b"we agree " + o).digest() for o in event.outputs]
        return Executed(event.request, outputs, event.failure, event.fuel_used, event.log)
    return event


compute.ComputeService._execute = _colluding  # type: ignore[method-assign]
