"""Content ids: the one function every part of pangea_p2p uses to name bytes.

A content id is a CIDv1 with the ``raw`` codec (0x55) and a sha2-256 multihash, written in multibase
base32-lower (``bafkrei...``): the form IPFS uses for raw blocks, so ``ipfs`` tooling can check ours.

Encoding is done here by hand rather than with ``multiformats.CID`` because building a CID object and
printing it costs ~250 µs against ~2.5 µs for the same bytes (and parsing ~1 µs against ~140 µs) (measured in
../shared/notes/wasmtime-and-crypto.md §5), and a task carries three CIDs. ``tests/core/test_cid.py`` checks
that both give identical strings; ``parse_cid`` hands anything that is not our canonical form to
``multiformats`` so every valid CID spelling is understood.
"""

from __future__ import annotations

import hashlib
import re

from pangea_p2p.errors import RemoteProtocolError

_PREFIX = b"\x01\x55\x12\x20"  # CIDv1, raw codec, sha2-256, 32-byte digest
CID_STR_LEN = 59
DIGEST_BYTES = 32


def cid_of(data: bytes | bytearray | memoryview) -> str:
    """The content id of ``data``."""
    return cid_from_digest(hashlib.sha256(data).digest())


def cid_from_digest(digest: bytes) -> str:
    """The content id whose sha2-256 digest is ``digest`` (32 bytes)."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a sha2-256 digest is 32 bytes, got {len(digest)}")
    # 36 bytes are 288 bits; two zero bits of padding make 290 bits = 29 pairs of base32 characters.
    n = int.from_bytes(_PREFIX + digest, "big") << 2
    pairs = _B32_PAIRS
    return "b" + "".join([pairs[(n >> shift) & 0x3FF] for shift in range(280, -1, -10)])


def parse_cid(cid: str) -> bytes:
    """The sha2-256 digest named by ``cid``; RemoteProtocolError if it is not a sha2-256 CID."""
    digest = _canonical_digest(cid)
    return digest if digest is not None else _parse_cid_slow(cid)


def _canonical_digest(cid: str) -> bytes | None:
    """The digest of ``cid`` if it is spelled in the canonical form (then it is its own canonical form)."""
    if len(cid) == CID_STR_LEN and cid.startswith("bafkrei") and _B32_BODY.fullmatch(cid, 1):
        # base32 (RFC 4648 lower) -> the digits of Python's int(x, 32), converted in C: ~1 µs against
        # ~6 µs for base64.b32decode, which matters because every receipt carries CIDs.
        n = int(cid[1:].translate(_B32_TO_INT_DIGITS), 32)
        if not n & 0b11:  # the two padding bits of a canonical encoding are zero
            raw = (n >> 2).to_bytes(4 + DIGEST_BYTES, "big")
            if raw[:4] == _PREFIX:
                return raw[4:]
    return None


_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32_ALPHABET for b in _B32_ALPHABET]
_B32_TO_INT_DIGITS = str.maketrans(_B32_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_B32_BODY = re.compile("[a-z2-7]{58}")


def _parse_cid_slow(cid: str) -> bytes:
    from multiformats import CID  # imported lazily: costs ~50 ms at import time

    if len(cid) > 200:
        raise RemoteProtocolError(f"content id is {len(cid)} characters, longer than any sha2-256 CID")
    try:
        parsed = CID.decode(cid)
    except Exception as exc:
        raise RemoteProtocolError(f"malformed content id {cid[:80]!r}: {exc}") from None
    if parsed.hashfun.name != "sha2-256":
        raise RemoteProtocolError(f"content id {cid[:80]!r} uses {parsed.hashfun.name}, only sha2-256 is accepted")
    return bytes(parsed.raw_digest)  # multiformats hands out a memoryview


def canonical_cid(cid: str) -> str:
    """The canonical ``bafkrei...`` form of any accepted spelling of a sha2-256 content id.

    Two spellings of one id (base58btc, base32 upper, ...) name the same bytes but compare unequal as
    strings; canonicalise ids where they enter (HTTP API, messages) before using them as keys.
    RemoteProtocolError if ``cid`` is not a sha2-256 CID.
    """
    return cid if _canonical_digest(cid) is not None else cid_from_digest(_parse_cid_slow(cid))


def cid_matches(cid: str, data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` is what ``cid`` names. Malformed CIDs do not match anything."""
    try:
        return parse_cid(cid) == hashlib.sha256(data).digest()
    except RemoteProtocolError:
        return False
