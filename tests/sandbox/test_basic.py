"""Basic execution, input data, several exports, memory operations, return values; the real guests."""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter

import numpy as np
import pytest
from wasmtime import Module

from pangea_p2p.errors import FailureKind
from pangea_p2p.guests import load_guest
from tests.sandbox.conftest import run_guest, u32


def test_basic_execution_returns_the_output_and_a_report(executor):
    result = run_guest(executor, "echo", b"hello, sandbox")
    assert result.ok
    assert result.unwrap() == b"hello, sandbox"
    assert result.report.status is None
    assert result.report.fuel_used > 0
    assert result.report.peak_memory_bytes >= 5 * 65536
    assert result.report.wall_time_s > 0
    assert result.report.cpu_time_s > 0


def test_empty_input(executor):
    assert run_guest(executor, "echo", b"").unwrap() == b""


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 1000, 100_003])
def test_input_data_reaches_the_guest(executor, length):
    data = bytes((i * 7 + length) % 256 for i in range(length))
    assert run_guest(executor, "sha256", data).unwrap() == hashlib.sha256(data).digest()


def test_module_may_export_more_than_the_abi(executor):
    exports = [e.name for e in Module(executor.engine, load_guest("echo")).exports]
    assert {"memory", "alloc", "run", "add", "answer"} <= set(exports)
    assert run_guest(executor, "echo", b"x").unwrap() == b"x"


def test_memory_grow_inside_the_guest(executor):
    old, new = struct.unpack("<II", run_guest(executor, "probe", b"G" + u32(3)).unwrap())
    assert (old, new) == (5, 8)
    result = run_guest(executor, "probe", b"G" + u32(3))
    assert result.report.peak_memory_bytes == 8 * 65536


def test_memory_grow_past_the_limit_returns_minus_one(executor):
    old, new = struct.unpack("<II", run_guest(executor, "probe", b"G" + u32(100), memory_bytes_max=1 << 20).unwrap())
    assert old == 0xFFFFFFFF
    assert new == 5


def test_return_values_are_exact_bytes(executor):
    out = run_guest(executor, "probe", b"F" + u32(1000)).unwrap()
    acc = 1
    for i in range(1000):
        acc = (acc * 6364136223846793005 + i) % 2**64
    assert out == struct.pack("<Q", acc)


def _matmul_input(a: np.ndarray, b: np.ndarray) -> bytes:
    m, k = a.shape
    _, n = b.shape
    return struct.pack("<IIII", m, k, n, 0) + a.astype("<f8").tobytes() + b.astype("<f8").tobytes()


def _reference_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The documented summation order, in plain Python floats: +0.0, then p = 0..k-1, no FMA."""
    m, k = a.shape
    n = b.shape[1]
    al, bl = a.tolist(), b.tolist()
    out = [[0.0] * n for _ in range(m)]
    for i in range(m):
        for j in range(n):
            c = 0.0
            for p in range(k):
                c = c + al[i][p] * bl[p][j]
            out[i][j] = c
    return np.array(out)


@pytest.mark.parametrize(("m", "k", "n"), [(8, 64, 8), (7, 33, 5), (1, 1, 1), (6, 512, 3)])
def test_matmul_block_matches_documented_order_bit_for_bit_and_numpy_closely(executor, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    out = run_guest(executor, "matmul_block", _matmul_input(a, b)).unwrap()
    assert struct.unpack("<IIII", out[:16]) == (m, n, 0, 0)
    c = np.frombuffer(out[16:], "<f8").reshape(m, n)
    assert c.tobytes() == _reference_block(a, b).tobytes()
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)


def test_matmul_block_refuses_a_bad_header(executor):
    bad = struct.pack("<IIII", 2, 2, 2, 0) + b"\x00" * 8  # far too short
    result = run_guest(executor, "matmul_block", bad)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_INPUT


def _parse_table(data: bytes) -> dict[bytes, int]:
    (entries,) = struct.unpack_from("<I", data)
    pos, table, words = 4, {}, []
    for _ in range(entries):
        (wl,) = struct.unpack_from("<I", data, pos)
        word = data[pos + 4: pos + 4 + wl]
        (count,) = struct.unpack_from("<Q", data, pos + 4 + wl)
        pos += 12 + wl
        table[word] = count
        words.append(word)
    assert pos == len(data)
    assert words == sorted(words), "table must be sorted by word bytes"
    return table


def _python_wordcount(text: bytes) -> Counter[bytes]:
    return Counter(w.lower() for w in re.findall(rb"[A-Za-z0-9\x80-\xff]+", text))


def test_wordcount_map_and_reduce_match_python(executor):
    parts = [b"The cat and the hat. THE END!", "naïve café, Café 42 42".encode(), b"", b"one-two one"]
    tables = [run_guest(executor, "wordcount_map", part).unwrap() for part in parts]
    for part, table in zip(parts, tables, strict=True):
        assert _parse_table(table) == dict(_python_wordcount(part))
    merged = _parse_table(run_guest(executor, "wordcount_reduce", b"".join(tables)).unwrap())
    assert merged == dict(_python_wordcount(b" ".join(parts)))


def test_wordcount_reduce_refuses_a_malformed_table(executor):
    result = run_guest(executor, "wordcount_reduce", struct.pack("<II", 1, 1000) + b"ab")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_INPUT


def test_bench_guest_is_deterministic(executor):
    first = run_guest(executor, "bench", u32(10_000))
    second = run_guest(executor, "bench", u32(10_000))
    assert first.unwrap() == second.unwrap()
    assert struct.unpack("<Q", first.unwrap()[8:])[0] == 10_000
    assert first.report.fuel_used == second.report.fuel_used
