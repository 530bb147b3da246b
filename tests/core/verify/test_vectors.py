"""protocols/receipt.md's worked examples are what the code produces, and decode back to what they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.chain import ReceiptTree, verify_tree
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.receipts import decode_receipt, verify_receipt

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
    r = decode_receipt(wire)
    assert r.worker == documented()["worker-peer-id"]
    assert r.binding.issuer == documented()["issuer-peer-id"]
    assert r.output_cid == cid_of(b"output")
    assert r.binding.module_cid == cid_of(b"module")
    assert r.fuel_used == 12345
    assert r.output_chunks == 2
    assert r.nonce == bytes(range(16))
    assert r.output_root.hex() == documented()["merkle-root-out-put"]
    verify_receipt(r, r.binding, vectors.ISSUED_AT_S, VerifyConfig())


def test_documented_tree_verifies() -> None:
    tree = ReceiptTree.decode(bytes.fromhex(documented()["receipt-tree"]), VerifyConfig())
    result = verify_tree(tree, tree.receipt.binding, vectors.ISSUED_AT_S, VerifyConfig())
    assert result.fuel_used == 201
    assert [r.output_cid for r in result.leaves] == [cid_of(b"A"), cid_of(b"B")]
    assert tree.receipt.wire.hex() == documented()["delegation-receipt"]
