"""Chunk lists: how a task's input and output are framed.

A task runs one module over a list of input chunks (one guest ``run`` per chunk) and produces one output
chunk per input chunk. Both lists travel and are content-addressed as one byte string:

    u32 little-endian count, then for each chunk: u32 little-endian length, then the bytes

The framing is unambiguous (no two lists frame to the same bytes), so the content id of a framed list names
the list. Receipts commit to the framed output (its content id) and to the Merkle root over the output
chunks (pangea_p2p.core.verify.merkle), which is what spot checks open. Normative text: protocols/compute.md.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pangea_p2p.errors import LocalProtocolError, RemoteProtocolError

_U32 = struct.Struct("<I")
CHUNKS_MAX = 1 << 20
CHUNK_BYTES_MAX = (1 << 32) - 1


def frame_chunks(chunks: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """The framed form of ``chunks`` (LocalProtocolError if there are too many, or one is too large)."""
    if len(chunks) > CHUNKS_MAX:
        raise LocalProtocolError(f"{len(chunks)} chunks, at most {CHUNKS_MAX}")
    parts: list[bytes | bytearray | memoryview] = [_U32.pack(len(chunks))]
    for chunk in chunks:
        size = memoryview(chunk).nbytes
        if size > CHUNK_BYTES_MAX:
            raise LocalProtocolError(f"a chunk of {size} bytes, at most {CHUNK_BYTES_MAX}")
        parts.append(_U32.pack(size))
        parts.append(chunk)
    return b"".join(parts)


def unframe_chunks(data: bytes | bytearray | memoryview, chunks_max: int = CHUNKS_MAX) -> list[bytes]:
    """The chunks framed in ``data``; RemoteProtocolError if it is not exactly one well-formed list."""
    view = memoryview(data).cast("B")
    if len(view) < 4:
        raise RemoteProtocolError(f"chunk list of {len(view)} bytes is shorter than its 4-byte count")
    (count,) = _U32.unpack_from(view, 0)
    if count > chunks_max:
        raise RemoteProtocolError(f"chunk list announces {count} chunks, at most {chunks_max}")
    if count * 4 > len(view) - 4:
        raise RemoteProtocolError(f"chunk list announces {count} chunks but has {len(view)} bytes")
    out: list[bytes] = []
    pos = 4
    for i in range(count):
        if pos + 4 > len(view):
            raise RemoteProtocolError(f"chunk list ends inside the length of chunk {i}")
        (size,) = _U32.unpack_from(view, pos)
        pos += 4
        if pos + size > len(view):
            raise RemoteProtocolError(f"chunk {i} announces {size} bytes, only {len(view) - pos} remain")
        out.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(view):
        raise RemoteProtocolError(f"{len(view) - pos} bytes after the last chunk of a chunk list")
    return out


def chunk_count(data: bytes | bytearray | memoryview) -> int:
    """The count field of a framed list (not validated: use ``unframe_chunks`` for untrusted data)."""
    if len(data) < 4:
        raise RemoteProtocolError("chunk list shorter than its count")
    (count,) = _U32.unpack_from(memoryview(data).cast("B"), 0)
    return int(count)
