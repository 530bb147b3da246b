"""Fraud proofs: the format, judging by re-execution, and the intake's rate limits, dedup and pending cap."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.fraud import (
    FIXED,
    PROOF_BYTES_MAX,
    FraudConfig,
    FraudProof,
    ProofIntake,
    TokenBucket,
    Verdict,
    decode_proof,
    judge,
)
from pangea_p2p.errors import FailureKind, RejectReason, VerificationError
from tests.core.verify.helpers import NOW, OTHER, WORKER, binding, framed_output, output_chunks, receipt


def lie(seed: int = 0, task: str = "t0") -> FraudProof:
    """A proof against a worker that signed a wrong output for ``task``; the claim is the honest output."""
    b = binding(task)
    wrong = receipt(b, output=framed_output(b, " (wrong)"), seed=seed)
    return FraudProof.of(wrong, output_digest=hashlib.sha256(framed_output(b)).digest(), fuel_used=12_345)


def test_round_trip_and_size() -> None:
    proof = lie()
    data = proof.encode()
    assert len(data) <= PROOF_BYTES_MAX
    back = decode_proof(data)
    assert back.receipt.wire == proof.receipt.wire
    assert (back.claim_output_digest, back.claim_fuel, back.claim_failure) == (
        proof.claim_output_digest, 12_345, None)
    assert back.encode() == data
    assert back.proof_id == proof.receipt.digest
    assert back.accused == proof.receipt.worker


def test_judge_valid_proof_proves_the_lie() -> None:
    proof = lie()
    verdict, why = judge(proof, output_chunks(proof.binding), None, 12_345)  # the honest run
    assert verdict is Verdict.LIE_PROVEN, why
    assert "output differs" in why


def test_judge_false_proof_when_the_receipt_is_right() -> None:
    b = binding()
    honest = receipt(b)  # an honest receipt, accused anyway
    proof = FraudProof.of(honest, output_digest=hashlib.sha256(b"something else").digest(), fuel_used=12_345)
    verdict, why = judge(decode_proof(proof.encode()), output_chunks(b), None, 12_345)
    assert verdict is Verdict.FALSE_PROOF, why


def test_judge_fuel_lie_and_failure_lie_and_inconclusive() -> None:
    b = binding()
    under = receipt(b, fuel_used=1_000)  # the right output, a tenth of the fuel
    verdict, why = judge(FraudProof.of(under, fuel_used=12_345), output_chunks(b), None, 12_345)
    assert verdict is Verdict.LIE_PROVEN
    assert "fuel 1000" in why
    verdict, why = judge(FraudProof.of(receipt(b)), None, FailureKind.TRAP, 12_345)
    assert verdict is Verdict.LIE_PROVEN
    assert "TRAP" in why
    verdict, _ = judge(FraudProof.of(receipt(b)), None, FailureKind.TIMEOUT, 12_345)
    assert verdict is Verdict.INCONCLUSIVE


@pytest.mark.parametrize(
    ("mutate", "reason", "words"),
    [
        (lambda d: d + b"x", RejectReason.MALFORMED, "bytes follow"),
        (lambda d: d[:FIXED.size - 1], RejectReason.MALFORMED, "shorter than its fixed fields"),
        (lambda d: b"\x02" + d[1:], RejectReason.MALFORMED, "version 2"),
        (lambda d: d + bytes(PROOF_BYTES_MAX), RejectReason.LIMIT_EXCEEDED, "the limit is"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), RejectReason.BAD_SIGNATURE, "does not verify"),
        (lambda d: d[:1] + bytes(32) + d[33:], RejectReason.BINDING_MISMATCH, "another task"),
        (lambda d: d[:FIXED.size - 2] + b"\x00\x10" + d[FIXED.size:], RejectReason.MALFORMED, "announces"),
    ],
    ids=["trailing", "short", "version", "oversized", "forged-signature", "other-module", "bad-length"],
)
def test_bad_proofs_are_rejected_with_a_reason(mutate: object, reason: RejectReason, words: str) -> None:
    data = mutate(lie().encode())  # type: ignore[operator]
    with pytest.raises(VerificationError) as info:
        decode_proof(data)
    assert info.value.reason is reason
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_a_receipt_signed_with_another_key_is_rejected() -> None:
    r = lie().receipt
    forged = dataclasses.replace(r, public_key=OTHER.public_key)  # names the worker, carries another key
    object.__setattr__(forged, "signature", OTHER.sign(b"pangea/receipt/v1\x00" + forged.body))
    with pytest.raises(VerificationError) as info:
        decode_proof(FraudProof.of(forged, fuel_used=1).encode())
    assert info.value.reason is RejectReason.KEY_PEER_MISMATCH


def test_a_claim_equal_to_the_receipt_or_a_nondeterministic_failure_proves_nothing() -> None:
    r = lie().receipt
    with pytest.raises(VerificationError, match="exactly what its receipt says"):
        decode_proof(FraudProof.of(r, output_digest=r.output_digest, fuel_used=r.fuel_used).encode())
    b = binding()
    timeout = issue_receipt(WORKER, b, failure=FailureKind.TIMEOUT, fuel_used=5, now=NOW, rng=random.Random(1))
    with pytest.raises(VerificationError, match="TIMEOUT"):
        decode_proof(FraudProof.of(timeout).encode())


def test_a_claim_without_the_whole_output_is_accepted() -> None:
    """A spot check re-ran one chunk: the accuser claims no whole output, the proof still stands."""
    proof = decode_proof(FraudProof.of(lie().receipt).encode())
    assert proof.claim_output_digest is None
    assert proof.claim_fuel == 0


def test_token_bucket() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(0.5)
    assert bucket.take(1.0)
    assert bucket.take(10.0)
    assert bucket.take(10.0)
    assert not bucket.take(10.0)


def test_intake_dedups_and_releases() -> None:
    intake = ProofIntake()
    data = lie().encode()
    first = intake.admit("A", data, NOW)
    assert isinstance(first, FraudProof)
    assert intake.admit("B", data, NOW) == "seen already"  # from another sender too
    intake.done(first.proof_id)
    assert intake.admit("B", data, NOW + 1) == "seen already"  # remembered after its verification
    assert not intake.pending


def test_intake_rate_limits_per_sender_and_globally() -> None:
    intake = ProofIntake(FraudConfig(sender_rate_per_s=0.1, sender_burst=2, global_rate_per_s=1.0, global_burst=3,
                                     pending_max=100))
    proofs = [lie(seed=i, task=f"t{i}").encode() for i in range(6)]
    got = [intake.admit("A", p, NOW) for p in proofs[:3]]
    assert isinstance(got[0], FraudProof)
    assert isinstance(got[1], FraudProof)
    assert isinstance(got[2], str)
    assert "rate limited: A" in got[2]
    assert isinstance(intake.admit("B", proofs[3], NOW), FraudProof)  # the global bucket's third token
    refused = intake.admit("C", proofs[4], NOW)
    assert isinstance(refused, str)
    assert "from all senders" in refused
    assert isinstance(intake.admit("C", proofs[4], NOW + 1.0), FraudProof)  # refilled


def test_intake_caps_pending_verifications_and_rejects_oversized() -> None:
    intake = ProofIntake(FraudConfig(pending_max=1))
    a, b = lie(seed=1, task="ta").encode(), lie(seed=2, task="tb").encode()
    first = intake.admit("A", a, NOW)
    assert isinstance(first, FraudProof)
    busy = intake.admit("B", b, NOW)
    assert isinstance(busy, str)
    assert busy.startswith("busy")
    intake.done(first.proof_id)
    assert isinstance(intake.admit("B", b, NOW), FraudProof)  # a busy drop is not remembered as seen
    with pytest.raises(VerificationError) as info:
        intake.admit("C", bytes(PROOF_BYTES_MAX + 1), NOW)
    assert info.value.reason is RejectReason.LIMIT_EXCEEDED


def test_intake_drops_stale_and_future_proofs() -> None:
    intake = ProofIntake(FraudConfig(proof_age_s_max=100.0))
    stale = intake.admit("A", lie().encode(), NOW + 101.0)
    assert isinstance(stale, str)
    assert stale.startswith("stale")
    future = intake.admit("A", lie(seed=3).encode(), NOW - 3600.0)
    assert isinstance(future, str)
    assert "future" in future


def test_judge_accepts_a_failure_claimed_consistently() -> None:
    b = binding()
    output = frame_chunks(output_chunks(b))
    r = receipt(b, output=output)
    assert judge(FraudProof.of(r, fuel_used=1), output_chunks(b), None, r.fuel_used)[0] is Verdict.FALSE_PROOF


def test_mutated_proofs_decode_or_are_rejected_never_crash() -> None:
    data = lie().encode()
    rng = random.Random(11)
    outcomes = {"ok": 0, "rejected": 0}
    messages: list[str] = []
    for _ in range(1500):
        raw = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            what = rng.random()
            if what < 0.6:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            elif what < 0.8:
                del raw[rng.randrange(len(raw)):]
            else:
                raw[rng.randrange(len(raw)):rng.randrange(len(raw))] = rng.randbytes(rng.randint(1, 40))
        try:
            decode_proof(bytes(raw))
            outcomes["ok"] += 1  # a change in the claim, say: still a well-formed proof
        except VerificationError as exc:
            messages.append(str(exc))
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 1000
    assert not [m for m in messages if "\n" in m]
