"""The block store: content-checked blocks in a memory LRU and on disk, and its deferred ("soon") writes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import PangeaError, RemoteProtocolError
from pangea_p2p.node.blocks import SMALL_BYTES_MAX, SMALL_DB, BlockStore


def test_a_block_to_persist_soon_is_readable_before_during_and_after_its_write(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, memory_bytes_max=16)
    big, empty = b"x" * 10, b""
    cids = [store.put(big, persist="soon"), store.put(empty, persist="soon")]
    store.put(b"y" * 16)  # fills the LRU: `big` is evicted from it, yet not lost
    assert store.unwritten == 2
    assert BlockStore(tmp_path).get(cids[0]) is None  # not on disk yet
    assert [store.get(c) for c in cids] == [big, empty]
    batch = store.take_unwritten()
    assert batch == {cids[0]: big, cids[1]: empty}
    assert store.unwritten == 0
    assert [store.get(c) for c in cids] == [big, empty]  # taken by a writer, not written yet: still readable
    store.write_files(batch)
    store.written(batch)
    assert [store.get(c) for c in cids] == [big, empty]  # read back from disk
    assert [BlockStore(tmp_path).get(c) for c in cids] == [big, empty]  # and by a restarted peer


def test_flush_writes_what_no_writer_took_and_a_block_is_not_queued_twice(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid = store.put(b"abc", persist="soon")
    assert store.put(b"abc", persist="soon") == cid
    assert store.unwritten == 1
    store.flush()
    assert store.unwritten == 0
    assert BlockStore(tmp_path).get(cid) == b"abc"


def test_a_store_without_a_directory_keeps_soon_blocks_in_memory_only() -> None:
    store = BlockStore(None)
    cid = store.put(b"abc", persist="soon")
    assert store.unwritten == 0
    assert store.get(cid) == b"abc"
    store.flush()


def test_a_block_on_disk_that_does_not_match_its_name_is_removed(tmp_path: Path) -> None:
    cid = cid_of(b"good")
    (tmp_path / cid).write_bytes(b"evil")
    store = BlockStore(tmp_path)
    assert store.get(cid) is None
    assert not (tmp_path / cid).exists()
    with pytest.raises(RemoteProtocolError, match="do not match"):
        store.put(b"evil", cid=cid)


def test_small_blocks_are_rows_big_ones_files_and_both_survive_a_restart(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    small, big = b"s" * SMALL_BYTES_MAX, b"b" * (SMALL_BYTES_MAX + 1)
    cids = [store.put(small, persist=True), store.put(big, persist="soon")]
    store.close()  # writes what waits
    assert not (tmp_path / cids[0]).exists()
    assert (tmp_path / cids[1]).read_bytes() == big
    again = BlockStore(tmp_path)
    assert [again.get(c) for c in cids] == [small, big]
    again.close()


def test_a_batch_written_from_a_worker_thread_is_read_back(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    blocks = [f"tiny {i}".encode() for i in range(100)]
    cids = [store.put(b, persist="soon") for b in blocks]
    batch = store.take_unwritten()
    writer = threading.Thread(target=store.write_files, args=(batch,))
    writer.start()
    writer.join(30)
    assert not writer.is_alive()
    store.written(batch)
    again = BlockStore(tmp_path)  # reads the rows, not the first store's memory
    assert [again.get(c) for c in cids] == blocks


def test_a_row_that_does_not_match_its_name_is_removed(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid = cid_of(b"good")
    db = sqlite3.connect(tmp_path / SMALL_DB)
    with db:
        db.execute("INSERT INTO blocks (cid, data) VALUES (?, ?)", (cid, b"evil"))
    assert store.get(cid) is None
    assert db.execute("SELECT count(*) FROM blocks").fetchone() == (0,)
    db.close()


def test_a_write_to_a_broken_database_is_an_oserror_naming_it_and_the_block_stays_readable(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid = store.put(b"kept", persist="soon")
    db = sqlite3.connect(tmp_path / SMALL_DB)
    with db:
        db.execute("DROP TABLE blocks")  # what a damaged database looks like to the writer
    db.close()
    batch = store.take_unwritten()
    with pytest.raises(OSError, match=r"cannot write 1 block\(s\) to small\.sqlite"):
        store.write_files(batch)
    store.written(batch)
    assert store.get(cid) == b"kept"  # still in memory: the node keeps running, nothing it holds is lost
    assert store.get(cid_of(b"never stored")) is None  # and a lookup that reaches the database is a miss, not an error


def test_a_block_database_that_cannot_be_opened_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / SMALL_DB).write_bytes(b"this is not a database" * 100)
    with pytest.raises(PangeaError, match=r"cannot open the block database .*small\.sqlite"):
        BlockStore(tmp_path)
