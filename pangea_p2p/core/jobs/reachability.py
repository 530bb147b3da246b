"""Which workers could not be reached lately, shared by every coordinator of a peer."""

from __future__ import annotations


class Reachability:
    """Workers that could not be reached lately (or said they were full), each until its cool-down ends. One per peer,
    shared by its coordinators (like ``inflight``): a worker one job could not dial is not offered another job's
    tasks either until the cool-down is over, or until it is heard from (any answer marks it reachable again).
    Bounded: expired entries are dropped, and at most ``entries_max`` are kept (the soonest to expire go first)."""

    def __init__(self, entries_max: int = 4096) -> None:
        self.entries_max = entries_max
        self._until: dict[str, float] = {}

    def mark_unreachable(self, worker: str, until_s: float) -> None:
        self._until[worker] = max(until_s, self._until.get(worker, until_s))
        if len(self._until) > self.entries_max:
            for w, _ in sorted(self._until.items(), key=lambda kv: (kv[1], kv[0]))[: len(self._until) // 4]:
                del self._until[w]

    def mark_busy(self, worker: str, until_s: float) -> None:
        """``worker`` declined a task because it is full: no offers until ``until_s`` or until it answers."""
        self.mark_unreachable(worker, until_s)

    def mark_reachable(self, worker: str) -> None:
        self._until.pop(worker, None)

    def cooling(self, now: float) -> frozenset[str]:
        """The workers still in their cool-down at ``now`` (expired ones are forgotten)."""
        if not self._until:
            return frozenset()
        expired = [w for w, t in self._until.items() if t <= now]
        for w in expired:
            del self._until[w]
        return frozenset(self._until)

    def next_expiry(self, now: float) -> float | None:
        return min((t for t in self._until.values() if t > now), default=None)
