"""The logs of the tasks this peer issued: what their steps printed, as the workers sent it.

A ``TaskResult`` carries its task's log (protocols/compute.md, "Log"); the compute behaviour records the
latest one per task here, with the worker that sent it (a split task's answer carries its parts' logs), and
``GET /v1/jobs/{id}/logs`` (``pangea job logs``) reads them back. Logs are not signed: they say what the
worker says its run printed. Kept in memory only, at most ``bytes_max`` bytes of them (the oldest tasks' logs
go first); a restarted peer has none of the logs from before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

TASK_LOGS_BYTES_MAX = 64 << 20


@dataclass(frozen=True, slots=True)
class TaskLog:
    worker: str
    log: bytes


class TaskLogs:
    """Task id -> its latest log, bounded in bytes."""

    def __init__(self, bytes_max: int = TASK_LOGS_BYTES_MAX) -> None:
        self.bytes_max = bytes_max
        self._logs: OrderedDict[str, TaskLog] = OrderedDict()
        self._bytes = 0

    def record(self, task_id: str, worker: str, log: bytes) -> None:
        """Keep ``log`` as what ``task_id`` printed (an empty log keeps nothing)."""
        if not log:
            return
        old = self._logs.pop(task_id, None)
        if old is not None:
            self._bytes -= len(old.log)
        self._logs[task_id] = TaskLog(worker, log)
        self._bytes += len(log)
        while self._bytes > self.bytes_max and len(self._logs) > 1:
            _, evicted = self._logs.popitem(last=False)
            self._bytes -= len(evicted.log)

    def get(self, task_id: str) -> TaskLog | None:
        return self._logs.get(task_id)

    def of_tasks(self, task_ids: Iterable[str]) -> dict[str, TaskLog]:
        """The logs of those of ``task_ids`` that have one, in the order given."""
        return {t: log for t in task_ids if (log := self._logs.get(t)) is not None}
