"""The worked examples of protocols/receipt.md §14, built from the inputs the document lists.

``python -m tests.core.verify.vectors`` prints them; with ``--write`` it rewrites the document's blocks.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from pathlib import Path

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.commit_reveal import commitment
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.merkle import MerkleTree
from pangea_p2p.core.verify.receipts import Receipt, ReceiptTree
from pangea_p2p.core.verify.voting import Claim


class FixedNonces(random.Random):
    """An rng whose randbytes hands out 00 01 02 .. 0f, then 10 11 .. 1f, and so on."""

    def __init__(self) -> None:
        super().__init__(0)
        self.next = 0

    def randbytes(self, n: int) -> bytes:
        out = bytes((self.next + i) % 256 for i in range(n))
        self.next += n
        return out


SUBMITTER = Identity(bytes([1]) * 32)
WORKER = Identity(bytes([2]) * 32)
WORKER_B = Identity(bytes([3]) * 32)
DELEGATOR = Identity(bytes([4]) * 32)
LIMITS = ReceiptLimits(fuel_max=10_000_000_000, memory_bytes_max=104_857_600, wall_time_s=30.0,
                       output_bytes_max=1_048_576)
ISSUED_AT_S = 1_750_000_000.0

INPUT = frame_chunks([b"in", b"put"])  # task t0: two input chunks
OUTPUT = frame_chunks([b"out", b"put"])  # ... and its two output chunks
TREE_INPUT = frame_chunks([b"a", b"b"])  # task t1, split into t1.0 = [a] and t1.1 = [b]
TREE_OUTPUT = frame_chunks([b"A", b"B"])  # ... merged from t1.0's [A] and t1.1's [B]


def execution_receipt() -> Receipt:
    b = TaskBinding.of(job_id="job-1", task_id="t0", module_cid=cid_of(b"module"), input_cid=cid_of(INPUT),
                       limits=LIMITS, issuer=SUBMITTER.peer_id, chunk_count=2)
    return issue_receipt(WORKER, b, output=OUTPUT, fuel_used=12345, now=ISSUED_AT_S, rng=FixedNonces())


def delegation_tree() -> ReceiptTree:
    half = ReceiptLimits(5_000_000_000, LIMITS.memory_bytes_max, LIMITS.wall_time_s, LIMITS.output_bytes_max)
    root = TaskBinding.of(job_id="job-1", task_id="t1", module_cid=cid_of(b"module"), input_cid=cid_of(TREE_INPUT),
                          limits=LIMITS, issuer=SUBMITTER.peer_id, chunk_count=2)
    rng = FixedNonces()
    kids = []
    for i, (worker, part) in enumerate([(WORKER, b"a"), (WORKER_B, b"b")]):
        b = TaskBinding.of(job_id="job-1", task_id=f"t1.{i}", parent_task_id="t1", module_cid=cid_of(b"module"),
                           input_cid=cid_of(frame_chunks([part])), limits=half, issuer=DELEGATOR.peer_id,
                           chunk_count=1)
        kids.append(ReceiptTree(issue_receipt(worker, b, output=frame_chunks([part.upper()]), fuel_used=100 + i,
                                              now=ISSUED_AT_S - 10, rng=rng)))
    return delegate(DELEGATOR, root, kids, now=ISSUED_AT_S, rng=rng)


def commit_vector() -> bytes:
    claim = Claim(hashlib.sha256(OUTPUT).digest(), 12345)
    return commitment("job-1", "t0", claim, WORKER.peer_id, bytes(range(16)))


def all_vectors() -> dict[str, str]:
    r = execution_receipt()
    tree = delegation_tree()
    three = MerkleTree.from_chunks([b"a", b"b", b"c"])
    return {
        "worker-peer-id": WORKER.peer_id,
        "issuer-peer-id": SUBMITTER.peer_id,
        "framed-output": OUTPUT.hex(),
        "merkle-root-out-put": MerkleTree.from_chunks([b"out", b"put"]).root.hex(),
        "merkle-root-a-b-c": three.root.hex(),
        "merkle-proof-c-of-a-b-c": three.proof(2).encode().hex(),
        "execution-receipt": r.wire.hex(),
        "execution-receipt-digest": r.digest.hex(),
        "replay-key": r.replay_key.hex(),
        "delegation-receipt": tree.receipt.wire.hex(),
        "receipt-tree": tree.encode().hex(),
        "commitment": commit_vector().hex(),
    }


SPEC = Path(__file__).resolve().parents[3] / "protocols" / "receipt.md"
LINE_CHARS = 96


def render(document: str) -> str:
    """``document`` with the body of every ```text vector NAME``` block replaced by the current value."""
    values = all_vectors()

    def block(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        lines = [value[i : i + LINE_CHARS] for i in range(0, len(value), LINE_CHARS)]
        return f"```text\nvector {match.group(1)}\n" + "".join(line + "\n" for line in lines) + "```"

    return re.sub(r"```text\nvector ([\w-]+)\n.*?```", block, document, flags=re.S)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SPEC.write_text(render(SPEC.read_text()))
    else:
        for name, value in all_vectors().items():
            print(name, value)
