from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID, multihash

from pangea_p2p.core.cid import canonical_cid, cid_from_digest, cid_matches, cid_of, parse_cid
from pangea_p2p.errors import RemoteProtocolError


def test_known_value() -> None:
    # the CID IPFS gives to the raw block "hello world"
    assert cid_of(b"hello world") == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


@given(st.binary(max_size=300))
def test_same_string_as_multiformats(data: bytes) -> None:
    expected = str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256")))
    assert cid_of(data) == expected
    assert parse_cid(expected) == hashlib.sha256(data).digest()


def test_other_spellings_of_a_sha256_cid_parse() -> None:
    data = b"abc"
    b58 = str(CID("base58btc", 1, "raw", multihash.digest(data, "sha2-256")))
    assert parse_cid(b58) == hashlib.sha256(data).digest()


@given(st.binary(max_size=100))
def test_every_spelling_has_one_canonical_form(data: bytes) -> None:
    canonical = cid_of(data)
    digest = multihash.digest(data, "sha2-256")
    spellings = [str(CID(base, 1, "raw", digest)) for base in ("base32", "base58btc", "base32upper", "base16")]
    assert len(set(spellings)) == 4  # four strings for one id: unequal as dictionary keys ...
    assert {canonical_cid(s) for s in spellings} == {canonical}  # ... one once canonicalised
    assert canonical_cid(canonical) == canonical


@pytest.mark.parametrize("bad", ["", "not-a-cid", str(CID("base32", 1, "raw", multihash.digest(b"x", "sha2-512")))])
def test_canonical_cid_of_something_else_is_a_remote_error(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        canonical_cid(bad)


def test_matches_detects_tampering() -> None:
    c = cid_of(b"result")
    assert cid_matches(c, b"result")
    assert not cid_matches(c, b"resulT")
    assert not cid_matches("not-a-cid", b"result")


@pytest.mark.parametrize("bad", ["", "bafkrei", "x" * 59, "bafkrei" + "!" * 52, "z" * 500])
def test_malformed_cids_are_rejected_with_a_clear_error(bad: str) -> None:
    with pytest.raises(RemoteProtocolError, match="content id"):
        parse_cid(bad)


def test_non_sha256_cid_rejected() -> None:
    blake = str(CID("base32", 1, "raw", multihash.digest(b"x", "blake2b-256")))
    with pytest.raises(RemoteProtocolError, match="only sha2-256"):
        parse_cid(blake)


def test_digest_length_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        cid_from_digest(b"short")


@given(st.binary(min_size=32, max_size=32))
def test_digest_round_trip(digest: bytes) -> None:
    cid = cid_from_digest(digest)
    assert cid == str(CID("base32", 1, "raw", ("sha2-256", digest)))
    assert parse_cid(cid) == digest
    assert type(parse_cid(cid)) is bytes


def test_slow_path_returns_bytes() -> None:
    upper = cid_of(b"abc").upper()  # multibase 'B': base32 upper, handled by multiformats
    assert type(parse_cid(upper)) is bytes
    assert parse_cid(upper) == hashlib.sha256(b"abc").digest()


@pytest.mark.parametrize("position", [7, 20, 58])
@pytest.mark.parametrize("char", ["0", "1", "8", "9", "_", " ", "+"])
def test_characters_outside_base32_are_rejected(position: int, char: str) -> None:
    good = cid_of(b"payload")
    bad = good[:position] + char + good[position + 1 :]
    with pytest.raises(RemoteProtocolError, match="content id"):
        parse_cid(bad)


def test_nonzero_padding_bits_are_rejected() -> None:
    good = cid_of(b"payload")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    bad = good[:-1] + alphabet[alphabet.index(good[-1]) | 1]
    with pytest.raises(RemoteProtocolError, match="content id"):
        parse_cid(bad)
