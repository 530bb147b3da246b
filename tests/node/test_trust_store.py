"""The trust file (node/trust_store.py): trust survives a restart, decays across the downtime, and a corrupt
or hostile file costs a warning and an empty book, never the peer."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from pangea_p2p.core.trust import Outcome, TrustBook, TrustConfig
from pangea_p2p.node.trust_store import TrustStore

DAY = 86400.0
WALL0 = 1_800_000_000.0


class Clocks:
    """A wall clock and a clock of ``now`` (e.g. monotonic) that starts elsewhere; both moved by the test."""

    def __init__(self, wall: float, now: float) -> None:
        self.wall_s, self.now_s = wall, now

    def wall(self) -> float:
        return self.wall_s

    def now(self) -> float:
        return self.now_s


def store(path: Path, clocks: Clocks) -> TrustStore:
    return TrustStore(path, clock=clocks.now, wall=clocks.wall)


def test_trust_survives_a_restart_and_decays_over_the_downtime(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    before = Clocks(WALL0, now=500.0)
    book = TrustBook()
    book.record("liar", Outcome.INVALID, before.now())
    book.record("honest", Outcome.VALID, before.now())
    first = store(path, before)
    assert first.load(TrustBook()) == 0, "no file yet: an empty book"
    assert first.save(book.export_rows())
    first.close()
    # A week later the peer starts again; its `now` clock restarted near zero.
    after = Clocks(WALL0 + 7 * DAY, now=3.0)
    again = TrustBook()
    assert store(path, after).load(again) == 2
    liar = again.get("liar")
    assert liar is not None
    assert liar.invalid == 1
    assert liar.updated_s == pytest.approx(3.0 - 7 * DAY), "stored as wall time, brought back to the clock of now"
    assert again.score("liar", after.now()) == pytest.approx(book.score("liar", 500.0 + 7 * DAY))
    assert again.score("liar", after.now()) == pytest.approx(-10.0), "one half-life"
    assert again.peers() == book.peers()


def test_a_corrupt_file_gives_a_warning_and_an_empty_book_and_is_set_aside(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "trust.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    clocks = Clocks(WALL0, 0.0)
    trust = store(path, clocks)
    book = TrustBook()
    with caplog.at_level(logging.WARNING):
        assert trust.load(book) == 0
    (warning,) = [r for r in caplog.records if "trust.unreadable" in r.getMessage()]
    assert "\n" not in warning.getMessage()
    assert (tmp_path / "trust.sqlite.bad").read_bytes().startswith(b"this is not a database")
    book.record("p", Outcome.INVALID, 0.0)
    assert trust.save(book.export_rows()), "a fresh file replaces the corrupt one"
    trust.close()
    assert store(path, clocks).load(TrustBook()) == 1


def test_a_table_of_another_shape_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trust (who INTEGER, what BLOB)")
    assert store(path, Clocks(WALL0, 0.0)).load(TrustBook()) == 0
    assert (tmp_path / "trust.sqlite.bad").exists()


def test_hostile_rows_are_skipped_and_the_rest_loaded(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    rows = [("good", json.dumps({"score": -50.0, "invalid": 3, "updated_s": WALL0})),
            ("nan", '{"score": NaN}'),
            ("big", json.dumps({"score": 1.0, "pad": "x" * 10_000})),
            ("notjson", "{"),
            ("list", "[1, 2]"),
            ("str-time", json.dumps({"updated_s": "yesterday"})),
            (b"blob-peer", json.dumps({"score": 1.0})),
            ("blob-record", b"\x00\x01")]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trust (peer TEXT PRIMARY KEY, record TEXT NOT NULL)")
        db.executemany("INSERT INTO trust VALUES (?, ?)", rows)
    book = TrustBook()
    assert store(path, Clocks(WALL0, WALL0)).load(book) == 1
    assert book.peers() == ["good"]
    assert book.score("good", WALL0) == -50.0


def test_a_failed_save_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-dir").write_text("")
    book = TrustBook()
    book.record("p", Outcome.VALID, 0.0)
    with caplog.at_level(logging.WARNING):
        assert not store(tmp_path / "not-a-dir" / "trust.sqlite", Clocks(WALL0, 0.0)).save(book.export_rows())
    assert "trust.save_failed" in caplog.text


def test_the_file_holds_at_most_peers_max_records(tmp_path: Path) -> None:
    path = tmp_path / "trust.sqlite"
    clocks = Clocks(WALL0, WALL0)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trust (peer TEXT PRIMARY KEY, record TEXT NOT NULL)")
        db.executemany("INSERT INTO trust VALUES (?, ?)",
                       [(f"p{i}", json.dumps({"score": 1.0, "updated_s": WALL0})) for i in range(50)])
    assert store(path, clocks).load(TrustBook(TrustConfig(peers_max=10))) == 10


async def test_saves_are_batched_soon_after_a_strong_event_and_at_shutdown(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    path = tmp_path / "trust.sqlite"
    clocks = Clocks(WALL0, WALL0)
    book = TrustBook()
    saved: list[int] = []
    trust = store(path, clocks)
    real_save = trust.save

    def counting_save(rows: list) -> bool:
        ok = real_save(rows)
        saved.append(len(rows))
        return ok

    trust.save = counting_save  # type: ignore[method-assign]

    def on_disk() -> TrustBook:
        loaded = TrustBook()
        store(path, clocks).load(loaded)
        return loaded

    # when each save was decided (virtual time, in trio's thread: the rows are exported right before the save
    # goes to a worker thread, which takes real time while the virtual clock may jump on)
    decided: list[float] = []

    class DecidingBook(TrustBook):
        def export_rows(self) -> list:  # type: ignore[override]
            decided.append(trio.current_time())
            return super().export_rows()

    book = DecidingBook()

    async def saves(count: int) -> float:
        """Wait for ``count`` saves done; how long after the call the last one was decided (virtual time)."""
        start, deadline = trio.current_time(), time.monotonic() + 30.0
        while len(saved) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - it ends in a thread
            await trio.sleep(0.001)
        assert len(saved) == count
        return decided[count - 1] - start

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trust.keep_saved, book, 1.0, 30.0)
        await trio.sleep(0.5)
        for i in range(100):  # many ordinary results: one save at the end of the interval, not one each
            book.record(f"w{i % 3}", Outcome.VALID, WALL0)
        await trio.sleep(10.0)
        assert saved == [], "ordinary changes wait for the interval"
        assert 15.0 < await saves(1) < 25.0
        assert saved == [3]
        book.record("liar", Outcome.INVALID, WALL0)  # a strong event: saved within about a second
        assert await saves(2) < 5.0
        assert saved == [3, 4]
        assert "liar" in on_disk()
        book.record("w0", Outcome.VALID, WALL0)
        nursery.cancel_scope.cancel()
    assert saved == [3, 4, 4], "the last change is saved at shutdown"
    rec = on_disk().get("w0")
    assert rec is not None
    assert rec.valid == 35
