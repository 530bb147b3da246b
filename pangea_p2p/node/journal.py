"""The job journal: SQLite in DATA_DIR/jobs.sqlite, so a restarted submitting peer resumes its jobs.

What is written: each job's spec when it is submitted and its state when it ends; each task when it ends
(DONE with its output content id and receipt tree, FAILED or CANCELLED with the reason). Running and pending
states are not written: after a restart, a task that was not done is simply placed again. The blocks the
journal names (chunks, outputs) are persisted in the block store.

Finished tasks are written in batches (a statement costs ~0.1 ms here, as much as the rest of a tiny task's
bookkeeping): ``task_finished`` queues the row and the caller calls ``flush`` soon after (the compute service
does within FLUSH_AFTER_S); a job's end, a read and ``close`` flush first. A crash loses at most the queued
rows: those tasks run again after the restart.

A journal that cannot be read at start (not SQLite, corrupt, tables of another shape) is moved aside
(``datadir.set_aside``: jobs.sqlite.bad, never deleted) with a warning naming both files, and the peer starts a
fresh one; a job whose row does not decode is skipped with a warning (its row stays in the file).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pangea_p2p.core.jobs.effects import TaskUpdate
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskState, VerificationMode, VerificationPolicy
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.errors import PangeaError
from pangea_p2p.logs import get_logger
from pangea_p2p.node.datadir import set_aside

FLUSH_AFTER_S = 0.05  # how long a finished task may wait in memory for its row
FLUSH_ROWS = 512  # or how many may

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    created_s REAL NOT NULL, finished_s REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    job_id TEXT NOT NULL, task_id TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    output_cid TEXT NOT NULL DEFAULT '', tree BLOB, fuel_used INTEGER NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '', PRIMARY KEY (job_id, task_id)
);
"""


log = get_logger("journal")

TaskRecord = TaskUpdate  # a journaled task is the last update of it


@dataclass(frozen=True, slots=True)
class JobRecord:
    spec: JobSpec
    state: JobState
    reason: str
    created_s: float
    finished_s: float | None
    tasks: dict[str, TaskRecord]


def spec_to_json(spec: JobSpec) -> str:
    doc = asdict(spec)
    doc["verification"] = str(spec.verification)
    doc["verification_commit_reveal"] = spec.verification.commit_reveal
    doc["deadline_s"] = None if spec.deadline_s == float("inf") else spec.deadline_s
    return json.dumps(doc)


def spec_from_json(text: str) -> JobSpec:
    doc: dict[str, Any] = json.loads(text)
    policy = VerificationPolicy.parse(doc.pop("verification"))
    commit_reveal = doc.pop("verification_commit_reveal", True)
    if policy.mode is VerificationMode.REPLICAS:
        policy = VerificationPolicy(policy.mode, policy.spot_checks, policy.replicas, commit_reveal)
    doc["limits"] = ReceiptLimits(**doc["limits"])
    doc["chunk_cids"] = tuple(doc["chunk_cids"])
    doc["chunk_sizes"] = tuple(doc["chunk_sizes"])
    doc["deadline_s"] = float("inf") if doc["deadline_s"] is None else doc["deadline_s"]
    return JobSpec(verification=policy, **doc)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = _open(path)
        except _Unreadable as exc:
            where = set_aside(path)
            log.warning("journal.unreadable", path=str(path), error=str(exc.__cause__),
                        then=f"a fresh journal; the old one {where}")
            try:
                self._db = _open(path)
            except _Unreadable as again:
                raise PangeaError(f"cannot open the job journal {path}: {again.__cause__}") from None
        self._rows: list[tuple[str, str, str, str, str, bytes, int, str]] = []  # finished tasks not written yet

    def close(self) -> None:
        self.flush()
        self._db.close()

    @property
    def pending(self) -> int:
        """Finished tasks queued and not written yet."""
        return len(self._rows)

    def flush(self) -> None:
        """Write the queued finished tasks, in one transaction."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            with self._db:  # autocommit connection: the BEGIN makes the batch one transaction
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO tasks (job_id, task_id, state, reason, output_cid, tree, fuel_used, "
                    "worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error:
            self._rows[:0] = rows  # kept for the next flush (a full disk may clear)
            raise

    def job_submitted(self, spec: JobSpec, now: float) -> None:
        """Record a new job; an old job of the same id (failed or cancelled before) is forgotten with its tasks."""
        self.flush()
        with self._db:
            self._db.execute("BEGIN")  # autocommit connection: forgetting the old job and recording the new is one
            self._db.execute("DELETE FROM tasks WHERE job_id = ?", (spec.job_id,))
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (job_id, spec, state, created_s) VALUES (?, ?, ?, ?)",
                (spec.job_id, spec_to_json(spec), JobState.RUNNING.value, now),
            )

    def job_finished(self, job_id: str, state: JobState, reason: str, now: float) -> None:
        self.flush()
        self._db.execute(
            "UPDATE jobs SET state = ?, reason = ?, finished_s = ? WHERE job_id = ?", (state.value, reason, now, job_id)
        )

    def task_finished(self, job_id: str, rec: TaskRecord) -> None:
        """Queue a finished task's row (see the module docstring); written at once when FLUSH_ROWS are queued."""
        self._rows.append(
            (job_id, rec.task_id, rec.state.value, rec.reason, rec.output_cid, rec.tree, rec.fuel_used, rec.worker))
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def jobs(self) -> list[JobRecord]:
        """The journaled jobs that decode (one warning per job that does not: its row is kept in the file)."""
        self.flush()
        rows = self._db.execute("SELECT job_id, spec, state, reason, created_s, finished_s FROM jobs").fetchall()
        out = []
        for row in rows:
            try:
                out.append(self._job(*row))
            except (ValueError, TypeError, KeyError, AttributeError, PangeaError, sqlite3.Error) as exc:
                log.warning("journal.bad_job", path=str(self.path), job_id=repr(row[0])[:80],
                            error=f"{type(exc).__name__}: {exc}"[:200], then="skipped; its row stays in the file")
        return out

    def _job(self, job_id: str, spec: str, state: str, reason: str, created_s: float,
             finished_s: float | None) -> JobRecord:
        tasks = {
            r[0]: TaskRecord(r[0], TaskState(r[1]), r[2], r[3], r[4] or b"", r[5], r[6])
            for r in self._db.execute(
                "SELECT task_id, state, reason, output_cid, tree, fuel_used, worker FROM tasks WHERE job_id = ?",
                (job_id,),
            )
        }
        return JobRecord(spec_from_json(spec), JobState(state), reason, created_s, finished_s, tasks)


class _Unreadable(Exception):
    """The journal file cannot be used (its cause says why)."""


def _open(path: Path) -> sqlite3.Connection:
    """A connection to the journal at ``path`` with its tables checked; _Unreadable if it is not a usable journal."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise PangeaError(f"cannot open the job journal {path}: {exc}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        db.execute("SELECT job_id, spec, state, reason, created_s, finished_s FROM jobs LIMIT 0")
        db.execute("SELECT job_id, task_id, state, reason, output_cid, tree, fuel_used, worker FROM tasks LIMIT 0")
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc) or "unable to open" in str(exc) or "readonly" in str(exc):
            raise PangeaError(f"cannot open the job journal {path}: {exc}") from None
        raise _Unreadable() from exc  # a table of another shape
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _Unreadable() from exc
    return db
