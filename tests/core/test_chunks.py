from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pangea_p2p.core.chunks import chunk_count, frame_chunks, unframe_chunks
from pangea_p2p.errors import RemoteProtocolError


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_roundtrip(chunks: list[bytes]) -> None:
    data = frame_chunks(chunks)
    assert unframe_chunks(data) == chunks
    assert chunk_count(data) == len(chunks)


def test_known_layout() -> None:
    assert frame_chunks([b"ab", b""]) == b"\x02\x00\x00\x00" + b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00"


def test_framing_is_injective() -> None:
    assert frame_chunks([b"ab", b"c"]) != frame_chunks([b"a", b"bc"])
    assert frame_chunks([b""]) != frame_chunks([])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00", "shorter than its 4-byte count"),
        (b"\xff\xff\xff\xff", "at most"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00", "announces 2 chunks but has"),
        (b"\x01\x00\x00\x00\x05\x00\x00\x00ab", "announces 5 bytes"),
        (frame_chunks([b"x"]) + b"!", "bytes after the last chunk"),
    ],
)
def test_malformed_lists_are_remote_errors(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        unframe_chunks(data)


def test_chunks_max_enforced() -> None:
    with pytest.raises(RemoteProtocolError, match="at most 2"):
        unframe_chunks(frame_chunks([b"a", b"b", b"c"]), chunks_max=2)
