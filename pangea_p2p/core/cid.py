"""Content ids: the one function every part of pangea_p2p uses to name bytes.

A content id is a CIDv1 with the ``raw`` codec (0x55) and a sha2-256 multihash, written in multibase
base32-lower (``bafkrei...``): the form IPFS uses for raw blocks, so ``ipfs`` tooling can check ours.

Encoding is done here with hashlib + base64 rather than ``multiformats.CID`` because building a CID object
and printing it costs ~250 µs against ~4 µs for the same bytes (measured in
../shared/notes/wasmtime-and-crypto.md §5), and a task carries three CIDs. ``tests/core/test_cid.py`` checks
that both give identical strings; ``parse_cid`` hands anything that is not our canonical form to
``multiformats`` so every valid CID spelling is understood.
"""

from __future__ import annotations

import base64
import hashlib

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
    return "b" + base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")


def parse_cid(cid: str) -> bytes:
    """The sha2-256 digest named by ``cid``; RemoteProtocolError if it is not a sha2-256 CID."""
    if len(cid) == CID_STR_LEN and cid.startswith("bafkrei"):
        try:
            raw = base64.b32decode(cid[1:].upper() + "=" * (-(len(cid) - 1) % 8))
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed content id {cid[:80]!r}: {exc}") from None
        if raw[:4] == _PREFIX and len(raw) == 4 + DIGEST_BYTES:
            return raw[4:]
    return _parse_cid_slow(cid)


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
    digest: bytes = parsed.raw_digest
    return digest


def cid_matches(cid: str, data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` is what ``cid`` names. Malformed CIDs do not match anything."""
    try:
        return parse_cid(cid) == hashlib.sha256(data).digest()
    except RemoteProtocolError:
        return False
