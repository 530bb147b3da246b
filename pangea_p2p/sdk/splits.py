"""Common split functions for ``@job.split``: cut bytes into chunks by size, by count or on line boundaries."""

from __future__ import annotations

from pangea_p2p.errors import ConfigError


def fixed_size(data: bytes, chunk_bytes: int) -> list[bytes]:
    """Consecutive chunks of ``chunk_bytes`` (the last may be shorter); one empty chunk for empty data."""
    if chunk_bytes < 1:
        raise ConfigError("chunk_bytes", f"must be >= 1, got {chunk_bytes}")
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]


def by_count(data: bytes, count: int) -> list[bytes]:
    """``count`` near-equal consecutive chunks (fewer when the data is shorter than ``count`` bytes)."""
    if count < 1:
        raise ConfigError("count", f"must be >= 1, got {count}")
    count = max(1, min(count, len(data)))
    base, extra = divmod(len(data), count)
    out, pos = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append(data[pos : pos + size])
        pos += size
    return out


def lines(data: bytes, lines_per_chunk: int) -> list[bytes]:
    """Chunks of ``lines_per_chunk`` whole lines each (a word is never cut in two)."""
    if lines_per_chunk < 1:
        raise ConfigError("lines_per_chunk", f"must be >= 1, got {lines_per_chunk}")
    all_lines = data.splitlines(keepends=True)
    return [b"".join(all_lines[i : i + lines_per_chunk]) for i in range(0, len(all_lines), lines_per_chunk)] or [b""]


def target_size(data: bytes, chunk_bytes: int) -> list[bytes]:
    """Chunks of about ``chunk_bytes``, cut after a newline when there is one in the last quarter."""
    if chunk_bytes < 1:
        raise ConfigError("chunk_bytes", f"must be >= 1, got {chunk_bytes}")
    out, pos = [], 0
    while pos < len(data):
        end = min(len(data), pos + chunk_bytes)
        if end < len(data):
            cut = data.rfind(b"\n", pos + chunk_bytes * 3 // 4, end)
            if cut != -1:
                end = cut + 1
        out.append(data[pos:end])
        pos = end
    return out or [b""]
