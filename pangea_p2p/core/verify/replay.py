"""ReplayGuard: one accepted receipt per (task, worker), in bounded memory.

A verifier records a receipt only after every other check passed, and only the receipt it was waiting for:
the single receipt of a task it issued, or the root of a receipt tree (the children of a tree are bound to
their parent task, so a second tree for the same task is caught at its root and a subtree cannot be
reused elsewhere). The key is ``Receipt.replay_key``: a hash of (job id, task id, parent task id, issuer,
signer), so a worker gets one accepted receipt per task it was given, whatever nonce it picks — and
nobody can make the guard grow except by being given tasks by this verifier.

Theory of operation.
  State: a map key -> *guard time*, a min-heap of the same entries by guard time, and a *watermark*. The
  guard time of a receipt is ``min(issued_at_s, now)`` at recording: a receipt dated in the future (within
  the allowed skew) is filed under ``now``, so no receipt can ever move the guard's clock past the
  verifier's.
  ``record(key, issued_at_s, now)`` first forgets entries whose guard time is before
  ``now - receipt_age_max_s - clock_skew_max_s`` (a receipt issued at most ``clock_skew_max_s`` after its
  guard time is expired by then, so freshness rejects it anyway), then adds the key; when the map holds
  more than ``replay_entries_max`` keys it forgets the entry with the oldest guard time and raises the
  watermark to that time.
  ``check(key, issued_at_s)``: REPLAYED if the key is remembered; EXPIRED if ``issued_at_s`` is at or before
  the watermark.
  Invariants: the map holds at most ``replay_entries_max`` keys; ``watermark_s`` is never later than the
  ``now`` of any ``record`` call, so receipts issued after the last eviction are never EXPIRED by it; a
  receipt forgotten early (the guard overflowed) whose issued_at_s is at or before its guard time is
  EXPIRED from then on. The gap: once a key was forgotten early, a receipt for it issued after the watermark
  is accepted again — the forgotten receipt itself if it was dated in the future, or one the worker signs
  anew for the same task — only after ``replay_entries_max`` receipts of the verifier's own tasks within one
  freshness window, and only for a task the caller has already settled.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

from pangea_p2p.errors import RejectReason, VerificationError

if TYPE_CHECKING:
    from pangea_p2p.core.verify.config import VerifyConfig


class ReplayGuard:
    """Remembers accepted receipts by ``replay_key`` for the freshness window; bounded (module docstring)."""

    __slots__ = ("_entries_max", "_heap", "_horizon_s", "_seen", "watermark_s")

    def __init__(self, config: VerifyConfig) -> None:
        self._horizon_s = config.receipt_age_max_s + config.clock_skew_max_s
        self._entries_max = config.replay_entries_max
        self._seen: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self.watermark_s = -math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: bytes) -> bool:
        return key in self._seen

    def check(self, key: bytes, issued_at_s: float, what: str = "receipt") -> None:
        """REPLAYED if ``key`` is remembered; EXPIRED if issued at or before the watermark. Records nothing."""
        if key in self._seen:
            raise VerificationError(
                RejectReason.REPLAYED, f"{what}: a receipt of this worker for this task was already accepted"
            )
        if issued_at_s <= self.watermark_s:
            raise VerificationError(
                RejectReason.EXPIRED, f"{what} is older than the oldest receipt this peer still remembers"
            )

    def record(self, key: bytes, issued_at_s: float, now: float) -> None:
        """Remember ``key``; call only after every other check passed. Recording a known key does nothing."""
        heap, seen = self._heap, self._seen
        if key in seen:
            return
        cutoff_s = now - self._horizon_s
        while heap and heap[0][0] < cutoff_s:
            del seen[heapq.heappop(heap)[1]]
        guard_time_s = min(issued_at_s, now)
        seen[key] = guard_time_s
        heapq.heappush(heap, (guard_time_s, key))
        while len(seen) > self._entries_max:
            oldest_s, oldest = heapq.heappop(heap)
            del seen[oldest]
            self.watermark_s = max(self.watermark_s, oldest_s)

    def check_and_record(self, key: bytes, issued_at_s: float, now: float, what: str = "receipt") -> None:
        self.check(key, issued_at_s, what)
        self.record(key, issued_at_s, now)
