"""The decoders of the built-in guests' outputs (pangea_p2p/sdk/decode.py), on outputs the real guests produce in
this process's sandbox: word counts against a plain Python count, digests against hashlib, the matrix against the
guest-order product; malformed outputs are one error naming the chunk."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from collections import Counter

import numpy as np
import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import ConfigError, PangeaError
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox import SandboxLimits
from pangea_p2p.sandbox.local import local_executor
from pangea_p2p.sdk import splits
from pangea_p2p.sdk.decode import DECODERS, decoder_for, grid_width, parse_shape
from pangea_p2p.sdk.matmul import block_inputs
from tests.sdk.test_matmul import in_guest_order, operands

LIMITS = SandboxLimits(fuel_max=10**11, memory_bytes_max=256 << 20, wall_time_s=60.0, output_bytes_max=64 << 20)
TEXT = "The quick brown fox\njumps over the lazy dog; the END.\nfox 42 Ünïcode ünïcode\n".encode()


def run_guest(name: str, chunks: list[bytes]) -> list[bytes]:
    module = load_guest(name)
    with local_executor() as executor:
        return executor.run_chunks(cid_of(module), module, chunks, LIMITS).unwrap()


def test_each_decoder_is_found_by_its_guests_module_id() -> None:
    for name, decoder in DECODERS.items():
        assert decoder_for(cid_of(load_guest(name))) is decoder
    assert decoder_for(cid_of(load_guest("echo"))) is None
    assert decoder_for("bafk-not-a-module") is None


def test_wordcount_tables_are_summed_over_chunks() -> None:
    outputs = run_guest("wordcount_map", splits.lines(TEXT, 1))
    expected = Counter(re.findall(r"[a-z0-9\x80-\uffff]+", TEXT.lower().decode()))  # ASCII letters lower-cased
    decoder = DECODERS["wordcount_map"]
    counts = decoder.to_json(outputs)
    assert counts == dict(expected)
    assert list(counts)[:2] == ["the", "fox"]  # most frequent first, then by word
    assert json.loads(decoder.render(outputs, "json")) == counts
    tsv = decoder.render(outputs, "tsv").decode().splitlines()
    assert tsv[0] == "word\tcount"
    assert dict(line.split("\t") for line in tsv[1:]) == {w: str(c) for w, c in expected.items()}
    # the reduce guest's table reads the same
    assert DECODERS["wordcount_reduce"].to_json(run_guest("wordcount_reduce", [b"".join(outputs)])) == counts


def test_a_word_that_is_not_utf8_keeps_its_bytes_as_escapes() -> None:
    (table,) = run_guest("wordcount_map", [b"caf\xe9 caf\xe9 ok"])
    assert DECODERS["wordcount_map"].to_json([table]) == {"caf\\xe9": 2, "ok": 1}


@pytest.mark.parametrize("bad", [b"", b"\x01\x00\x00\x00", b"\x01\x00\x00\x00\x09\x00\x00\x00ab",
                                 struct.pack("<I", 0) + b"extra"])
def test_a_malformed_table_names_its_chunk(bad: bytes) -> None:
    good = run_guest("wordcount_map", [b"a b"])
    with pytest.raises(PangeaError, match=r"^the output of chunk 1 is not a word-count table"):
        DECODERS["wordcount_map"].to_json([*good, bad])


def test_sha256_digests_are_hex_in_chunk_order() -> None:
    chunks = [b"", b"abc", TEXT]
    outputs = run_guest("sha256", chunks)
    decoder = DECODERS["sha256"]
    assert decoder.render(outputs, "hex").decode().splitlines() == [hashlib.sha256(c).hexdigest() for c in chunks]
    assert decoder.to_json(outputs) == [hashlib.sha256(c).hexdigest() for c in chunks]
    with pytest.raises(PangeaError, match=r"^the output of chunk 1 is 31 bytes, not a 32-byte SHA-256 digest"):
        decoder.to_json([outputs[0], outputs[1][:31]])
    with pytest.raises(ConfigError, match="'npy': sha256 results come as hex, json or raw"):
        decoder.render(outputs, "npy")


@pytest.mark.parametrize(("m", "k", "n", "block"), [(70, 20, 90, 32), (64, 8, 40, 32), (70, 8, 64, 32),
                                                    (10, 5, 7, 32)])
def test_a_matrix_is_read_from_its_blocks_edges(m: int, k: int, n: int, block: int) -> None:
    a, b = operands(m, k, n)
    outputs = run_guest("matmul_block", block_inputs(a, b, block))
    decoder = DECODERS["matmul_block"]
    c = np.load(io.BytesIO(decoder.render(outputs, "npy")), allow_pickle=False)
    assert np.array_equal(c, in_guest_order(a, b))
    doc = decoder.to_json(outputs)
    assert doc["shape"] == [m, n]
    assert np.array_equal(np.array(doc["rows"]), c)


def test_a_matrix_of_equal_blocks_needs_its_shape() -> None:
    a, b = operands(64, 8, 128)
    outputs = run_guest("matmul_block", block_inputs(a, b, 32))  # 2 x 4 blocks of 32x32
    decoder = DECODERS["matmul_block"]
    with pytest.raises(ConfigError, match="the 8 blocks of 32x32 could make matrices of several shapes"):
        decoder.render(outputs, "npy")
    c = np.load(io.BytesIO(decoder.render(outputs, "npy", parse_shape("64x128"))))
    assert np.array_equal(c, in_guest_order(a, b))
    assert decoder.to_json(outputs, (128, 64))["shape"] == [128, 64]  # the same blocks, 4 rows of 2: as told
    with pytest.raises(ConfigError, match="64x100: the blocks make a 64x128 matrix"):
        decoder.render(outputs, "npy", (64, 100))
    with pytest.raises(PangeaError, match="8 blocks do not make rows of 3 blocks"):
        decoder.render(outputs, "npy", (64, 96))


def test_grid_and_shape_errors() -> None:
    assert grid_width([(32, 32), (32, 8), (4, 32), (4, 8)], None) == 2
    assert grid_width([(32, 32), (32, 32), (4, 32), (4, 32)], None) == 2
    assert grid_width([(5, 7)], None) == 1
    with pytest.raises(PangeaError, match="the output of chunk 0 is not a matrix block"):
        DECODERS["matmul_block"].render([b"\x01\x00\x00\x00\x01\x00\x00\x00" + bytes(8)], "npy")
    for bad in ("64", "x64", "0x5", "axb", "64x"):
        with pytest.raises(ConfigError, match="use ROWSxCOLS"):
            parse_shape(bad)
