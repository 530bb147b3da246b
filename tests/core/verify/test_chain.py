"""Receipt trees: a submitter verifies three levels of delegation offline, and every forgery is named."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.chain import (
    DelegationReceipt,
    ReceiptTree,
    children_root,
    decode_any,
    delegate,
    verify_tree,
)
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.merkle import MerkleTree, verify_inclusion
from pangea_p2p.core.verify.receipts import (
    DOMAIN_TAG,
    ReceiptLimits,
    ReplayGuard,
    TaskBinding,
    issue_receipt,
)
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import CONFIG, LIMITS, NOW, SUBMITTER, binding, identity

if TYPE_CHECKING:
    from pangea_p2p.core.identity import Identity

D1, D2, D3 = identity(11), identity(12), identity(13)
W = [identity(20 + i) for i in range(4)]
HALF = dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // 2)
QUARTER = dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // 4)


def child_binding(parent: TaskBinding, parent_signer: Identity, i: int, limits: ReceiptLimits) -> TaskBinding:
    task_id = f"{parent.task_id}.{i}"
    return binding(task_id, issuer=parent_signer, job_id=parent.job_id, parent_task_id=parent.task_id,
                   limits=limits)


def leaf(b: TaskBinding, worker: Identity, *, now: float = NOW - 10, seed: int = 0) -> ReceiptTree:
    out = f"output of {b.task_id}".encode()
    return ReceiptTree(issue_receipt(worker, b, output_cid=cid_of(out), fuel_used=1000 + len(b.task_id),
                                     now=now, rng=random.Random(seed)))


def sign_delegation(signer: Identity, receipt: DelegationReceipt) -> DelegationReceipt:
    unsigned = dataclasses.replace(receipt, signature=b"")
    return dataclasses.replace(unsigned, signature=signer.sign(DOMAIN_TAG + unsigned.body))


@dataclass
class Job:
    """S -> D1 -> (D2 -> W0, W1), (D3 -> W2, W3): three levels of receipts."""

    root: TaskBinding = field(default_factory=lambda: binding("t"))
    mid: list[TaskBinding] = field(default_factory=list)
    leaves: list[TaskBinding] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mid = [child_binding(self.root, D1, i, HALF) for i in range(2)]
        self.leaves = [child_binding(self.mid[i // 2], (D2, D3)[i // 2], i % 2, QUARTER) for i in range(4)]

    def leaf_trees(self) -> list[ReceiptTree]:
        return [leaf(b, W[i], seed=i) for i, b in enumerate(self.leaves)]

    def tree(self, leaves: list[ReceiptTree] | None = None) -> ReceiptTree:
        leaves = leaves or self.leaf_trees()
        rng = random.Random(7)
        mids = [
            delegate(D2, self.mid[0], leaves[:2], now=NOW - 5, rng=rng),
            delegate(D3, self.mid[1], leaves[2:], now=NOW - 5, rng=rng),
        ]
        return delegate(D1, self.root, mids, now=NOW - 1, rng=rng)


def reject(tree: ReceiptTree, expected: TaskBinding, config: VerifyConfig = CONFIG, **kw: object) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        verify_tree(tree, expected, NOW, config, **kw)  # type: ignore[arg-type]
    return err.value


# --- the honest tree ---------------------------------------------------------------------------------------


def test_three_level_tree_verifies_offline() -> None:
    job = Job()
    tree = job.tree()
    result = verify_tree(tree, job.root, NOW, CONFIG)
    assert result.receipts == 7
    assert [r.binding.task_id for r in result.leaves] == ["t.0.0", "t.0.1", "t.1.0", "t.1.1"]
    assert [r.worker for r in result.leaves] == [w.peer_id for w in W]
    assert result.fuel_used == sum(r.fuel_used for r in result.leaves)
    assert result.signers == {D1.peer_id, D2.peer_id, D3.peer_id, *(w.peer_id for w in W)}


def test_tree_survives_the_wire() -> None:
    job = Job()
    tree = job.tree()
    data = tree.encode()
    back = ReceiptTree.decode(data, CONFIG)
    assert back == tree
    assert back.encode() == data
    assert verify_tree(back, job.root, NOW, CONFIG).receipts == 7


def test_leaf_output_is_provable_from_the_roots() -> None:
    # the root commits (through D2's and D3's roots) to every leaf's output digest
    job = Job()
    tree = job.tree()
    mid = tree.children[1]
    commitments = [c.receipt.commitment for c in mid.children]
    proof = MerkleTree.from_chunks(commitments).proof(0)
    assert verify_inclusion(mid.receipt.commitment, commitments[0], proof)
    assert tree.receipt.commitment == children_root(tree.children)


def test_a_single_execution_receipt_is_a_tree() -> None:
    b = binding("solo")
    result = verify_tree(leaf(b, W[0]), b, NOW, CONFIG)
    assert result.receipts == 1
    assert result.leaves[0].worker == W[0].peer_id


# --- one forged child, three levels down -------------------------------------------------------------------


def test_child_swapped_after_the_delegator_signed() -> None:
    job = Job()
    tree = job.tree()
    other = leaf(job.leaves[2], W[2], seed=99)  # a real, valid receipt by W2 for the same task, other nonce
    mid = tree.children[1]
    forged = dataclasses.replace(tree, children=(tree.children[0], dataclasses.replace(
        mid, children=(other, mid.children[1]))))
    err = reject(forged, job.root)
    assert err.reason is RejectReason.CID_MISMATCH
    assert "root/1" in str(err)
    assert "child 0" in str(err)


def test_delegator_forges_a_workers_receipt() -> None:
    # D3 invents W2's result, signs it with its own key under W2's name, and signs its delegation over it
    job = Job()
    leaves = job.leaf_trees()
    honest = leaves[2].receipt
    unsigned = dataclasses.replace(honest, output_digest=bytes(32), public_key=D3.public_key, signature=b"")
    leaves[2] = ReceiptTree(dataclasses.replace(unsigned, signature=D3.sign(DOMAIN_TAG + unsigned.body)))
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.KEY_PEER_MISMATCH
    assert "root/1/0" in str(err)


def test_edited_child_output_without_resigning() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[3] = ReceiptTree(dataclasses.replace(leaves[3].receipt, output_digest=b"\x11" * 32))
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BAD_SIGNATURE
    assert "root/1/1" in str(err)


def test_random_bit_flips_in_the_encoded_tree_are_all_caught() -> None:
    job = Job()
    data = job.tree().encode()
    rng = random.Random(4)
    for bit in rng.sample(range(len(data) * 8), 400):
        forged = bytearray(data)
        forged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VerificationError):
            verify_tree(ReceiptTree.decode(bytes(forged), CONFIG), job.root, NOW, CONFIG)


# --- bindings between levels -------------------------------------------------------------------------------


def test_cycle_on_a_path_is_detected() -> None:
    # D2 hands t.0.1 back to D1, which already sits on the path above it
    job = Job()
    leaves = job.leaf_trees()
    leaves[1] = leaf(job.leaves[1], D1, seed=5)
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.DELEGATION_CYCLE
    assert D1.peer_id in str(err)


def test_submitter_on_its_own_path_is_a_cycle() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[0] = leaf(job.leaves[0], SUBMITTER, seed=5)
    assert reject(job.tree(leaves), job.root).reason is RejectReason.DELEGATION_CYCLE


def test_same_worker_on_different_branches_is_fine() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[3] = leaf(job.leaves[3], W[0], seed=8)
    assert verify_tree(job.tree(leaves), job.root, NOW, CONFIG).receipts == 7


def test_child_receipt_from_another_task() -> None:
    # D3 reuses a receipt that W0 produced for a task of D2's
    job = Job()
    leaves = job.leaf_trees()
    leaves[2] = leaf(job.leaves[0], W[0], seed=3)
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH


def test_child_issued_by_someone_else() -> None:
    job = Job()
    leaves = job.leaf_trees()
    wrong_issuer = dataclasses.replace(job.leaves[2], issuer=D2.peer_id)
    leaves[2] = leaf(wrong_issuer, W[2], seed=3)
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "issuer" in str(err)


def test_child_from_another_job() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[2] = leaf(dataclasses.replace(job.leaves[2], job_id="job-other"), W[2], seed=3)
    assert reject(job.tree(leaves), job.root).reason is RejectReason.BINDING_MISMATCH


def test_child_ran_another_module() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[2] = leaf(dataclasses.replace(job.leaves[2], module_digest=b"\x05" * 32), W[2], seed=3)
    assert reject(job.tree(leaves), job.root).reason is RejectReason.CID_MISMATCH


def test_same_child_twice_is_a_replay() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[1] = leaves[0]
    assert reject(job.tree(leaves), job.root).reason is RejectReason.REPLAYED


def test_two_children_for_one_task_id() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[1] = leaf(job.leaves[0], W[1], seed=3)
    assert reject(job.tree(leaves), job.root).reason is RejectReason.BINDING_MISMATCH


def test_tree_accepted_once_per_guard() -> None:
    job = Job()
    tree = job.tree()
    guard = ReplayGuard(CONFIG)
    verify_tree(tree, job.root, NOW, CONFIG, guard=guard)
    assert len(guard) == 7
    assert reject(tree, job.root, guard=guard).reason is RejectReason.REPLAYED


def test_rejected_tree_leaves_the_guard_untouched() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[3] = ReceiptTree(dataclasses.replace(leaves[3].receipt, fuel_used=1))
    guard = ReplayGuard(CONFIG)
    reject(job.tree(leaves), job.root, guard=guard)
    assert len(guard) == 0


def test_root_for_another_task() -> None:
    job = Job()
    assert reject(job.tree(), binding("t", input_bytes=b"else")).reason is RejectReason.CID_MISMATCH
    assert reject(job.tree(), binding("t", issuer=D2)).reason is RejectReason.BINDING_MISMATCH


def test_fuel_must_add_up() -> None:
    job = Job()
    tree = job.tree()
    mid = tree.children[0]
    inflated = sign_delegation(D2, dataclasses.replace(mid.receipt, fuel_used=mid.receipt.fuel_used + 1))
    rebuilt = delegate(D1, job.root, [dataclasses.replace(mid, receipt=inflated), tree.children[1]], now=NOW - 1,
                       rng=random.Random(1))
    err = reject(rebuilt, job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "fuel" in str(err)


def test_children_root_must_match() -> None:
    job = Job()
    tree = job.tree()
    mid = tree.children[0]
    lying = sign_delegation(D2, dataclasses.replace(mid.receipt, children_root=b"\x09" * 32))
    rebuilt = delegate(D1, job.root, [dataclasses.replace(mid, receipt=lying), tree.children[1]], now=NOW - 1,
                       rng=random.Random(1))
    assert reject(rebuilt, job.root).reason is RejectReason.PROOF_INVALID


def test_children_budgets_cannot_exceed_the_parents() -> None:
    job = Job()
    job.mid = [child_binding(job.root, D1, i, LIMITS) for i in range(2)]  # each child gets the whole budget
    job.leaves = [child_binding(job.mid[i // 2], (D2, D3)[i // 2], i % 2, QUARTER) for i in range(4)]
    err = reject(job.tree(), job.root)
    assert err.reason is RejectReason.LIMIT_EXCEEDED


def test_failed_child_cannot_be_part_of_a_result() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[0] = ReceiptTree(issue_receipt(W[0], job.leaves[0], output_cid=None, failure=FailureKind.TRAP,
                                          fuel_used=7, now=NOW - 10, rng=random.Random(0)))
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "TRAP" in str(err)


def test_child_dated_after_its_parent() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[0] = leaf(job.leaves[0], W[0], now=NOW - 2)  # fresh for the submitter, but after D2 signed (NOW - 5)
    err = reject(job.tree(leaves), job.root, VerifyConfig(clock_skew_max_s=1.0))
    assert err.reason is RejectReason.FROM_FUTURE
    assert "after the delegation receipt" in str(err)


def test_long_job_keeps_its_early_leaves() -> None:
    # leaves done two hours ago, delegations signed as the last part came back: only the root must be fresh
    job = Job()
    tree = job.tree([leaf(b, W[i], now=NOW - 7200 + i, seed=i) for i, b in enumerate(job.leaves)])
    later = delegate(D1, job.root, [
        delegate(D2, job.mid[0], tree.children[0].children, now=NOW - 7000, rng=random.Random(1)),
        delegate(D3, job.mid[1], tree.children[1].children, now=NOW - 7000, rng=random.Random(2)),
    ], now=NOW - 10, rng=random.Random(3))
    assert verify_tree(later, job.root, NOW, CONFIG).receipts == 7
    # the root itself must be fresh
    assert reject(later, job.root, VerifyConfig(receipt_age_max_s=5.0)).reason is RejectReason.EXPIRED


# --- limits and malformed trees ----------------------------------------------------------------------------


def test_depth_limit() -> None:
    job = Job()
    tree = job.tree()
    shallow = VerifyConfig(tree_depth_max=1)
    assert reject(tree, job.root, shallow).reason is RejectReason.LIMIT_EXCEEDED
    with pytest.raises(VerificationError) as err:
        ReceiptTree.decode(tree.encode(), shallow)
    assert err.value.reason is RejectReason.LIMIT_EXCEEDED


def test_receipt_count_and_size_limits() -> None:
    job = Job()
    data = job.tree().encode()
    with pytest.raises(VerificationError, match="more than 5 receipts"):
        ReceiptTree.decode(data, VerifyConfig(tree_receipts_max=5))
    with pytest.raises(VerificationError, match="bytes, the limit is 1024") as err:
        ReceiptTree.decode(data, VerifyConfig(tree_bytes_max=1024))
    assert err.value.reason is RejectReason.LIMIT_EXCEEDED


def test_children_limit() -> None:
    job = Job()
    with pytest.raises(VerificationError, match="children, the limit is 1") as err:
        ReceiptTree.decode(job.tree().encode(), VerifyConfig(children_max=1))
    assert err.value.reason is RejectReason.LIMIT_EXCEEDED


@pytest.mark.parametrize("cut", [0, 3, 4, 100, -1])
def test_truncated_trees_are_malformed(cut: int) -> None:
    data = Job().tree().encode()
    with pytest.raises(VerificationError) as err:
        ReceiptTree.decode(data[:cut], CONFIG)
    assert err.value.reason is RejectReason.MALFORMED


def test_trailing_bytes_after_a_tree() -> None:
    with pytest.raises(VerificationError, match="after its last receipt"):
        ReceiptTree.decode(Job().tree().encode() + b"\x00", CONFIG)


def test_delegation_without_children_is_malformed() -> None:
    job = Job()
    d = job.tree().receipt
    wire = d.wire
    at = 162 + 32  # the u16 child count (protocols/receipt.md)
    assert wire[at : at + 2] == b"\x00\x02"
    forged = wire[:at] + b"\x00\x00" + wire[at + 2 + 64 :]
    with pytest.raises(VerificationError, match="no children"):
        decode_any(forged)


def test_delegate_needs_children() -> None:
    with pytest.raises(LocalProtocolError):
        delegate(D1, binding("t"), [], now=NOW, rng=random.Random(0))


def test_subtree_reused_in_another_tree_is_a_replay() -> None:
    # D1 got its result accepted, then sells D2's part again under a fresh root receipt
    job = Job()
    tree = job.tree()
    guard = ReplayGuard(CONFIG)
    verify_tree(tree, job.root, NOW, CONFIG, guard=guard)
    again = delegate(D1, job.root, list(tree.children), now=NOW, rng=random.Random(42))
    err = reject(again, job.root, guard=guard)
    assert err.reason is RejectReason.REPLAYED
    assert "another tree" in str(err)
