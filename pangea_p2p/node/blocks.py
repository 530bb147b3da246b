"""The peer's block store: content-addressed bytes (modules, chunks, task inputs and outputs).

Blocks live in memory (an LRU bounded in bytes) and, when ``persist`` is asked, also on disk so a restarted
peer still has its jobs' inputs and outputs: a block of up to SMALL_BYTES_MAX in DATA_DIR/blocks/small.sqlite
(a row), a bigger one in its own file DATA_DIR/blocks/<cid>. Creating a file costs 0.1-0.8 ms on these
machines, and a tiny task has an input and an output to keep: one file each was a fifth of a busy submitter's
CPU; a batch of rows costs a few microseconds a block (the way IPFS's datastores keep small blocks in a
key-value store rather than flat files). ``persist="soon"`` keeps a block in memory (outside the LRU, so it
cannot be evicted) until a writer takes it with ``take_unwritten``, writes the batch in a thread
(``write_files``) and calls ``written``. Every block is checked against its content id on the way in, and
again when it is read back from disk (a row or file whose bytes do not match its name is ignored and removed).
The store also serves /pangea/block/1.0.0 to other peers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from pangea_p2p.core.cid import canonical_cid, cid_matches, cid_of
from pangea_p2p.errors import PangeaError, RemoteProtocolError

MEMORY_BYTES_MAX = 512 << 20
BLOCK_BYTES_MAX = 1 << 30
SMALL_BYTES_MAX = 64 << 10  # blocks up to this size are rows of small.sqlite, bigger ones files
SMALL_DB = "small.sqlite"


class BlockStore:
    def __init__(self, directory: Path | None, memory_bytes_max: int = MEMORY_BYTES_MAX) -> None:
        self.directory = directory
        self.memory_bytes_max = memory_bytes_max
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._mem_bytes = 0
        self._unwritten: dict[str, bytes] = {}  # persist="soon" blocks no writer took yet
        self._writing: dict[str, bytes] = {}  # taken by a writer, their files not known to exist yet
        self._db: sqlite3.Connection | None = None  # small blocks: the owning thread's reads and writes
        self._owner = threading.get_ident()  # the thread that made the store (the event loop's)
        self._thread_db = threading.local()  # a writer thread's own connection (one per thread, WAL mode)
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        assert self.directory is not None
        path = self.directory / SMALL_DB
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS blocks (cid TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
        except sqlite3.Error as exc:
            raise PangeaError(f"cannot open the block database {path}: {exc} (move it aside to start afresh)") from exc
        return db

    def close(self) -> None:
        """Write what waits for the disk, and close the database (at shutdown)."""
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def put(self, data: bytes, *, persist: bool | Literal["soon"] = False, cid: str | None = None) -> str:
        """Store ``data``; return its content id (``cid`` if given, after checking it). ``persist``: also on
        disk, now (True) or by the next writer (``"soon"``, see the module docstring)."""
        if len(data) > BLOCK_BYTES_MAX:
            raise ValueError(f"block of {len(data)} bytes, at most {BLOCK_BYTES_MAX}")
        if cid is None:
            cid = cid_of(data)
        elif not cid_matches(cid, data):
            raise RemoteProtocolError(f"bytes do not match content id {cid[:80]}")
        else:
            cid = canonical_cid(cid)
        self._remember(cid, data)
        if persist == "soon":
            if self.directory is not None:  # even if a writer has it: should that write fail, this one may not
                self._unwritten[cid] = data
        elif persist:
            self.write_files({cid: data})
        return cid

    @property
    def unwritten(self) -> int:
        """How many ``persist="soon"`` blocks wait for a writer."""
        return len(self._unwritten)

    def take_unwritten(self) -> dict[str, bytes]:
        """The blocks waiting for their files, for a writer (they stay readable until ``written``)."""
        batch, self._unwritten = self._unwritten, {}
        self._writing.update(batch)
        return batch

    def written(self, batch: dict[str, bytes]) -> None:
        """A writer is done with ``batch`` (taken by ``take_unwritten``): written, or given up on."""
        for cid in batch:
            self._writing.pop(cid, None)

    def _writer_db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._thread_db, "db", None)
        if db is None:
            db = self._thread_db.db = self._connect()
        return db

    def flush(self) -> None:
        """Write every block still waiting for its file, here and now (at shutdown)."""
        batch = self.take_unwritten()
        try:
            self.write_files(batch)
        finally:
            self.written(batch)

    def write_files(self, blocks: dict[str, bytes]) -> None:
        """Write ``blocks`` (canonical cid -> bytes, already checked) to disk: the small ones as rows in one
        transaction, the others as files. Touches no in-memory state, so it may run in a worker thread (which
        uses a connection of its own); each file appears whole (written aside, then renamed) or not at all."""
        if self.directory is None:
            return
        rows = [(cid, data) for cid, data in blocks.items() if len(data) <= SMALL_BYTES_MAX]
        if rows:
            try:
                db = self._db if threading.get_ident() == self._owner else self._writer_db()
                if db is None:
                    raise sqlite3.ProgrammingError("the block store is closed")
                with db:  # autocommit connection: the BEGIN makes the batch one transaction
                    db.execute("BEGIN")
                    db.executemany("INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", rows)
            except sqlite3.Error as exc:  # a full disk, a locked or broken database: like a failed file write
                raise OSError(f"cannot write {len(rows)} block(s) to {SMALL_DB}: {exc}") from exc
        for cid, data in blocks.items():
            if len(data) <= SMALL_BYTES_MAX:
                continue
            path = self.directory / cid
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)

    def get(self, cid: str) -> bytes | None:
        try:
            cid = canonical_cid(cid)
        except RemoteProtocolError:
            return None
        data = self._mem.get(cid)
        if data is not None:
            self._mem.move_to_end(cid)
            return data
        data = self._unwritten.get(cid)
        if data is None:
            data = self._writing.get(cid)
        if data is not None:
            return data
        if self.directory is None:
            return None
        data = self._read_row(cid)
        if data is None:
            path = self.directory / cid
            try:
                data = path.read_bytes()
            except OSError:
                return None
            if not cid_matches(cid, data):
                path.unlink(missing_ok=True)
                return None
        self._remember(cid, data)
        return data

    def _read_row(self, cid: str) -> bytes | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT data FROM blocks WHERE cid = ?", (cid,)).fetchone()
        except sqlite3.Error:  # a damaged database reads as a missing block, as an unreadable file does
            return None
        if row is None:
            return None
        data = bytes(row[0])
        if not cid_matches(cid, data):
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("DELETE FROM blocks WHERE cid = ?", (cid,))
            return None
        return data

    def has(self, cid: str) -> bool:
        return self.get(cid) is not None

    def _remember(self, cid: str, data: bytes) -> None:
        if cid in self._mem:
            self._mem.move_to_end(cid)
            return
        if len(data) > self.memory_bytes_max:
            return
        self._mem[cid] = data
        self._mem_bytes += len(data)
        while self._mem_bytes > self.memory_bytes_max:
            _, old = self._mem.popitem(last=False)
            self._mem_bytes -= len(old)


class WriteBehind:
    """The block store as the compute behaviour sees it (core/jobs/behaviour.py ``BlockSource``): a block kept
    with ``persist`` is written to disk soon, by the compute driver's writer thread (``persist="soon"``), not on
    the event loop (a file or a row per block would cost it 0.1-0.8 ms each)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def get(self, cid: str) -> bytes | None:
        return self.store.get(cid)

    def has(self, cid: str) -> bool:
        return self.store.has(cid)

    def put(self, data: bytes, *, persist: bool = False, cid: str | None = None) -> str:
        return self.store.put(data, persist="soon" if persist else False, cid=cid)
