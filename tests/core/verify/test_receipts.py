from __future__ import annotations

import dataclasses
import hashlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.chunks import CHUNKS_MAX, frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import issue_receipt, verify_receipt
from pangea_p2p.core.verify.format import COMMON, DOMAIN_TAG, EXECUTION_BYTES_MAX, REPLAY_TAG
from pangea_p2p.core.verify.merkle import MerkleTree
from pangea_p2p.core.verify.receipts import Receipt, decode_receipt
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import (
    CHUNKS,
    CONFIG,
    LIMITS,
    MODULE,
    NOW,
    OTHER,
    SUBMITTER,
    WORKER,
    binding,
    framed_output,
    identity,
    output_chunks,
    receipt,
)

# offsets in an execution receipt (protocols/receipt.md §3)
CHUNK_COUNT_AT = 66
STATUS_AT = 166
OUTPUT_ROOT_AT = 199
OUTPUT_CHUNKS_AT = 231
IDS_AT = 235  # the first length-prefixed id
W = WORKER.peer_id


def reason_of(call: object, *args: object, **kwargs: object) -> RejectReason:
    assert callable(call)
    with pytest.raises(VerificationError) as err:
        call(*args, **kwargs)
    return err.value.reason


def patched(wire: bytes, offset: int, new: bytes) -> bytes:
    return wire[:offset] + new + wire[offset + len(new) :]


# --- signing, encoding, the happy path -------------------------------------------------------------------


def test_the_layout_of_the_fixed_fields() -> None:
    assert COMMON.size == 166
    assert EXECUTION_BYTES_MAX == 166 + 69 + 5 * 129 + 64 == 944
    wire = receipt(binding(chunk_count=3)).wire
    assert wire[CHUNK_COUNT_AT : CHUNK_COUNT_AT + 4] == b"\x00\x00\x00\x03"
    assert wire[OUTPUT_CHUNKS_AT : OUTPUT_CHUNKS_AT + 4] == b"\x00\x00\x00\x03"
    assert wire[IDS_AT : IDS_AT + 6] == b"\x05job-1"


def test_issue_encode_decode_verify() -> None:
    r = receipt()
    wire = r.wire
    back = decode_receipt(wire)
    assert back == r
    assert back.wire == wire
    assert back.output_cid == cid_of(framed_output(binding()))
    assert back.output_root == MerkleTree.from_chunks(output_chunks(binding())).root
    assert back.output_chunks == back.binding.chunk_count == CHUNKS
    assert back.binding.module_cid == cid_of(MODULE)
    assert back.worker == W
    assert back.public_key == WORKER.public_key
    verified = verify_receipt(back, binding(), NOW, CONFIG, output=framed_output(binding()), worker=W)
    assert verified.root == back
    assert verified.leaves == (back,)
    assert verified.worker == W
    assert verified.signers == {W}
    assert verified.receipts == 1
    assert verified.fuel_used == back.fuel_used
    assert verified.output_digest == hashlib.sha256(framed_output(binding())).digest()
    assert verified.failure is None
    assert verified.binding == binding()


def test_signature_covers_domain_tag_and_body() -> None:
    r = receipt()
    assert WORKER.sign(DOMAIN_TAG + r.body) == r.signature
    assert r.wire == r.body + r.signature
    assert r.wire[0] == 1
    assert r.wire[1] == 1
    assert WORKER.sign(r.body) != r.signature  # the tag is part of what is signed


def test_failure_receipt_round_trip() -> None:
    r = issue_receipt(WORKER, binding(), failure=FailureKind.OUT_OF_FUEL, fuel_used=LIMITS.fuel_max, now=NOW,
                      rng=random.Random(1))
    back = decode_receipt(r.wire)
    assert back == r
    assert back.failure is FailureKind.OUT_OF_FUEL
    assert back.output_cid is None
    assert back.output_chunks == 0
    assert back.output_root == bytes(32)
    assert not back.ok
    verified = verify_receipt(back, binding(), NOW, CONFIG, worker=W)
    assert verified.failure is FailureKind.OUT_OF_FUEL
    assert verified.output_digest is None
    assert reason_of(verify_receipt, back, binding(), NOW, CONFIG, worker=W, output=framed_output(binding())) is (
        RejectReason.CID_MISMATCH
    )


def test_output_bytes_and_precomputed_commitments_sign_the_same_receipt() -> None:
    b = binding(chunk_count=3)
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10]
    framed = frame_chunks(chunks)
    from_bytes = issue_receipt(WORKER, b, output=framed, fuel_used=5, now=NOW, rng=random.Random(2))
    given_ = issue_receipt(WORKER, b, output_cid=cid_of(framed), output_root=MerkleTree.from_chunks(chunks).root,
                           output_chunks=3, fuel_used=5, now=NOW, rng=random.Random(2))
    assert from_bytes == given_
    assert from_bytes.wire == given_.wire
    back = decode_receipt(from_bytes.wire)
    assert back.output_root == MerkleTree.from_chunks(chunks).root
    assert back.output_chunks == 3
    verify_receipt(back, b, NOW, CONFIG, worker=W, output=framed)


ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
u64 = st.integers(0, 2**64 - 1)
seconds = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    job_id=ids, task_id=ids, parent=st.one_of(st.just(""), ids), fuel_max=u64, memory=u64, wall=seconds,
    out_max=u64, fuel_used=u64, issued=seconds, failure=st.one_of(st.none(), st.sampled_from(FailureKind)),
    chunk_count=st.integers(1, CHUNKS_MAX), chunks=st.integers(1, 2**32 - 1), seed=st.integers(0, 2**32),
    data=st.binary(max_size=64),
)
def test_any_valid_receipt_is_canonical(
    job_id: str, task_id: str, parent: str, fuel_max: int, memory: int, wall: float, out_max: int,
    fuel_used: int, issued: float, failure: FailureKind | None, chunk_count: int, chunks: int, seed: int,
    data: bytes,
) -> None:
    b = TaskBinding.of(job_id=job_id, task_id=task_id, parent_task_id=parent, module_cid=cid_of(data),
                       input_cid=cid_of(data + b"in"), limits=ReceiptLimits(fuel_max, memory, wall, out_max),
                       issuer=SUBMITTER.peer_id, chunk_count=chunk_count)
    if failure is None:
        r = issue_receipt(WORKER, b, output_cid=cid_of(data), output_root=b"\x07" * 32, output_chunks=chunks,
                          fuel_used=fuel_used, now=issued, rng=random.Random(seed))
    else:
        r = issue_receipt(WORKER, b, failure=failure, fuel_used=fuel_used, now=issued, rng=random.Random(seed))
    back = decode_receipt(r.wire)
    assert back == r
    assert back.wire == r.wire
    assert back.binding.chunk_count == chunk_count
    assert dataclasses.replace(back).body == back.body  # re-encoding the decoded fields gives the same bytes


# --- every forgery and replay is rejected, with its own reason -----------------------------------------------


def test_every_single_bit_flip_is_rejected() -> None:
    r = receipt()
    wire = r.wire
    accepted = []
    for bit in range(len(wire) * 8):
        forged = bytearray(wire)
        forged[bit // 8] ^= 1 << (bit % 8)
        try:
            verify_receipt(decode_receipt(bytes(forged)), binding(), NOW, CONFIG, worker=W)
        except VerificationError:
            continue
        accepted.append(bit)
    assert accepted == []


def test_truncated_or_extended_receipts_are_malformed() -> None:
    wire = receipt().wire
    for n in range(len(wire)):
        assert reason_of(decode_receipt, wire[:n]) is RejectReason.MALFORMED
    assert reason_of(decode_receipt, wire + b"\x00") is RejectReason.MALFORMED


def test_key_not_matching_peer_id() -> None:
    # an impostor signs with its own key but names the honest worker as the signer
    honest = receipt()
    unsigned = dataclasses.replace(honest, public_key=OTHER.public_key, signature=b"")
    forged = dataclasses.replace(unsigned, signature=OTHER.sign(DOMAIN_TAG + unsigned.body))
    with pytest.raises(VerificationError) as err:
        verify_receipt(decode_receipt(forged.wire), binding(), NOW, CONFIG, worker=W)
    assert err.value.reason is RejectReason.KEY_PEER_MISMATCH
    assert W in str(err.value)


def test_signer_that_is_not_a_peer_id() -> None:
    unsigned = dataclasses.replace(receipt(), worker="not-a-peer-id", signature=b"")
    forged = dataclasses.replace(unsigned, signature=WORKER.sign(DOMAIN_TAG + unsigned.body))
    assert reason_of(verify_receipt, decode_receipt(forged.wire), binding(), NOW, CONFIG, worker="not-a-peer-id") is (
        RejectReason.KEY_PEER_MISMATCH
    )


def test_signature_by_another_key() -> None:
    honest = receipt()
    forged = dataclasses.replace(honest, signature=OTHER.sign(DOMAIN_TAG + honest.body))
    assert reason_of(verify_receipt, decode_receipt(forged.wire), binding(), NOW, CONFIG, worker=W) is (
        RejectReason.BAD_SIGNATURE
    )


@pytest.mark.parametrize(
    "change",
    [
        {"output_digest": bytes(32)},
        {"fuel_used": 1},
        {"issued_at_s": NOW + 1},
        {"nonce": b"\x00" * 16},
        {"output_root": b"\x01" * 32},
        {"output_chunks": CHUNKS + 1},
        {"binding": dataclasses.replace(binding(), chunk_count=CHUNKS + 1)},
    ],
)
def test_edited_field_breaks_signature(change: dict[str, object]) -> None:
    forged = dataclasses.replace(receipt(), **change)  # keeps the old signature
    assert reason_of(verify_receipt, decode_receipt(forged.wire), forged.binding, NOW, CONFIG, worker=W) is (
        RejectReason.BAD_SIGNATURE
    )


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        # t0's receipt offered for t1 (same input)
        (dataclasses.replace(binding("t1"), input_digest=binding().input_digest), RejectReason.BINDING_MISMATCH),
        (binding(job_id="job-2"), RejectReason.BINDING_MISMATCH),
        (binding(parent_task_id="p"), RejectReason.BINDING_MISMATCH),
        (binding(issuer=OTHER), RejectReason.BINDING_MISMATCH),
        (binding(limits=dataclasses.replace(LIMITS, fuel_max=5)), RejectReason.BINDING_MISMATCH),
        (dataclasses.replace(binding(), chunk_count=CHUNKS + 1), RejectReason.BINDING_MISMATCH),
        (binding(input_bytes=b"another input"), RejectReason.CID_MISMATCH),
        (dataclasses.replace(binding(), module_digest=b"\x01" * 32), RejectReason.CID_MISMATCH),
    ],
)
def test_binding_mismatches(expected: TaskBinding, reason: RejectReason) -> None:
    assert reason_of(verify_receipt, receipt(), expected, NOW, CONFIG, worker=W) is reason


def test_chunk_count_mismatch_names_the_field() -> None:
    with pytest.raises(VerificationError, match="chunk_count 2, expected 3") as err:
        verify_receipt(receipt(), dataclasses.replace(binding(), chunk_count=3), NOW, CONFIG, worker=W)
    assert err.value.reason is RejectReason.BINDING_MISMATCH


# --- the output: one chunk per input chunk, checked against the receipt's commitments ------------------------


@pytest.mark.parametrize("count", [1, CHUNKS + 1, 7])
def test_result_with_another_number_of_chunks_than_the_task(count: int) -> None:
    # issue_receipt signs what it is given; the verifier refuses a result that is not one chunk per input chunk
    b = binding()
    output = frame_chunks([b"x"] * count)
    r = issue_receipt(WORKER, b, output=output, fuel_used=1, now=NOW, rng=random.Random(0))
    assert r.output_chunks == count
    with pytest.raises(VerificationError, match=f"commits to {count} output chunks, the task has {CHUNKS}") as err:
        verify_receipt(decode_receipt(r.wire), b, NOW, CONFIG, worker=W)
    assert err.value.reason is RejectReason.BINDING_MISMATCH
    # ... and not even with its own output, which does hash to what it signed
    assert reason_of(verify_receipt, r, b, NOW, CONFIG, worker=W, output=output) is RejectReason.BINDING_MISMATCH


@settings(max_examples=40, deadline=None)
@given(task_chunks=st.integers(1, 6), result_chunks=st.integers(1, 6))
def test_a_result_verifies_exactly_when_it_has_the_tasks_chunk_count(task_chunks: int, result_chunks: int) -> None:
    b = binding(chunk_count=task_chunks)
    output = frame_chunks([bytes([i]) for i in range(result_chunks)])
    r = issue_receipt(WORKER, b, output=output, fuel_used=1, now=NOW, rng=random.Random(0))
    if task_chunks == result_chunks:
        assert verify_receipt(r, b, NOW, CONFIG, worker=W, output=output).output_digest == hashlib.sha256(
            output).digest()
    else:
        assert reason_of(verify_receipt, r, b, NOW, CONFIG, worker=W) is RejectReason.BINDING_MISMATCH


def test_output_bytes_must_match_the_output_id() -> None:
    b = binding()
    r = receipt(b)
    verify_receipt(r, b, NOW, CONFIG, worker=W, output=framed_output(b))
    assert reason_of(verify_receipt, r, b, NOW, CONFIG, worker=W, output=framed_output(b, " (wrong)")) is (
        RejectReason.CID_MISMATCH
    )


def _committed(output_cid: str, root: bytes, chunks: int, b: TaskBinding | None = None) -> Receipt:
    return issue_receipt(WORKER, b or binding(), output_cid=output_cid, output_root=root, output_chunks=chunks,
                         fuel_used=1, now=NOW, rng=random.Random(0))


def test_output_whose_merkle_root_is_not_the_committed_one() -> None:
    # the content id is right, the Merkle root (what spot checks open) is not
    b = binding()
    output = framed_output(b)
    r = _committed(cid_of(output), b"\x07" * 32, CHUNKS)
    verify_receipt(r, b, NOW, CONFIG, worker=W)  # without the output nothing can tell
    with pytest.raises(VerificationError, match="Merkle root") as err:
        verify_receipt(r, b, NOW, CONFIG, worker=W, output=output)
    assert err.value.reason is RejectReason.PROOF_INVALID


def test_output_that_is_not_a_framed_chunk_list() -> None:
    raw = b"not a chunk list"
    r = _committed(cid_of(raw), b"\x07" * 32, CHUNKS)
    with pytest.raises(VerificationError, match="not a framed chunk list") as err:
        verify_receipt(r, binding(), NOW, CONFIG, worker=W, output=raw)
    assert err.value.reason is RejectReason.MALFORMED


def test_output_with_more_chunks_than_committed() -> None:
    chunks = [b"a", b"b", b"c"]
    output = frame_chunks(chunks)
    r = _committed(cid_of(output), MerkleTree.from_chunks(chunks).root, CHUNKS)  # claims 2, holds 3
    with pytest.raises(VerificationError, match="has 3 chunks, it commits to 2") as err:
        verify_receipt(r, binding(), NOW, CONFIG, worker=W, output=output)
    assert err.value.reason is RejectReason.PROOF_INVALID


def test_output_chunk_above_the_output_limit() -> None:
    b = binding(limits=dataclasses.replace(LIMITS, output_bytes_max=4))
    output = frame_chunks([b"1234", b"12345"])
    r = issue_receipt(WORKER, b, output=output, fuel_used=1, now=NOW, rng=random.Random(0))
    with pytest.raises(VerificationError, match="output chunk 1 of receipt is 5 bytes, the limit is 4") as err:
        verify_receipt(r, b, NOW, CONFIG, worker=W, output=output)
    assert err.value.reason is RejectReason.LIMIT_EXCEEDED


def _mutated_output(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    op = draw(st.sampled_from(["flip", "cut", "insert", "swap-chunks", "same"]))
    at = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "cut":
        del data[at : at + draw(st.integers(1, 8))]
    elif op == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif op == "swap-chunks":
        return frame_chunks(list(reversed(output_chunks(binding()))))
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_output_is_accepted_exactly_when_it_is_the_signed_one(data: st.DataObject) -> None:
    b = binding()
    honest = framed_output(b)
    r = receipt(b)
    candidate = data.draw(st.composite(_mutated_output)(honest))
    if candidate == honest:
        verify_receipt(r, b, NOW, CONFIG, worker=W, output=candidate)
    else:
        assert reason_of(verify_receipt, r, b, NOW, CONFIG, worker=W, output=candidate) is RejectReason.CID_MISMATCH


# --- the worker the task was given to ------------------------------------------------------------------------


def test_receipt_from_another_worker_than_assigned() -> None:
    r = receipt(worker=OTHER)
    verify_receipt(r, binding(), NOW, CONFIG, worker=OTHER.peer_id)
    with pytest.raises(VerificationError, match=f"signed by {OTHER.peer_id}, the task was given to {W}") as err:
        verify_receipt(r, binding(), NOW, CONFIG, worker=W)
    assert err.value.reason is RejectReason.NOT_ASSIGNED


def test_unassigned_receipt_is_not_remembered() -> None:
    guard = ReplayGuard(CONFIG)
    assert reason_of(verify_receipt, receipt(worker=OTHER), binding(), NOW, CONFIG, worker=W, guard=guard) is (
        RejectReason.NOT_ASSIGNED
    )
    assert len(guard) == 0


def test_fuel_above_budget() -> None:
    r = receipt(binding(limits=dataclasses.replace(LIMITS, fuel_max=100)), fuel_used=101)
    assert reason_of(verify_receipt, r, r.binding, NOW, CONFIG, worker=W) is RejectReason.LIMIT_EXCEEDED


# --- replays: one accepted receipt per (task, worker) --------------------------------------------------------


def test_replayed_receipt() -> None:
    guard = ReplayGuard(CONFIG)
    r = receipt()
    verify_receipt(r, binding(), NOW, CONFIG, worker=W, guard=guard)
    assert reason_of(verify_receipt, decode_receipt(r.wire), binding(), NOW + 1, CONFIG, worker=W, guard=guard) is (
        RejectReason.REPLAYED
    )


def test_same_task_and_worker_with_a_new_nonce_is_a_replay() -> None:
    # a worker cannot get a second receipt accepted for the same task, whatever it changes
    guard = ReplayGuard(CONFIG)
    b = binding()
    first = receipt(b, seed=1)
    verify_receipt(first, b, NOW, CONFIG, worker=W, guard=guard)
    for seed in range(2, 12):
        again = receipt(b, seed=seed, now=NOW + seed, fuel_used=seed, output=framed_output(b, str(seed)))
        assert again.nonce != first.nonce
        assert again.replay_key == first.replay_key
        with pytest.raises(VerificationError, match="already accepted") as err:
            verify_receipt(again, b, NOW + seed, CONFIG, worker=W, guard=guard)
        assert err.value.reason is RejectReason.REPLAYED
    failed = issue_receipt(WORKER, b, failure=FailureKind.TRAP, fuel_used=3, now=NOW, rng=random.Random(99))
    assert reason_of(verify_receipt, failed, b, NOW, CONFIG, worker=W, guard=guard) is RejectReason.REPLAYED
    assert len(guard) == 1  # one task cannot grow the guard


def test_other_tasks_and_other_replicas_are_not_replays() -> None:
    guard = ReplayGuard(CONFIG)
    verify_receipt(receipt(), binding(), NOW, CONFIG, worker=W, guard=guard)
    verify_receipt(receipt(binding("t1")), binding("t1"), NOW, CONFIG, worker=W, guard=guard)  # another task
    # the same task given to a second replica
    verify_receipt(receipt(worker=OTHER), binding(), NOW, CONFIG, worker=OTHER.peer_id, guard=guard)
    assert len(guard) == 3


def test_the_replay_key_is_the_hash_of_the_ids() -> None:
    b = binding("t7", parent_task_id="t")

    def ids(*values: str) -> bytes:
        return b"".join(len(v).to_bytes(1, "big") + v.encode() for v in values)

    expected = hashlib.sha256(REPLAY_TAG + ids("job-1", "t7", "t", W, SUBMITTER.peer_id)).digest()
    assert REPLAY_TAG == b"pangea/replay/v1\x00"
    assert receipt(b).replay_key == expected
    assert receipt(b, seed=5, now=NOW + 9, fuel_used=1).replay_key == expected  # nonce, date, outcome: no part
    others = [
        receipt(binding("t7", parent_task_id="t", job_id="job-2")),
        receipt(binding("t8", parent_task_id="t")),
        receipt(binding("t7", parent_task_id="u")),
        receipt(binding("t7", parent_task_id="t", issuer=OTHER)),
        receipt(b, worker=OTHER),
    ]
    assert len({r.replay_key for r in others} | {expected}) == 6


def test_rejected_receipt_is_not_remembered() -> None:
    # a forgery for an honest receipt's task must not block the honest receipt
    guard = ReplayGuard(CONFIG)
    honest = receipt()
    forged = dataclasses.replace(honest, fuel_used=1)
    assert reason_of(verify_receipt, forged, binding(), NOW, CONFIG, worker=W, guard=guard) is (
        RejectReason.BAD_SIGNATURE
    )
    assert len(guard) == 0
    verify_receipt(honest, binding(), NOW, CONFIG, worker=W, guard=guard)
    assert len(guard) == 1


def test_freshness_window() -> None:
    cfg = VerifyConfig(receipt_age_max_s=600.0, clock_skew_max_s=30.0)
    r = receipt(now=NOW)
    verify_receipt(r, binding(), NOW + 600.0, cfg, worker=W)
    verify_receipt(r, binding(), NOW - 30.0, cfg, worker=W)
    assert reason_of(verify_receipt, r, binding(), NOW + 600.5, cfg, worker=W) is RejectReason.EXPIRED
    assert reason_of(verify_receipt, r, binding(), NOW - 30.5, cfg, worker=W) is RejectReason.FROM_FUTURE


def test_replay_guard_is_bounded_and_never_readmits_what_it_forgot() -> None:
    cfg = VerifyConfig(replay_entries_max=3, receipt_age_max_s=1000.0)
    guard = ReplayGuard(cfg)
    tasks = [binding(f"t{i}") for i in range(5)]
    receipts = [receipt(b, now=NOW + i, seed=i) for i, b in enumerate(tasks)]
    for b, r in zip(tasks, receipts, strict=True):
        verify_receipt(r, b, NOW + 10, cfg, worker=W, guard=guard)
    assert len(guard) == 3
    assert guard.watermark_s == NOW + 1
    # forgotten receipts come back as EXPIRED, remembered ones as REPLAYED, even with a new nonce
    assert reason_of(verify_receipt, receipts[0], tasks[0], NOW + 10, cfg, worker=W, guard=guard) is (
        RejectReason.EXPIRED
    )
    assert reason_of(verify_receipt, receipts[1], tasks[1], NOW + 10, cfg, worker=W, guard=guard) is (
        RejectReason.EXPIRED
    )
    assert reason_of(verify_receipt, receipts[4], tasks[4], NOW + 10, cfg, worker=W, guard=guard) is (
        RejectReason.REPLAYED
    )
    renewed = receipt(tasks[4], now=NOW + 6, seed=99)
    assert reason_of(verify_receipt, renewed, tasks[4], NOW + 10, cfg, worker=W, guard=guard) is RejectReason.REPLAYED
    verify_receipt(receipt(binding("t5"), now=NOW + 6, seed=99), binding("t5"), NOW + 10, cfg, worker=W, guard=guard)


def test_replay_guard_forgets_what_freshness_rejects_anyway() -> None:
    # kept for receipt_age_max_s + clock_skew_max_s after its guard time, then forgotten
    cfg = VerifyConfig(receipt_age_max_s=100.0, clock_skew_max_s=10.0)
    guard = ReplayGuard(cfg)
    old = receipt(now=NOW)
    verify_receipt(old, binding(), NOW, cfg, worker=W, guard=guard)
    verify_receipt(receipt(binding("t1"), now=NOW + 110, seed=1), binding("t1"), NOW + 110, cfg, worker=W,
                   guard=guard)
    assert old.replay_key in guard
    verify_receipt(receipt(binding("t2"), now=NOW + 110.5, seed=2), binding("t2"), NOW + 110.5, cfg, worker=W,
                   guard=guard)
    assert len(guard) == 2
    assert old.replay_key not in guard
    assert guard.watermark_s == float("-inf")  # forgetting by age does not need the watermark
    assert reason_of(verify_receipt, old, binding(), NOW + 110.5, cfg, worker=W, guard=guard) is RejectReason.EXPIRED


# --- malformed input names what is wrong -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "new", "message"),
    [
        (0, b"\x02", "version 2"),
        (1, b"\x07", "unknown kind 7"),
        (1, b"\x02", "is a delegation receipt"),
        (STATUS_AT, b"\x63", "unknown status 99"),
        (STATUS_AT, b"\x03", "reports failure OUT_OF_FUEL but names an output"),
        (18, struct.pack(">d", float("nan")), "issued_at_s"),
        (18, struct.pack(">d", -1.0), "issued_at_s"),
        (50, struct.pack(">d", float("inf")), "wall_time_s"),
        (CHUNK_COUNT_AT, struct.pack(">I", 0), "chunk_count 0 is not an integer in 1"),
        (CHUNK_COUNT_AT, struct.pack(">I", CHUNKS_MAX + 1), f"chunk_count {CHUNKS_MAX + 1} is not"),
        (OUTPUT_CHUNKS_AT, struct.pack(">I", 0), "output_chunks must be at least 1 for a result"),
        (IDS_AT + 1, b" ", "job_id"),
        (IDS_AT + 1, b"\xff", "job_id is not ASCII"),
    ],
)
def test_malformed_fields(offset: int, new: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message) as err:
        decode_receipt(patched(receipt().wire, offset, new))
    assert err.value.reason is RejectReason.MALFORMED


@pytest.mark.parametrize(("offset", "new"), [(OUTPUT_ROOT_AT, b"\x01"), (OUTPUT_CHUNKS_AT + 3, b"\x01")])
def test_failure_receipt_committing_to_chunks_is_malformed(offset: int, new: bytes) -> None:
    failed = issue_receipt(WORKER, binding(), failure=FailureKind.TRAP, fuel_used=3, now=NOW, rng=random.Random(0))
    with pytest.raises(VerificationError, match="commits to no output chunks") as err:
        decode_receipt(patched(failed.wire, offset, new))
    assert err.value.reason is RejectReason.MALFORMED


def test_empty_job_id_is_malformed() -> None:
    wire = receipt().wire
    job_len = wire[IDS_AT]
    forged = wire[:IDS_AT] + b"\x00" + wire[IDS_AT + 1 + job_len :]
    with pytest.raises(VerificationError, match="job_id") as err:
        decode_receipt(forged)
    assert err.value.reason is RejectReason.MALFORMED


def test_oversized_receipt_is_rejected_before_parsing() -> None:
    with pytest.raises(VerificationError, match="more than") as err:
        decode_receipt(b"\x01\x01" + b"\x00" * 5000)
    assert err.value.reason is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"job_id": ""}, {"job_id": "has space"}, {"job_id": "x" * 129}, {"task_id": "tab\t"}, {"issuer": "é"},
    ],
)
def test_bad_ids_are_refused_locally(kwargs: dict[str, str]) -> None:
    base = {"job_id": "j", "task_id": "t", "issuer": SUBMITTER.peer_id}
    base.update(kwargs)
    with pytest.raises(LocalProtocolError, match="printable ASCII"):
        TaskBinding.of(module_cid=cid_of(b"m"), input_cid=cid_of(b"i"), limits=LIMITS, chunk_count=1, **base)


@pytest.mark.parametrize("count", [0, -1, CHUNKS_MAX + 1, True, 1.0, "2"])
def test_bad_chunk_counts_are_refused_locally(count: object) -> None:
    with pytest.raises(LocalProtocolError, match="chunk_count"):
        TaskBinding.of(job_id="j", task_id="t", module_cid=cid_of(b"m"), input_cid=cid_of(b"i"), limits=LIMITS,
                       issuer=SUBMITTER.peer_id, chunk_count=count)  # type: ignore[arg-type]


def test_chunk_count_bounds_are_accepted() -> None:
    for count in (1, CHUNKS_MAX):
        b = dataclasses.replace(binding(), chunk_count=count)
        assert decode_receipt(receipt(b, output=frame_chunks([b""] * count)).wire).binding.chunk_count == count


@pytest.mark.parametrize(
    "limits",
    [
        {"fuel_max": -1}, {"fuel_max": 2**64}, {"memory_bytes_max": 1.5}, {"wall_time_s": float("nan")},
        {"wall_time_s": -1.0},
    ],
)
def test_bad_limits_are_refused_locally(limits: dict[str, object]) -> None:
    fields = dataclasses.asdict(LIMITS) | limits
    with pytest.raises(LocalProtocolError):
        ReceiptLimits(**fields)  # type: ignore[arg-type]


# --- issue_receipt: exactly one outcome, and every field encodable -----------------------------------------

OUT = frame_chunks([b"o", b"k"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"output": OUT, "failure": FailureKind.TRAP}, "exactly one of"),
        ({"output": OUT, "output_cid": cid_of(OUT)}, "exactly one of"),
        ({"output_cid": cid_of(OUT), "failure": FailureKind.TRAP}, "exactly one of"),
        ({"output": OUT, "output_root": bytes(32)}, "computed from the output bytes"),
        ({"output": OUT, "output_chunks": 2}, "computed from the output bytes"),
        ({"output": b"raw bytes"}, "not a framed chunk list"),
        ({"output": b""}, "not a framed chunk list"),
        ({"output": frame_chunks([])}, "output_chunks must be at least 1"),
        ({"output_cid": cid_of(OUT)}, "needs output_root and output_chunks"),
        ({"output_cid": cid_of(OUT), "output_root": bytes(32)}, "needs output_root and output_chunks"),
        ({"output_cid": cid_of(OUT), "output_chunks": 2}, "needs output_root and output_chunks"),
        ({"output_cid": cid_of(OUT), "output_root": bytes(32), "output_chunks": 0}, "at least 1"),
        ({"output_cid": cid_of(OUT), "output_root": bytes(31), "output_chunks": 2}, "output_root must be 32"),
        ({"output_cid": cid_of(OUT), "output_root": bytes(32), "output_chunks": 2**32}, "output_chunks"),
        ({"output_cid": "not-a-cid", "output_root": bytes(32), "output_chunks": 2}, "output_cid: malformed"),
        ({"failure": FailureKind.TRAP, "output_chunks": 2}, "commits to no output chunks"),
        ({"failure": FailureKind.TRAP, "output_root": b"\x01" * 32}, "commits to no output chunks"),
        ({"output": OUT, "fuel_used": -1}, "fuel_used"),
        ({"output": OUT, "fuel_used": 2**64}, "fuel_used"),
        ({"output": OUT, "now": float("nan")}, "issued_at_s"),
        ({"output": OUT, "now": -1.0}, "issued_at_s"),
    ],
)
def test_issue_receipt_refuses_arguments_that_are_not_one_outcome(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"fuel_used": 1, "now": NOW, "rng": random.Random(0)} | kwargs
    with pytest.raises(LocalProtocolError, match=message):
        issue_receipt(WORKER, binding(), **args)  # type: ignore[arg-type]


def test_issue_receipt_accepts_every_spelling_of_the_outcome() -> None:
    ok = issue_receipt(WORKER, binding(), output=bytearray(OUT), fuel_used=1, now=NOW, rng=random.Random(0))
    assert ok == issue_receipt(WORKER, binding(), output=memoryview(OUT), fuel_used=1, now=NOW, rng=random.Random(0))
    assert ok.output_digest == hashlib.sha256(OUT).digest()
    failed = issue_receipt(WORKER, binding(), failure=FailureKind.TRAP, output_root=bytes(32), output_chunks=0,
                           fuel_used=1, now=NOW, rng=random.Random(0))
    assert failed == issue_receipt(WORKER, binding(), failure=FailureKind.TRAP, fuel_used=1, now=NOW,
                                   rng=random.Random(0))


def test_receipts_from_many_workers_verify() -> None:
    guard = ReplayGuard(CONFIG)
    for n in range(10, 30):
        r = receipt(worker=identity(n), seed=n)
        verify_receipt(decode_receipt(r.wire), binding(), NOW, CONFIG, guard=guard, worker=identity(n).peer_id)
    assert len(guard) == 20


def test_receipt_is_immutable() -> None:
    r = receipt()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.fuel_used = 0  # type: ignore[misc]
    assert isinstance(r, Receipt)
