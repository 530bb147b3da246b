"""protocols/receipt.md's worked examples are what the code produces, and decode back to what they say."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import verify_receipt
from pangea_p2p.core.verify.format import REPLAY_TAG
from pangea_p2p.core.verify.receipts import ReceiptTree, decode_receipt
from pangea_p2p.core.verify.tree import verify_tree

from . import vectors

SPEC = Path(__file__).resolve().parents[3] / "protocols" / "receipt.md"


def documented() -> dict[str, str]:
    blocks = re.findall(r"```text\nvector ([\w-]+)\n(.*?)```", SPEC.read_text(), flags=re.S)
    return {name: "".join(body.split()) for name, body in blocks}


def test_the_document_has_every_vector() -> None:
    assert set(documented()) == set(vectors.all_vectors())


@pytest.mark.parametrize("name", sorted(vectors.all_vectors()))
def test_vector_matches_the_code(name: str) -> None:
    assert documented()[name] == vectors.all_vectors()[name]


def test_documented_execution_receipt_decodes_and_verifies() -> None:
    wire = bytes.fromhex(documented()["execution-receipt"])
    output = bytes.fromhex(documented()["framed-output"])
    assert output == frame_chunks([b"out", b"put"])
    r = decode_receipt(wire)
    assert r.worker == documented()["worker-peer-id"]
    assert r.binding.issuer == documented()["issuer-peer-id"]
    assert r.output_cid == cid_of(output)
    assert r.binding.module_cid == cid_of(b"module")
    assert r.binding.input_cid == cid_of(frame_chunks([b"in", b"put"]))
    assert r.binding.chunk_count == 2
    assert r.fuel_used == 12345
    assert r.output_chunks == 2
    assert r.nonce == bytes(range(16))
    assert r.output_root.hex() == documented()["merkle-root-out-put"]
    assert r.replay_key.hex() == documented()["replay-key"]
    ids = wire[235:-64]  # §3: the five ids, between the fixed fields and the signature
    assert r.replay_key == hashlib.sha256(REPLAY_TAG + ids).digest()
    verified = verify_receipt(r, r.binding, vectors.ISSUED_AT_S, VerifyConfig(), worker=r.worker, output=output)
    assert verified.output_digest == hashlib.sha256(output).digest()


def test_documented_tree_verifies() -> None:
    tree = ReceiptTree.decode(bytes.fromhex(documented()["receipt-tree"]), VerifyConfig())
    result = verify_tree(tree, tree.receipt.binding, vectors.ISSUED_AT_S, VerifyConfig(),
                         worker=vectors.DELEGATOR.peer_id, output=frame_chunks([b"A", b"B"]))
    assert result.fuel_used == 201
    assert [r.output_cid for r in result.leaves] == [cid_of(frame_chunks([b"A"])), cid_of(frame_chunks([b"B"]))]
    assert [r.binding.chunk_count for r in result.leaves] == [1, 1]
    assert result.output_digest == hashlib.sha256(frame_chunks([b"A", b"B"])).digest()
    assert tree.receipt.wire.hex() == documented()["delegation-receipt"]
