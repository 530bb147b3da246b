"""Modules this node will not try to compile again for a while: those whose compilation killed or hung a
sandbox process.

Theory of operation
-------------------
A module that crashes wasmtime's compiler, or compiles slower than the pool allows, costs a sandbox process
(and up to ``worker_grace_s`` + 2 s/MiB of waiting) each time it is submitted. The worker's own memory of
refused modules dies with it, so the pool keeps this list in the parent process.

One state per CID: absent, or QUARANTINED until ``now + duration_s`` (with the reason, for the message).
``add`` moves a CID to QUARANTINED (again: the expiry is pushed back); ``reason`` reports it while
``now`` is before the expiry and forgets it after. Invariants: at most ``entries_max`` CIDs are held (the
one closest to expiry is dropped first, since all share one duration: the oldest); an entry never outlives
its expiry as far as ``reason`` is concerned. Time is a parameter (``now``, seconds on any monotonic clock).
"""

from __future__ import annotations

from collections import OrderedDict

QUARANTINE_ENTRIES_MAX = 1024


class Quarantine:
    """CIDs refused until an expiry time, bounded in count."""

    def __init__(self, duration_s: float, entries_max: int = QUARANTINE_ENTRIES_MAX) -> None:
        if entries_max < 1:
            raise ValueError("a quarantine holds at least one entry")
        self.duration_s = duration_s
        self.entries_max = entries_max
        self._until: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def add(self, cid: str, now: float, reason: str) -> None:
        """Refuse ``cid`` until ``now + duration_s``; ``reason`` says why (one line)."""
        self._until.pop(cid, None)
        self._until[cid] = (now + self.duration_s, reason)
        while len(self._until) > self.entries_max:
            self._until.popitem(last=False)

    def reason(self, cid: str, now: float) -> str | None:
        """Why ``cid`` is refused, or None if it is not (or no longer) quarantined."""
        entry = self._until.get(cid)
        if entry is None:
            return None
        until, why = entry
        if now >= until:
            del self._until[cid]
            return None
        return f"module {cid} is quarantined on this node for {until - now:.0f} s more: {why}"
