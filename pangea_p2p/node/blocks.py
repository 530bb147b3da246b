"""The peer's block store: content-addressed bytes (modules, chunks, task inputs and outputs).

Blocks live in memory (an LRU bounded in bytes) and, when ``persist`` is asked, also on disk under
DATA_DIR/blocks/<cid> so a restarted peer still has its jobs' inputs and outputs. Creating a file costs
0.1-0.8 ms on these machines, which an event loop would pay once per task: ``persist="soon"`` keeps the
block in memory (outside the LRU, so it cannot be evicted) until a writer takes it with ``take_unwritten``,
writes the batch in a thread (``write_files``) and calls ``written``. Every block is checked
against its content id on the way in; a file on disk whose bytes do not match its name is ignored (and
removed). The store also serves /pangea/block/1.0.0 to other peers.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from pangea_p2p.core.cid import canonical_cid, cid_matches, cid_of
from pangea_p2p.errors import RemoteProtocolError

MEMORY_BYTES_MAX = 512 << 20
BLOCK_BYTES_MAX = 1 << 30


class BlockStore:
    def __init__(self, directory: Path | None, memory_bytes_max: int = MEMORY_BYTES_MAX) -> None:
        self.directory = directory
        self.memory_bytes_max = memory_bytes_max
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._mem_bytes = 0
        self._unwritten: dict[str, bytes] = {}  # persist="soon" blocks no writer took yet
        self._writing: dict[str, bytes] = {}  # taken by a writer, their files not known to exist yet
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

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
            if self.directory is not None and cid not in self._writing:
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

    def flush(self) -> None:
        """Write every block still waiting for its file, here and now (at shutdown)."""
        batch = self.take_unwritten()
        try:
            self.write_files(batch)
        finally:
            self.written(batch)

    def write_files(self, blocks: dict[str, bytes]) -> None:
        """Write ``blocks`` (canonical cid -> bytes, already checked) to disk. Touches no in-memory state, so
        it may run in a worker thread; each file appears whole (written aside, then renamed) or not at all."""
        if self.directory is None:
            return
        for cid, data in blocks.items():
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
