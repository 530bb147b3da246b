"""The split helpers for ``@job.split``: chunk sizes, edge cases, and that no byte is lost or moved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pangea_p2p.errors import ConfigError
from pangea_p2p.sdk import splits

SPLITTERS = [splits.fixed_size, splits.by_count, splits.lines, splits.target_size]


# --- fixed_size -------------------------------------------------------------------------------------------


def test_fixed_size_even_and_uneven_last_chunk() -> None:
    assert splits.fixed_size(b"abcdefgh", 4) == [b"abcd", b"efgh"]
    assert splits.fixed_size(b"abcdefghij", 4) == [b"abcd", b"efgh", b"ij"]


def test_fixed_size_chunk_larger_than_input_is_one_chunk() -> None:
    assert splits.fixed_size(b"abc", 4096) == [b"abc"]
    assert splits.fixed_size(b"abc", 3) == [b"abc"]


def test_fixed_size_empty_input_is_one_empty_chunk() -> None:
    # a job always has at least one chunk: the guest still runs once, on nothing
    assert splits.fixed_size(b"", 10) == [b""]


# --- by_count ---------------------------------------------------------------------------------------------


def test_by_count_near_equal_sizes_larger_first() -> None:
    chunks = splits.by_count(bytes(range(10)), 3)
    assert [len(c) for c in chunks] == [4, 3, 3]
    assert b"".join(chunks) == bytes(range(10))


def test_by_count_one_chunk_and_more_chunks_than_bytes() -> None:
    assert splits.by_count(b"hello", 1) == [b"hello"]
    assert splits.by_count(b"abc", 10) == [b"a", b"b", b"c"]  # never an empty chunk when there is data


def test_by_count_empty_input() -> None:
    assert splits.by_count(b"", 4) == [b""]


# --- lines ------------------------------------------------------------------------------------------------


def test_lines_keeps_whole_lines_and_uneven_last_chunk() -> None:
    data = b"one\ntwo\r\nthree\nfour\nfive"
    assert splits.lines(data, 2) == [b"one\ntwo\r\n", b"three\nfour\n", b"five"]
    assert splits.lines(data, 100) == [data]


def test_lines_empty_input() -> None:
    assert splits.lines(b"", 3) == [b""]


# --- target_size ------------------------------------------------------------------------------------------


def test_target_size_cuts_after_a_newline_in_the_last_quarter() -> None:
    # chunk_bytes 8: the last quarter of the first window is bytes 6..7; the newline at 6 is used
    data = b"aaaaaa\nbbbbbbbbbb"
    assert splits.target_size(data, 8) == [b"aaaaaa\n", b"bbbbbbbb", b"bb"]


def test_target_size_ignores_a_newline_before_the_last_quarter() -> None:
    data = b"a\nbbbbbbbbbbbbbb"
    assert splits.target_size(data, 8) == [b"a\nbbbbbb", b"bbbbbbbb"]


def test_target_size_edge_cases() -> None:
    assert splits.target_size(b"", 8) == [b""]
    assert splits.target_size(b"short", 1000) == [b"short"]


# --- all splitters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "key"),
    [(splits.fixed_size, "chunk_bytes"), (splits.by_count, "count"), (splits.lines, "lines_per_chunk"),
     (splits.target_size, "chunk_bytes")],
)
@pytest.mark.parametrize("size", [0, -1])
def test_bad_sizes_name_the_argument(fn: object, key: str, size: int) -> None:
    with pytest.raises(ConfigError) as info:
        fn(b"data", size)  # type: ignore[operator]
    assert info.value.key == key
    assert f"got {size}" in str(info.value)


@given(data=st.binary(max_size=300) | st.text("ab\n", max_size=300).map(str.encode), n=st.integers(1, 40))
def test_every_splitter_loses_and_reorders_nothing(data: bytes, n: int) -> None:
    for fn in SPLITTERS:
        chunks = fn(data, n)
        assert b"".join(chunks) == data, fn.__name__
        assert len(chunks) >= 1
        assert all(chunks) or chunks == [b""], f"{fn.__name__} made an empty chunk"


@given(data=st.binary(min_size=1, max_size=300), n=st.integers(1, 40))
def test_size_bounds(data: bytes, n: int) -> None:
    fixed = splits.fixed_size(data, n)
    assert all(len(c) == n for c in fixed[:-1])
    assert 1 <= len(fixed[-1]) <= n
    counted = splits.by_count(data, n)
    assert len(counted) == min(n, len(data))
    assert max(map(len, counted)) - min(map(len, counted)) <= 1
    assert all(len(c) <= n for c in splits.target_size(data, n))
