"""Peer identities: ed25519 keys and the libp2p peer ids derived from them.

A peer id is what libp2p calls it for an ed25519 key: the base58btc string of an identity multihash over the
protobuf ``PublicKey{Type: Ed25519, Data: key}``, so it starts with ``12D3KooW``. It is computed here rather
than with ``libp2p.peer.id.ID`` so that the core (and the simulator) need not import libp2p;
``tests/core/test_identity.py`` checks both agree. Because the public key is inside the id, anyone can check a
signature against a peer id alone — this is what makes adverts and receipts verifiable offline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import base58
import nacl.exceptions
import nacl.signing

from pangea_p2p.errors import RemoteProtocolError

_ED25519_PUBKEY_PROTO = b"\x08\x01\x12\x20"  # PublicKey{Type=Ed25519(1), Data=<32 bytes>}
_IDENTITY_MULTIHASH = b"\x00\x24"  # identity hash, 36-byte digest
PEER_ID_STR_LEN_MAX = 64
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of an ed25519 public key (32 raw bytes)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an ed25519 public key is 32 bytes, got {len(public_key)}")
    return base58.b58encode(_IDENTITY_MULTIHASH + _ED25519_PUBKEY_PROTO + public_key).decode("ascii")


@functools.lru_cache(maxsize=65536)
def public_key_from_peer_id(peer_id: str) -> bytes:
    """The ed25519 public key inside ``peer_id``; RemoteProtocolError if it is not an ed25519 peer id."""
    if not peer_id or len(peer_id) > PEER_ID_STR_LEN_MAX:
        raise RemoteProtocolError(f"peer id {peer_id[:80]!r} is not an ed25519 peer id (bad length)")
    try:
        raw = base58.b58decode(peer_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise RemoteProtocolError(f"peer id {peer_id[:80]!r} is not valid base58") from None
    prefix = _IDENTITY_MULTIHASH + _ED25519_PUBKEY_PROTO
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise RemoteProtocolError(f"peer id {peer_id[:80]!r} is not an ed25519 peer id")
    return raw[len(prefix):]


@functools.lru_cache(maxsize=65536)
def _verify_key(peer_id: str) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public_key_from_peer_id(peer_id))


def verify_signature(peer_id: str, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``peer_id``'s ed25519 signature of ``message``. Never raises."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _verify_key(peer_id).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, RemoteProtocolError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A peer's own key pair. Build it from a 32-byte seed (kept in the peer's key file)."""

    seed: bytes = field(repr=False)
    signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    peer_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.seed) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an ed25519 seed is 32 bytes, got {len(self.seed)}")
        key = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "signing_key", key)
        object.__setattr__(self, "peer_id", peer_id_from_public_key(bytes(key.verify_key)))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature
