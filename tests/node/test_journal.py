"""The job journal (SQLite in the data dir): what a restarted submitter resumes from."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import JobSpec, JobState, TaskState
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.node.journal import FLUSH_ROWS, Journal, TaskRecord

LIMITS = ReceiptLimits(10**9, 64 << 20, 10.0, 1 << 20)


def spec(chunks: list[bytes]) -> JobSpec:
    return JobSpec(job_id="again", module_cid=cid_of(b"module"), chunk_cids=tuple(cid_of(c) for c in chunks),
                   chunk_sizes=tuple(len(c) for c in chunks), limits=LIMITS)


def test_a_job_and_its_finished_tasks_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    journal = Journal(path)
    first = spec([b"a", b"b"])
    journal.job_submitted(first, 100.0)
    journal.task_finished("again", TaskRecord("again/t0", TaskState.DONE, "", cid_of(b"out"), b"tree", 7, "w1"))
    journal.close()
    (record,) = Journal(path).jobs()
    assert record.spec == first
    assert record.state is JobState.RUNNING
    assert record.tasks["again/t0"].output_cid == cid_of(b"out")
    assert record.tasks["again/t0"].fuel_used == 7


def test_a_new_job_with_an_old_jobs_id_does_not_inherit_its_results(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "jobs.sqlite")
    journal.job_submitted(spec([b"a", b"b"]), 100.0)
    journal.task_finished("again", TaskRecord("again/t0", TaskState.DONE, "", cid_of(b"out"), b"tree", 7, "w1"))
    journal.job_finished("again", JobState.FAILED, "task again/t1 failed", 101.0)
    second = spec([b"x", b"y"])  # the same id reused for other data
    journal.job_submitted(second, 200.0)
    (record,) = journal.jobs()
    assert record.spec == second
    assert record.tasks == {}


def test_finished_tasks_are_written_in_batches_and_none_is_lost_at_a_flush_point(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    journal = Journal(path)
    journal.job_submitted(spec([b"a"] * (FLUSH_ROWS + 2)), 100.0)

    def on_disk() -> int:
        (record,) = Journal(path).jobs()  # another connection: what a restarted peer would read
        return len(record.tasks)

    def done(i: int) -> None:
        journal.task_finished("again", TaskRecord(f"again/t{i}", TaskState.DONE, "", cid_of(b"o"), b"tree", 1, "w"))

    done(0)
    assert (journal.pending, on_disk()) == (1, 0)  # queued, not written yet
    journal.flush()
    assert (journal.pending, on_disk()) == (0, 1)
    for i in range(1, FLUSH_ROWS + 1):
        done(i)
    assert (journal.pending, on_disk()) == (0, FLUSH_ROWS + 1)  # a full batch is written at once
    done(FLUSH_ROWS + 1)
    journal.job_finished("again", JobState.DONE, "", 101.0)  # a job's end writes its tasks first
    (record,) = Journal(path).jobs()
    assert (record.state, len(record.tasks)) == (JobState.DONE, FLUSH_ROWS + 2)
    journal.close()


def test_rows_a_failed_flush_could_not_write_are_kept_for_the_next(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    journal = Journal(path)
    journal.job_submitted(spec([b"a", b"b"]), 100.0)
    journal.task_finished("again", TaskRecord("again/t0", TaskState.DONE, "", cid_of(b"o"), b"tree", 1, "w"))
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database: the flush cannot write
    journal._db.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        journal.flush()
    assert journal.pending == 1
    other.rollback()
    other.close()
    journal.flush()
    (record,) = Journal(path).jobs()
    assert list(record.tasks) == ["again/t0"]
    journal.close()


@pytest.mark.parametrize("content", [
    b"this is not a database" * 100,  # not SQLite at all
    b"",  # replaced by the shape below
])
def test_an_unreadable_journal_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "jobs.sqlite"
    if content:
        path.write_bytes(content)
    else:  # SQLite, but a "jobs" table of another shape
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE jobs (x INTEGER)")
            db.execute("INSERT INTO jobs VALUES (1)")
        db.close()
        content = path.read_bytes()
    (tmp_path / "jobs.sqlite.bad").write_bytes(b"an earlier bad copy")
    with caplog.at_level(logging.WARNING, logger="pangea.journal"):
        journal = Journal(path)
    (warning,) = [r for r in caplog.records if r.getMessage() == "journal.unreadable"]
    fields = warning.fields  # type: ignore[attr-defined]
    assert fields["path"] == str(path)
    assert fields["then"] == f"a fresh journal; the old one moved to {tmp_path / 'jobs.sqlite.bad.1'}"
    moved = tmp_path / "jobs.sqlite.bad.1"
    if content.startswith(b"SQLite"):  # the other table and its row are still there
        with sqlite3.connect(moved) as db:
            assert db.execute("SELECT x FROM jobs").fetchall() == [(1,)]
        db.close()
    else:
        assert moved.read_bytes() == content  # nothing lost
    assert (tmp_path / "jobs.sqlite.bad").read_bytes() == b"an earlier bad copy"  # nor the earlier copy
    journal.job_submitted(spec([b"a"]), 100.0)
    journal.close()
    (record,) = Journal(path).jobs()
    assert record.spec == spec([b"a"])


def test_a_job_row_that_does_not_decode_is_skipped_with_a_warning_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.sqlite"
    journal = Journal(path)
    journal.job_submitted(spec([b"a"]), 100.0)
    journal._db.execute("INSERT INTO jobs (job_id, spec, state, created_s) VALUES (?, ?, ?, ?)",
                        ("broken", '{"x": 1', "running", 1.0))
    with caplog.at_level(logging.WARNING, logger="pangea.journal"):
        records = journal.jobs()
    assert [r.spec.job_id for r in records] == ["again"]
    (warning,) = [r for r in caplog.records if r.getMessage() == "journal.bad_job"]
    assert warning.fields["job_id"] == "'broken'"  # type: ignore[attr-defined]
    assert journal._db.execute("SELECT count(*) FROM jobs").fetchone() == (2,)  # the row stays
    journal.close()
