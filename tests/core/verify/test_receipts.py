from __future__ import annotations

import dataclasses
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.merkle import MerkleTree
from pangea_p2p.core.verify.receipts import (
    DOMAIN_TAG,
    Receipt,
    ReceiptLimits,
    ReplayGuard,
    TaskBinding,
    decode_receipt,
    issue_receipt,
    verify_receipt,
)
from pangea_p2p.errors import FailureKind, LocalProtocolError, RejectReason, VerificationError

from .helpers import CONFIG, LIMITS, MODULE, NOW, OTHER, SUBMITTER, WORKER, binding, identity, receipt

IDS_AT = 231  # offset of the first length-prefixed id in an execution receipt (protocols/receipt.md)


def reason_of(call: object, *args: object, **kwargs: object) -> RejectReason:
    assert callable(call)
    with pytest.raises(VerificationError) as err:
        call(*args, **kwargs)
    return err.value.reason


def patched(wire: bytes, offset: int, new: bytes) -> bytes:
    return wire[:offset] + new + wire[offset + len(new) :]


# --- signing, encoding, the happy path -------------------------------------------------------------------


def test_issue_encode_decode_verify() -> None:
    r = receipt()
    wire = r.wire
    back = decode_receipt(wire)
    assert back == r
    assert back.wire == wire
    assert back.output_cid == cid_of(b"the output")
    assert back.binding.module_cid == cid_of(MODULE)
    assert back.worker == WORKER.peer_id
    assert back.public_key == WORKER.public_key
    verify_receipt(back, binding(), NOW, CONFIG, output=b"the output", worker=WORKER.peer_id)


def test_signature_covers_domain_tag_and_body() -> None:
    r = receipt()
    assert WORKER.sign(DOMAIN_TAG + r.body) == r.signature
    assert r.wire == r.body + r.signature
    assert r.wire[0] == 1
    assert r.wire[1] == 1
    assert WORKER.sign(r.body) != r.signature  # the tag is part of what is signed


def test_failure_receipt_round_trip() -> None:
    r = issue_receipt(WORKER, binding(), output_cid=None, failure=FailureKind.OUT_OF_FUEL, fuel_used=LIMITS.fuel_max,
                      now=NOW, rng=random.Random(1))
    back = decode_receipt(r.wire)
    assert back == r
    assert back.failure is FailureKind.OUT_OF_FUEL
    assert back.output_cid is None
    assert not back.ok
    verify_receipt(back, binding(), NOW, CONFIG)
    assert reason_of(verify_receipt, back, binding(), NOW, CONFIG, output=b"x") is RejectReason.CID_MISMATCH


def test_chunk_commitment_round_trip() -> None:
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10]
    tree = MerkleTree.from_chunks(chunks)
    r = issue_receipt(WORKER, binding(), output_cid=cid_of(b"".join(chunks)), fuel_used=5, now=NOW,
                      rng=random.Random(2), output_root=tree.root, output_chunks=3)
    back = decode_receipt(r.wire)
    assert back.output_root == tree.root
    assert back.output_chunks == 3


ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
u64 = st.integers(0, 2**64 - 1)
seconds = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    job_id=ids, task_id=ids, parent=st.one_of(st.just(""), ids), fuel_max=u64, memory=u64, wall=seconds,
    out_max=u64, fuel_used=u64, issued=seconds, failure=st.one_of(st.none(), st.sampled_from(FailureKind)),
    chunks=st.integers(0, 2**32 - 1), seed=st.integers(0, 2**32), data=st.binary(max_size=64),
)
def test_any_valid_receipt_is_canonical(
    job_id: str, task_id: str, parent: str, fuel_max: int, memory: int, wall: float, out_max: int,
    fuel_used: int, issued: float, failure: FailureKind | None, chunks: int, seed: int, data: bytes,
) -> None:
    b = TaskBinding.of(job_id=job_id, task_id=task_id, parent_task_id=parent, module_cid=cid_of(data),
                       input_cid=cid_of(data + b"in"), limits=ReceiptLimits(fuel_max, memory, wall, out_max),
                       issuer=SUBMITTER.peer_id)
    ok = failure is None
    r = issue_receipt(WORKER, b, output_cid=cid_of(data) if ok else None, failure=failure, fuel_used=fuel_used,
                      now=issued, rng=random.Random(seed), output_root=b"\x07" * 32 if ok and chunks else bytes(32),
                      output_chunks=chunks if ok else 0)
    back = decode_receipt(r.wire)
    assert back == r
    assert back.wire == r.wire
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
            verify_receipt(decode_receipt(bytes(forged)), binding(), NOW, CONFIG)
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
        verify_receipt(decode_receipt(forged.wire), binding(), NOW, CONFIG)
    assert err.value.reason is RejectReason.KEY_PEER_MISMATCH
    assert WORKER.peer_id in str(err.value)


def test_signer_that_is_not_a_peer_id() -> None:
    unsigned = dataclasses.replace(receipt(), worker="not-a-peer-id", signature=b"")
    forged = dataclasses.replace(unsigned, signature=WORKER.sign(DOMAIN_TAG + unsigned.body))
    assert reason_of(verify_receipt, decode_receipt(forged.wire), binding(), NOW, CONFIG) is (
        RejectReason.KEY_PEER_MISMATCH
    )


def test_signature_by_another_key() -> None:
    honest = receipt()
    forged = dataclasses.replace(honest, signature=OTHER.sign(DOMAIN_TAG + honest.body))
    assert reason_of(verify_receipt, decode_receipt(forged.wire), binding(), NOW, CONFIG) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"output_digest": bytes(32)}, RejectReason.BAD_SIGNATURE),
        ({"fuel_used": 1}, RejectReason.BAD_SIGNATURE),
        ({"issued_at_s": NOW + 1}, RejectReason.BAD_SIGNATURE),
        ({"nonce": b"\x00" * 16}, RejectReason.BAD_SIGNATURE),
    ],
)
def test_edited_field_breaks_signature(change: dict[str, object], reason: RejectReason) -> None:
    forged = dataclasses.replace(receipt(), **change)  # keeps the old signature
    assert reason_of(verify_receipt, decode_receipt(forged.wire), binding(), NOW, CONFIG) is reason


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        (binding("t1", input_bytes=b"input of t0"), RejectReason.BINDING_MISMATCH),  # t0's receipt offered for t1
        (binding(job_id="job-2"), RejectReason.BINDING_MISMATCH),
        (binding(parent_task_id="p"), RejectReason.BINDING_MISMATCH),
        (binding(issuer=OTHER), RejectReason.BINDING_MISMATCH),
        (binding(limits=dataclasses.replace(LIMITS, fuel_max=5)), RejectReason.BINDING_MISMATCH),
        (binding(input_bytes=b"another input"), RejectReason.CID_MISMATCH),
        (dataclasses.replace(binding(), module_digest=b"\x01" * 32), RejectReason.CID_MISMATCH),
    ],
)
def test_binding_mismatches(expected: TaskBinding, reason: RejectReason) -> None:
    assert reason_of(verify_receipt, receipt(), expected, NOW, CONFIG) is reason


def test_output_bytes_must_match_output_cid() -> None:
    r = receipt(output=b"right")
    verify_receipt(r, binding(), NOW, CONFIG, output=b"right")
    assert reason_of(verify_receipt, r, binding(), NOW, CONFIG, output=b"wrong") is RejectReason.CID_MISMATCH


def test_receipt_from_another_worker_than_assigned() -> None:
    r = receipt(worker=OTHER)
    verify_receipt(r, binding(), NOW, CONFIG)
    assert reason_of(verify_receipt, r, binding(), NOW, CONFIG, worker=WORKER.peer_id) is (
        RejectReason.BINDING_MISMATCH
    )


def test_fuel_above_budget() -> None:
    r = receipt(binding(limits=dataclasses.replace(LIMITS, fuel_max=100)), fuel_used=101)
    assert reason_of(verify_receipt, r, r.binding, NOW, CONFIG) is RejectReason.LIMIT_EXCEEDED


def test_replayed_receipt() -> None:
    guard = ReplayGuard(CONFIG)
    r = receipt()
    verify_receipt(r, binding(), NOW, CONFIG, guard=guard)
    assert reason_of(verify_receipt, decode_receipt(r.wire), binding(), NOW + 1, CONFIG, guard=guard) is (
        RejectReason.REPLAYED
    )


def test_rejected_receipt_is_not_remembered() -> None:
    # a forgery reusing an honest receipt's nonce must not block the honest receipt
    guard = ReplayGuard(CONFIG)
    honest = receipt()
    forged = dataclasses.replace(honest, fuel_used=1)
    assert reason_of(verify_receipt, forged, binding(), NOW, CONFIG, guard=guard) is RejectReason.BAD_SIGNATURE
    assert len(guard) == 0
    verify_receipt(honest, binding(), NOW, CONFIG, guard=guard)
    assert len(guard) == 1


def test_freshness_window() -> None:
    cfg = VerifyConfig(receipt_age_max_s=600.0, clock_skew_max_s=30.0)
    r = receipt(now=NOW)
    verify_receipt(r, binding(), NOW + 600.0, cfg)
    verify_receipt(r, binding(), NOW - 30.0, cfg)
    assert reason_of(verify_receipt, r, binding(), NOW + 600.5, cfg) is RejectReason.EXPIRED
    assert reason_of(verify_receipt, r, binding(), NOW - 30.5, cfg) is RejectReason.FROM_FUTURE


def test_replay_guard_is_bounded_and_never_readmits_what_it_forgot() -> None:
    cfg = VerifyConfig(replay_entries_max=3, receipt_age_max_s=1000.0)
    guard = ReplayGuard(cfg)
    receipts = [receipt(now=NOW + i, seed=i) for i in range(5)]
    for r in receipts:
        verify_receipt(r, binding(), NOW + 10, cfg, guard=guard)
    assert len(guard) == 3
    assert guard.watermark_s == NOW + 1
    # forgotten receipts come back as EXPIRED, remembered ones as REPLAYED
    assert reason_of(verify_receipt, receipts[0], binding(), NOW + 10, cfg, guard=guard) is RejectReason.EXPIRED
    assert reason_of(verify_receipt, receipts[1], binding(), NOW + 10, cfg, guard=guard) is RejectReason.EXPIRED
    assert reason_of(verify_receipt, receipts[4], binding(), NOW + 10, cfg, guard=guard) is RejectReason.REPLAYED
    verify_receipt(receipt(now=NOW + 6, seed=99), binding(), NOW + 10, cfg, guard=guard)


def test_replay_guard_forgets_what_freshness_rejects_anyway() -> None:
    cfg = VerifyConfig(receipt_age_max_s=100.0)
    guard = ReplayGuard(cfg)
    old = receipt(now=NOW)
    verify_receipt(old, binding(), NOW, cfg, guard=guard)
    verify_receipt(receipt(now=NOW + 150, seed=1), binding(), NOW + 150, cfg, guard=guard)
    assert len(guard) == 1
    assert old.replay_key not in guard
    assert reason_of(verify_receipt, old, binding(), NOW + 150, cfg, guard=guard) is RejectReason.EXPIRED


# --- malformed input names what is wrong -----------------------------------------------------------------


def _u8_at(offset: int, value: int) -> tuple[int, bytes]:
    return offset, bytes([value])


@pytest.mark.parametrize(
    ("offset", "new", "message"),
    [
        (0, b"\x02", "version 2"),
        (1, b"\x07", "unknown kind 7"),
        (1, b"\x02", "is a delegation receipt"),
        (162, b"\x63", "unknown status 99"),
        (162, b"\x03", "reports failure OUT_OF_FUEL but names an output"),
        (18, struct.pack(">d", float("nan")), "issued_at_s"),
        (18, struct.pack(">d", -1.0), "issued_at_s"),
        (50, struct.pack(">d", float("inf")), "wall_time_s"),
        (227, b"\x00\x00\x00\x02", "output_root"),
        (IDS_AT + 1, b" ", "job_id"),
        (IDS_AT + 1, b"\xff", "job_id is not ASCII"),
    ],
)
def test_malformed_fields(offset: int, new: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message) as err:
        decode_receipt(patched(receipt().wire, offset, new))
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
        TaskBinding.of(module_cid=cid_of(b"m"), input_cid=cid_of(b"i"), limits=LIMITS, **base)


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


def test_inconsistent_outcome_is_refused_locally() -> None:
    with pytest.raises(LocalProtocolError, match="exactly one"):
        issue_receipt(WORKER, binding(), output_cid=None, fuel_used=1, now=NOW, rng=random.Random(0))
    with pytest.raises(LocalProtocolError, match="output_root"):
        issue_receipt(WORKER, binding(), output_cid=cid_of(b"x"), fuel_used=1, now=NOW, rng=random.Random(0),
                      output_chunks=2)


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
