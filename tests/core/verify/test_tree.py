"""Receipt trees: a submitter verifies three levels of delegation offline, and every forgery is named."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import children_root, delegate
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.format import DOMAIN_TAG
from pangea_p2p.core.verify.merkle import MerkleTree, root_of, verify_inclusion
from pangea_p2p.core.verify.receipts import DelegationReceipt, ReceiptTree, decode_any
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import CONFIG, LIMITS, NOW, SUBMITTER, binding, framed_output, identity, output_chunks

if TYPE_CHECKING:
    from pangea_p2p.core.identity import Identity

D1, D2, D3 = identity(11), identity(12), identity(13)
W = [identity(20 + i) for i in range(4)]
HALF = dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // 2)
QUARTER = dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // 4)
LEAF_CHUNKS = 2


def child_binding(
    parent: TaskBinding, parent_signer: Identity, i: int, limits: ReceiptLimits, chunk_count: int
) -> TaskBinding:
    task_id = f"{parent.task_id}.{i}"
    return binding(task_id, issuer=parent_signer, job_id=parent.job_id, parent_task_id=parent.task_id,
                   limits=limits, chunk_count=chunk_count)


def leaf(b: TaskBinding, worker: Identity, *, now: float = NOW - 10, seed: int = 0,
         output: bytes | None = None) -> ReceiptTree:
    return ReceiptTree(issue_receipt(worker, b, output=framed_output(b) if output is None else output,
                                     fuel_used=1000 + len(b.task_id), now=now, rng=random.Random(seed)))


def sign_delegation(signer: Identity, receipt: DelegationReceipt) -> DelegationReceipt:
    unsigned = dataclasses.replace(receipt, signature=b"")
    return dataclasses.replace(unsigned, signature=signer.sign(DOMAIN_TAG + unsigned.body))


@dataclass
class Job:
    """S -> D1 -> (D2 -> W0, W1), (D3 -> W2, W3): three levels of receipts; 2 chunks per leaf, 8 in all."""

    root: TaskBinding = field(default_factory=lambda: binding("t", chunk_count=4 * LEAF_CHUNKS))
    mid: list[TaskBinding] = field(default_factory=list)
    leaves: list[TaskBinding] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mid = [child_binding(self.root, D1, i, HALF, 2 * LEAF_CHUNKS) for i in range(2)]
        self.leaves = [child_binding(self.mid[i // 2], (D2, D3)[i // 2], i % 2, QUARTER, LEAF_CHUNKS)
                       for i in range(4)]

    def leaf_trees(self, now: float = NOW - 10) -> list[ReceiptTree]:
        return [leaf(b, W[i], seed=i, now=now) for i, b in enumerate(self.leaves)]

    def tree(self, leaves: list[ReceiptTree] | None = None, *, mid_now: float = NOW - 5,
             root_now: float = NOW - 1) -> ReceiptTree:
        leaves = leaves or self.leaf_trees()
        rng = random.Random(7)
        mids = [
            delegate(D2, self.mid[0], leaves[:2], now=mid_now, rng=rng),
            delegate(D3, self.mid[1], leaves[2:], now=mid_now, rng=rng),
        ]
        return delegate(D1, self.root, mids, now=root_now, rng=rng)

    def chunks(self) -> list[bytes]:
        return [c for b in self.leaves for c in output_chunks(b)]

    def output(self) -> bytes:
        """The task's framed output: the leaves' output chunks in order."""
        return frame_chunks(self.chunks())


def reject(tree: ReceiptTree, expected: TaskBinding, config: VerifyConfig = CONFIG, *, worker: str = D1.peer_id,
           **kw: object) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        verify_tree(tree, expected, NOW, config, worker=worker, **kw)  # type: ignore[arg-type]
    return err.value


def accept(tree: ReceiptTree, expected: TaskBinding, config: VerifyConfig = CONFIG, *, worker: str = D1.peer_id,
           **kw: object) -> int:
    return verify_tree(tree, expected, NOW, config, worker=worker, **kw).receipts  # type: ignore[arg-type]


# --- the honest tree ---------------------------------------------------------------------------------------


def test_three_level_tree_verifies_offline() -> None:
    job = Job()
    tree = job.tree()
    result = verify_tree(tree, job.root, NOW, CONFIG, worker=D1.peer_id)
    assert result.receipts == 7
    assert result.root == tree.receipt
    assert result.worker == D1.peer_id
    assert [r.binding.task_id for r in result.leaves] == ["t.0.0", "t.0.1", "t.1.0", "t.1.1"]
    assert [r.worker for r in result.leaves] == [w.peer_id for w in W]
    assert result.fuel_used == sum(r.fuel_used for r in result.leaves)
    assert result.signers == {D1.peer_id, D2.peer_id, D3.peer_id, *(w.peer_id for w in W)}
    assert result.failure is None
    assert result.output_digest is None  # nothing proves the merged output without it
    with_output = verify_tree(tree, job.root, NOW, CONFIG, worker=D1.peer_id, output=job.output())
    assert with_output.output_digest == hashlib.sha256(job.output()).digest()
    assert with_output.leaves == result.leaves


def test_tree_survives_the_wire() -> None:
    job = Job()
    tree = job.tree()
    data = tree.encode()
    back = ReceiptTree.decode(data, CONFIG)
    assert back == tree
    assert back.encode() == data
    assert accept(back, job.root) == 7


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
    result = verify_tree(leaf(b, W[0]), b, NOW, CONFIG, worker=W[0].peer_id, output=framed_output(b))
    assert result.receipts == 1
    assert result.leaves[0].worker == W[0].peer_id
    assert result.output_digest == hashlib.sha256(framed_output(b)).digest()
    assert reject(leaf(b, W[0]), b, worker=W[0].peer_id, output=framed_output(b, "!")).reason is (
        RejectReason.CID_MISMATCH
    )


def test_root_signed_by_another_peer_than_the_task_was_given_to() -> None:
    job = Job()
    guard = ReplayGuard(CONFIG)
    err = reject(job.tree(), job.root, worker=D2.peer_id, guard=guard)
    assert err.reason is RejectReason.NOT_ASSIGNED
    assert f"the task was given to {D2.peer_id}" in str(err)
    assert len(guard) == 0
    b = binding("solo")
    assert reject(leaf(b, W[0]), b, worker=W[1].peer_id).reason is RejectReason.NOT_ASSIGNED


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
            verify_tree(ReceiptTree.decode(bytes(forged), CONFIG), job.root, NOW, CONFIG, worker=D1.peer_id)


# --- the output, checked leaf by leaf ------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4 * LEAF_CHUNKS))
def test_a_tampered_output_chunk_is_blamed_on_its_leaf(index: int) -> None:
    job = Job()
    chunks = job.chunks()
    chunks[index] = chunks[index][:-1] + b"!"  # same length, other bytes
    guard = ReplayGuard(CONFIG)
    err = reject(job.tree(), job.root, output=frame_chunks(chunks), guard=guard)
    assert err.reason is RejectReason.CID_MISMATCH
    i = index // LEAF_CHUNKS
    assert f"output chunks of leaf {i} ({job.leaves[i].task_id}) are not its output" in str(err)
    assert len(guard) == 0
    assert accept(job.tree(), job.root, output=job.output(), guard=guard) == 7


def test_output_chunks_moved_across_a_leaf_boundary() -> None:
    # the same bytes in all, but W1's last chunk handed to W2: the leaves' parts no longer match
    job = Job()
    chunks = job.chunks()
    moved = [*chunks[:3], chunks[3] + chunks[4], *chunks[5:], b""]
    err = reject(job.tree(), job.root, output=frame_chunks(moved))
    assert err.reason is RejectReason.CID_MISMATCH
    assert "leaf 1 (t.0.1)" in str(err)


@pytest.mark.parametrize(
    ("output", "reason", "message"),
    [
        (frame_chunks([b"x"] * 7), RejectReason.PROOF_INVALID, "has 7 chunks, it commits to 8"),
        (frame_chunks([b"x"] * 9), RejectReason.PROOF_INVALID, "has 9 chunks, it commits to 8"),
        (b"\x08\x00\x00", RejectReason.MALFORMED, "not a framed chunk list"),
        (Job().output() + b"\x00", RejectReason.MALFORMED, "not a framed chunk list"),
    ],
)
def test_output_of_the_wrong_shape(output: bytes, reason: RejectReason, message: str) -> None:
    job = Job()
    with pytest.raises(VerificationError, match=message) as err:
        verify_tree(job.tree(), job.root, NOW, CONFIG, worker=D1.peer_id, output=output)
    assert err.value.reason is reason


def test_a_leaf_whose_merkle_root_lies_is_caught_with_the_output() -> None:
    # W1 commits to the right output id but a made-up Merkle root: spot checks against it would be meaningless
    job = Job()
    leaves = job.leaf_trees()
    b = job.leaves[1]
    leaves[1] = ReceiptTree(issue_receipt(W[1], b, output_cid=leaves[1].receipt.output_cid, output_root=b"\x07" * 32,
                                          output_chunks=LEAF_CHUNKS, fuel_used=5, now=NOW - 10,
                                          rng=random.Random(1)))
    tree = job.tree(leaves)
    assert accept(tree, job.root) == 7  # nothing shows without the output
    err = reject(tree, job.root, output=job.output())
    assert err.reason is RejectReason.PROOF_INVALID
    assert "leaf 1 (t.0.1) do not lead to its root" in str(err)
    assert root_of(output_chunks(b)) != b"\x07" * 32


def test_a_leaf_output_chunk_above_the_leafs_output_limit() -> None:
    # the root allows 1 MiB chunks, W3's part was limited to 8 bytes: a 9-byte chunk of W3's is refused
    job = Job()
    small = dataclasses.replace(QUARTER, output_bytes_max=8)
    job.leaves[3] = child_binding(job.mid[1], D3, 1, small, LEAF_CHUNKS)
    leaves = job.leaf_trees()
    big = frame_chunks([b"123456789", b"1"])
    leaves[3] = leaf(job.leaves[3], W[3], seed=3, output=big)
    tree = job.tree(leaves)
    assert accept(tree, job.root) == 7
    output = frame_chunks([*job.chunks()[:6], b"123456789", b"1"])
    err = reject(tree, job.root, output=output)
    assert err.reason is RejectReason.LIMIT_EXCEEDED
    assert "leaf 3 (t.1.1) is 9 bytes, the limit is 8" in str(err)


@st.composite
def tree_shapes(draw: st.DrawFn) -> list[list[int]]:
    """Chunk counts of the leaves under each child of the root: one to three children of one to three leaves."""
    return draw(st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=3), min_size=1, max_size=3))


@settings(max_examples=25, deadline=None)
@given(shape=tree_shapes(), data=st.data())
def test_any_tree_accepts_its_output_and_blames_a_tampered_chunk_on_its_leaf(
    shape: list[list[int]], data: st.DataObject
) -> None:
    # a random two-level tree: S -> D1 -> (Dk -> leaves), with random chunk counts and contents
    total = sum(map(sum, shape))
    root = binding("r", chunk_count=total)
    rng = random.Random(0)
    third, ninth = (dataclasses.replace(LIMITS, fuel_max=LIMITS.fuel_max // n) for n in (3, 9))
    mids, leaf_bindings, contents = [], [], []
    for k, counts in enumerate(shape):
        mid = child_binding(root, D1, k, third, sum(counts))
        delegator = identity(40 + k)
        kids = []
        for j, count in enumerate(counts):
            b = child_binding(mid, delegator, j, ninth, count)
            chunks = data.draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
            leaf_bindings.append(b)
            contents.append(chunks)
            kids.append(ReceiptTree(issue_receipt(W[j], b, output=frame_chunks(chunks), fuel_used=7, now=NOW - 3,
                                                  rng=rng)))
        mids.append(delegate(delegator, mid, kids, now=NOW - 2, rng=rng))
    tree = delegate(D1, root, mids, now=NOW - 1, rng=rng)
    flat = [c for chunks in contents for c in chunks]
    output = frame_chunks(flat)
    result = verify_tree(tree, root, NOW, CONFIG, worker=D1.peer_id, output=output)
    assert result.output_digest == hashlib.sha256(output).digest()
    assert [r.binding for r in result.leaves] == leaf_bindings
    # tamper with one chunk: the leaf that holds it is named
    at = data.draw(st.integers(0, total - 1))
    flat[at] = flat[at] + b"?"
    owner = next(i for i in range(len(contents)) if sum(map(len, contents[: i + 1])) > at)
    with pytest.raises(VerificationError, match=rf"leaf {owner} \({leaf_bindings[owner].task_id}\)") as err:
        verify_tree(tree, root, NOW, CONFIG, worker=D1.peer_id, output=frame_chunks(flat))
    assert err.value.reason is RejectReason.CID_MISMATCH


# --- chunk counts ----------------------------------------------------------------------------------------------


def test_leaf_result_with_another_number_of_chunks() -> None:
    # W2 outputs three chunks for its two-chunk part; its own receipt says so, and D3 signed over it
    job = Job()
    leaves = job.leaf_trees()
    leaves[2] = leaf(job.leaves[2], W[2], seed=2, output=frame_chunks([b"a", b"b", b"c"]))
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "receipt root/1/0 commits to 3 output chunks, the task has 2 input chunks" in str(err)


def test_children_chunk_counts_must_add_up_to_the_parents() -> None:
    # D2 claims to have covered 5 chunks with children holding 2 + 2
    job = Job()
    job.root = binding("t", chunk_count=9)
    job.mid = [child_binding(job.root, D1, 0, HALF, 5), child_binding(job.root, D1, 1, HALF, 4)]
    leaves = job.leaf_trees()
    with pytest.raises(LocalProtocolError, match="the children hold 4 chunks, the task has 5"):
        delegate(D2, job.mid[0], leaves[:2], now=NOW - 5, rng=random.Random(0))
    honest_shape = delegate(D2, dataclasses.replace(job.mid[0], chunk_count=4), leaves[:2], now=NOW - 5,
                            rng=random.Random(0))
    lying = sign_delegation(D2, dataclasses.replace(honest_shape.receipt, binding=job.mid[0]))
    mids = [dataclasses.replace(honest_shape, receipt=lying),
            delegate(D3, job.mid[1], leaves[2:], now=NOW - 5, rng=random.Random(1))]
    tree = delegate(D1, job.root, mids, now=NOW - 1, rng=random.Random(2))
    err = reject(tree, job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "receipt root/0 split its 5 chunks into children holding 4 chunks in total" in str(err)


def test_children_chunk_counts_may_not_add_up_to_less_at_the_root() -> None:
    job = Job()
    tree = job.tree()
    lying = sign_delegation(D1, dataclasses.replace(tree.receipt, binding=dataclasses.replace(job.root,
                                                                                              chunk_count=9)))
    forged = dataclasses.replace(tree, receipt=lying)
    err = reject(forged, lying.binding)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "receipt root split its 9 chunks into children holding 8 chunks in total" in str(err)
    assert reject(forged, job.root).reason is RejectReason.BINDING_MISMATCH  # not the binding it was given


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
    assert accept(job.tree(leaves), job.root) == 7


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


@pytest.mark.parametrize(
    ("name", "larger"),
    [("memory_bytes_max", LIMITS.memory_bytes_max + 1), ("wall_time_s", LIMITS.wall_time_s + 0.5),
     ("output_bytes_max", LIMITS.output_bytes_max + 1)],
)
def test_child_limits_cannot_exceed_the_parents(name: str, larger: float) -> None:
    # D1 gives D3's part more memory (time, output) than the submitter gave the whole task
    job = Job()
    generous = dataclasses.replace(HALF, **{name: larger})
    job.mid[1] = child_binding(job.root, D1, 1, generous, 2 * LEAF_CHUNKS)
    job.leaves[2:] = [child_binding(job.mid[1], D3, i, QUARTER, LEAF_CHUNKS) for i in range(2)]
    err = reject(job.tree(), job.root)
    assert err.reason is RejectReason.LIMIT_EXCEEDED
    assert f"receipt root/1 ran with {name} {larger}, above its parent's" in str(err)


def test_child_limits_are_bounded_by_the_direct_parent() -> None:
    # D2's part has half the memory; W1's leaf under it asks for the whole task's memory again
    job = Job()
    lean = dataclasses.replace(HALF, memory_bytes_max=LIMITS.memory_bytes_max // 2)
    job.mid[0] = child_binding(job.root, D1, 0, lean, 2 * LEAF_CHUNKS)
    job.leaves[:2] = [child_binding(job.mid[0], D2, 0, dataclasses.replace(QUARTER, memory_bytes_max=1000),
                                    LEAF_CHUNKS),
                      child_binding(job.mid[0], D2, 1, QUARTER, LEAF_CHUNKS)]
    err = reject(job.tree(), job.root)
    assert err.reason is RejectReason.LIMIT_EXCEEDED
    assert "receipt root/0/1 ran with memory_bytes_max" in str(err)


def test_child_limits_equal_to_the_parents_are_fine() -> None:
    job = Job()
    job.mid = [child_binding(job.root, D1, i, HALF, 2 * LEAF_CHUNKS) for i in range(2)]
    assert (HALF.memory_bytes_max, HALF.wall_time_s, HALF.output_bytes_max) == (
        LIMITS.memory_bytes_max, LIMITS.wall_time_s, LIMITS.output_bytes_max)
    assert accept(job.tree(), job.root) == 7


def test_tree_accepted_once_per_guard() -> None:
    job = Job()
    tree = job.tree()
    guard = ReplayGuard(CONFIG)
    verify_tree(tree, job.root, NOW, CONFIG, worker=D1.peer_id, guard=guard)
    assert len(guard) == 1  # only the root: a tree cannot fill the guard
    assert tree.receipt.replay_key in guard
    assert all(c.receipt.replay_key not in guard for c in tree.children)
    assert guard.watermark_s == float("-inf")
    assert reject(tree, job.root, guard=guard).reason is RejectReason.REPLAYED


def test_a_wide_tree_does_not_move_the_guards_clock() -> None:
    # a tree far larger than the guard: still one entry, nothing forgotten, the watermark untouched
    cfg = VerifyConfig(replay_entries_max=2)
    guard = ReplayGuard(cfg)
    other = binding("other")
    verify_tree(leaf(other, W[0], now=NOW - 100), other, NOW, cfg, worker=W[0].peer_id, guard=guard)
    job = Job()
    verify_tree(job.tree(job.leaf_trees(now=NOW + 30), mid_now=NOW + 30, root_now=NOW + 30), job.root, NOW, cfg,
                worker=D1.peer_id, guard=guard)
    assert len(guard) == 2
    assert guard.watermark_s == float("-inf")
    assert reject(leaf(other, W[0], now=NOW - 100), other, cfg, worker=W[0].peer_id, guard=guard).reason is (
        RejectReason.REPLAYED
    )


def test_rejected_tree_leaves_the_guard_untouched() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[3] = ReceiptTree(dataclasses.replace(leaves[3].receipt, fuel_used=1))
    guard = ReplayGuard(CONFIG)
    reject(job.tree(leaves), job.root, guard=guard)
    assert len(guard) == 0


def test_root_for_another_task() -> None:
    job = Job()
    assert reject(job.tree(), binding("t", input_bytes=b"else", chunk_count=8)).reason is RejectReason.CID_MISMATCH
    assert reject(job.tree(), binding("t", issuer=D2, chunk_count=8)).reason is RejectReason.BINDING_MISMATCH
    assert reject(job.tree(), dataclasses.replace(job.root, chunk_count=7)).reason is RejectReason.BINDING_MISMATCH


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
    job.mid = [child_binding(job.root, D1, i, LIMITS, 2 * LEAF_CHUNKS) for i in range(2)]  # each: the whole budget
    job.leaves = [child_binding(job.mid[i // 2], (D2, D3)[i // 2], i % 2, QUARTER, LEAF_CHUNKS) for i in range(4)]
    err = reject(job.tree(), job.root)
    assert err.reason is RejectReason.LIMIT_EXCEEDED
    assert "fuel in total, more than its own budget" in str(err)


def test_failed_child_cannot_be_part_of_a_result() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[0] = ReceiptTree(issue_receipt(W[0], job.leaves[0], failure=FailureKind.TRAP, fuel_used=7, now=NOW - 10,
                                          rng=random.Random(0)))
    err = reject(job.tree(leaves), job.root)
    assert err.reason is RejectReason.BINDING_MISMATCH
    assert "TRAP" in str(err)


# --- dates -------------------------------------------------------------------------------------------------


def test_child_dated_after_its_parent() -> None:
    job = Job()
    leaves = job.leaf_trees()
    leaves[0] = leaf(job.leaves[0], W[0], now=NOW - 2)  # fresh for the submitter, but after D2 signed (NOW - 5)
    err = reject(job.tree(leaves), job.root, VerifyConfig(clock_skew_max_s=1.0))
    assert err.reason is RejectReason.FROM_FUTURE
    assert "after the delegation receipt" in str(err)


def test_child_dated_after_the_verifiers_clock() -> None:
    # The root and D2 date their receipts 50 s ahead (within the 60 s skew). W0's leaf is dated 100 s ahead:
    # not after its parent's date plus the skew, but after the verifier's clock plus the skew.
    cfg = VerifyConfig(clock_skew_max_s=60.0)
    job = Job()
    leaves = job.leaf_trees(now=NOW + 50)
    leaves[0] = leaf(job.leaves[0], W[0], now=NOW + 100)
    err = reject(job.tree(leaves, mid_now=NOW + 50, root_now=NOW + 50), job.root, cfg)
    assert err.reason is RejectReason.FROM_FUTURE
    assert "receipt root/0/0" in str(err)
    # dated within the skew of the verifier's clock, the same tree is fine
    leaves[0] = leaf(job.leaves[0], W[0], now=NOW + 60)
    assert accept(job.tree(leaves, mid_now=NOW + 50, root_now=NOW + 50), job.root, cfg) == 7


def test_long_job_keeps_its_early_leaves() -> None:
    # leaves done two hours ago, delegations signed as the last part came back: only the root must be fresh
    job = Job()
    tree = job.tree([leaf(b, W[i], now=NOW - 7200 + i, seed=i) for i, b in enumerate(job.leaves)])
    later = delegate(D1, job.root, [
        delegate(D2, job.mid[0], tree.children[0].children, now=NOW - 7000, rng=random.Random(1)),
        delegate(D3, job.mid[1], tree.children[1].children, now=NOW - 7000, rng=random.Random(2)),
    ], now=NOW - 10, rng=random.Random(3))
    assert accept(later, job.root) == 7
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
    at = 166 + 32  # the u16 child count (protocols/receipt.md §4)
    assert wire[at : at + 2] == b"\x00\x02"
    forged = wire[:at] + b"\x00\x00" + wire[at + 2 + 64 :]
    with pytest.raises(VerificationError, match="no children"):
        decode_any(forged)


def test_delegate_needs_children() -> None:
    with pytest.raises(LocalProtocolError):
        delegate(D1, binding("t"), [], now=NOW, rng=random.Random(0))


# --- replays across trees ----------------------------------------------------------------------------------


def test_subtree_reused_in_another_tree_is_a_replay() -> None:
    # D1 got its result accepted, then sells D2's and D3's parts again under a fresh root receipt
    job = Job()
    tree = job.tree()
    guard = ReplayGuard(CONFIG)
    verify_tree(tree, job.root, NOW, CONFIG, worker=D1.peer_id, guard=guard)
    again = delegate(D1, job.root, list(tree.children), now=NOW, rng=random.Random(42))
    assert again.receipt.nonce != tree.receipt.nonce
    err = reject(again, job.root, guard=guard)
    assert err.reason is RejectReason.REPLAYED
    assert "receipt root" in str(err)


def test_a_second_tree_for_the_same_task_is_a_replay() -> None:
    # D1 hands the same task to other workers and comes back with a second, entirely new tree
    job = Job()
    guard = ReplayGuard(CONFIG)
    verify_tree(job.tree(), job.root, NOW, CONFIG, worker=D1.peer_id, guard=guard)
    others = [leaf(b, W[(i + 1) % 4], seed=10 + i) for i, b in enumerate(job.leaves)]
    assert reject(job.tree(others), job.root, guard=guard).reason is RejectReason.REPLAYED
    # ... while the same task given to another replica, D2, is its own entry
    job.mid = [dataclasses.replace(m, issuer=D2.peer_id) for m in job.mid]
    replica = delegate(D2, job.root, [leaf(job.mid[0], W[0], seed=1), leaf(job.mid[1], W[1], seed=2)],
                       now=NOW - 1, rng=random.Random(3))
    assert accept(replica, job.root, worker=D2.peer_id, guard=guard) == 3
    assert len(guard) == 2


def test_an_issuer_may_run_its_own_task_but_not_sign_a_delegation_of_it() -> None:
    own = binding("own", chunk_count=LEAF_CHUNKS)
    tree = leaf(own, SUBMITTER)  # a submitter's local run: the one receipt is its own
    verified = verify_tree(tree, own, NOW, CONFIG, worker=SUBMITTER.peer_id)
    assert verified.signers == {SUBMITTER.peer_id}
    # a delegation signed by the issuer, over a part it gave to a worker, is a cycle on the path
    part = child_binding(own, SUBMITTER, 0, LIMITS, LEAF_CHUNKS)
    looped = delegate(SUBMITTER, own, [leaf(part, W[0])], now=NOW - 5, rng=random.Random(1))
    with pytest.raises(VerificationError) as err:
        verify_tree(looped, own, NOW, CONFIG, worker=SUBMITTER.peer_id)
    assert err.value.reason is RejectReason.DELEGATION_CYCLE
    # and a worker's leaf signed again by the issuer below a delegation is a cycle too
    mid = child_binding(own, D1, 0, LIMITS, LEAF_CHUNKS)
    deeper = delegate(D1, own, [leaf(mid, SUBMITTER)], now=NOW - 5, rng=random.Random(2))
    with pytest.raises(VerificationError) as err:
        verify_tree(deeper, own, NOW, CONFIG, worker=D1.peer_id)
    assert err.value.reason is RejectReason.DELEGATION_CYCLE
