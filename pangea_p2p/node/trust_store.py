"""Trust that survives a restart: the peer's ``TrustBook`` (core/trust.py) in DATA_DIR/trust.sqlite.

What is written: the book's own rows (``TrustBook.export_rows``), one per peer, its ``PeerRecord`` fields as
one JSON object, so a field added to ``PeerRecord`` is stored and read back with no change here. Instants
(``TIME_FIELDS``) are stored as wall-clock seconds (``time.time()``) and converted from and to the clock the
peer gives the core (``clock``; the node's is the wall clock too), so the half-life decay counts the time the
peer was down.

When (``keep_saved``, one task of the peer): within ``SAVE_SOON_S`` of a strong event (a peer falling below
the suspect score: a caught liar stays caught through a ``kill -9``), at most every ``SAVE_INTERVAL_S`` while
the book otherwise changes (batched: never per result), and at shutdown. A save rewrites the table in one
transaction; the book holds at most ``trust.peers_max`` peers, and so does the file.

A file that cannot be read (not SQLite, corrupt, a table of another shape) is set aside as trust.sqlite.bad
(or .bad.1, ...: an earlier copy is kept)
with a one-line warning and the peer starts with an empty book; rows with malformed or hostile values are
skipped (``TrustBook.load_rows``). A save that fails (a full disk) is a warning; the next save tries again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING

import trio

from pangea_p2p.core.trust import TIME_FIELDS, Row, TrustBook
from pangea_p2p.logs import get_logger
from pangea_p2p.node.datadir import set_aside

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SAVE_SOON_S = 1.0
SAVE_INTERVAL_S = 30.0
RECORD_CHARS_MAX = 4096
SCHEMA = "CREATE TABLE IF NOT EXISTS trust (peer TEXT PRIMARY KEY, record TEXT NOT NULL)"

log = get_logger("trust")


def _shifted(value: object, by_s: float) -> object:
    return value + by_s if isinstance(value, int | float) and not isinstance(value, bool) else value


class TrustStore:
    """The trust file of a data dir. ``clock`` is the clock of the ``now`` the book is fed with."""

    def __init__(self, path: Path, clock: Callable[[], float], wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._wall = wall
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(SCHEMA)
        return self._db

    def _shift(self, rows: list[Row], by_s: float) -> list[Row]:
        """``rows`` with their instants moved by ``by_s`` (between the book's clock and the wall clock)."""
        return [(peer, {k: _shifted(v, by_s) if k in TIME_FIELDS else v for k, v in values.items()})
                for peer, values in rows]

    def load(self, book: TrustBook) -> int:
        """Fill ``book`` from the file (an empty book if there is none or it cannot be read); records loaded."""
        try:
            rows = self._read(book.config.peers_max)
        except (sqlite3.Error, OSError) as exc:
            self._set_aside(exc)
            rows = []
        return book.load_rows(self._shift(rows, self._clock() - self._wall()))

    def _read(self, rows_max: int) -> list[Row]:
        rows: list[Row] = []
        for peer, text in self._connect().execute("SELECT peer, record FROM trust LIMIT ?", (rows_max,)):
            if not isinstance(text, str) or len(text) > RECORD_CHARS_MAX:
                continue
            try:
                values = json.loads(text)
            except ValueError:
                continue
            if isinstance(values, dict):
                rows.append((peer, values))
        return rows

    def _set_aside(self, exc: BaseException) -> None:
        self.close()
        where = set_aside(self.path)
        log.warning("trust.unreadable", path=str(self.path), error=str(exc), then=f"empty trust book; the file {where}")

    def save(self, rows: list[Row]) -> bool:
        """Replace the file's records by ``rows`` (``TrustBook.export_rows()``); False (and a warning) if it failed."""
        stored = [(peer, json.dumps(values)) for peer, values in self._shift(rows, self._wall() - self._clock())]
        try:
            db = self._connect()
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM trust")
                db.executemany("INSERT OR REPLACE INTO trust (peer, record) VALUES (?, ?)", stored)
        except (sqlite3.Error, OSError) as exc:
            log.warning("trust.save_failed", path=str(self.path), error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def keep_saved(self, book: TrustBook, soon_s: float = SAVE_SOON_S,
                         interval_s: float = SAVE_INTERVAL_S) -> None:
        """Save ``book`` when it changes (see the module docstring) until cancelled, then once more and close."""
        saved, strong, last_s = book.version, book.strong_version, trio.current_time()
        try:
            while True:
                await trio.sleep(soon_s)
                if book.version == saved:
                    continue
                if book.strong_version == strong and trio.current_time() - last_s < interval_s:
                    continue
                saved, strong, last_s = book.version, book.strong_version, trio.current_time()
                rows = book.export_rows()
                if not await trio.to_thread.run_sync(self.save, rows):
                    saved = -1  # tried again after the interval, and at shutdown
        finally:
            if book.version != saved:
                self.save(book.export_rows())
            self.close()
