"""The discrete-event loop: a heap of ``(time, seq, callback, arg)`` on a virtual clock.

``seq`` breaks ties in scheduling order, so two runs that schedule the same events in the same order pop them in
the same order: the loop itself adds no nondeterminism. ``trace(...)`` folds an event's description into a
BLAKE2b digest (and, when ``keep_trace`` is set, into a list for diffing two runs); equal digests mean equal
histories.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any


class EventLoop:
    __slots__ = ("_digest", "_heap", "_seq", "events", "keep", "now", "records")

    def __init__(self, start_s: float, keep_trace: bool = False) -> None:
        self.now = start_s
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self.events = 0
        self.keep = keep_trace
        self.records: list[str] = []

    def at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``fn(arg)`` at virtual time ``t`` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (t if t > self.now else self.now, self._seq, fn, arg))

    def after(self, delay_s: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.at(self.now + delay_s, fn, arg)

    def trace(self, text: str) -> None:
        """Fold one line of history into the digest."""
        line = f"{self.now:.6f} {text}"
        self._digest.update(line.encode())
        if self.keep:
            self.records.append(line)

    def run_until(self, end_s: float, step: Callable[[], None] | None = None) -> None:
        """Process events up to ``end_s`` (inclusive); ``step`` runs after every event (the checkers)."""
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] <= end_s:
            t, _, fn, arg = pop(heap)
            self.now = t
            self.events += 1
            fn(arg)
            if step is not None:
                step()
        if end_s > self.now:
            self.now = end_s

    @property
    def pending(self) -> int:
        return len(self._heap)

    def digest(self) -> str:
        return self._digest.hexdigest()


def bare_loop(n: int) -> None:
    """The physical limit of the approach: push and pop ``n`` events that do nothing."""
    heap: list[tuple[float, int, None, None]] = []
    push, pop = heapq.heappush, heapq.heappop
    t = 0.0
    for i in range(n):
        t += 0.001
        push(heap, (t + (i * 7919 % 1000) * 1e-4, i, None, None))
        if len(heap) > 1000:
            pop(heap)
    while heap:
        pop(heap)
