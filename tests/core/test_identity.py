from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from pangea_p2p.core.identity import Identity, peer_id_from_public_key, public_key_from_peer_id, verify_signature
from pangea_p2p.errors import RemoteProtocolError


@pytest.mark.parametrize("seed", [bytes(32), b"\x01" * 32, bytes(range(32))])
def test_peer_id_matches_libp2p(seed: bytes) -> None:
    kp = create_new_key_pair(seed)
    ident = Identity(seed)
    assert ident.peer_id == str(ID.from_pubkey(kp.public_key))
    assert ident.public_key == kp.public_key.to_bytes()
    assert public_key_from_peer_id(ident.peer_id) == ident.public_key


def test_signature_roundtrip_and_forgery() -> None:
    a, b = Identity(b"a" * 32), Identity(b"b" * 32)
    sig = a.sign(b"msg")
    assert verify_signature(a.peer_id, b"msg", sig)
    assert not verify_signature(a.peer_id, b"msG", sig)
    assert not verify_signature(b.peer_id, b"msg", sig)
    assert not verify_signature(a.peer_id, b"msg", sig[:-1])
    assert not verify_signature("garbage", b"msg", sig)


@pytest.mark.parametrize("bad", ["", "0OIl", "12D3KooW", "Qm" + "1" * 44, "x" * 100])
def test_bad_peer_ids_rejected(bad: str) -> None:
    with pytest.raises(RemoteProtocolError, match="peer id"):
        public_key_from_peer_id(bad)


def test_wrong_key_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        peer_id_from_public_key(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        Identity(b"short")
