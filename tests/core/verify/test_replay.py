"""The ReplayGuard: bounded, one receipt per (task, worker), and a clock no receipt can push past the verifier's."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import verify_receipt
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.errors import RejectReason, VerificationError

from .helpers import NOW, OTHER, WORKER, binding, receipt

SKEW = 60.0
AGE = 3600.0


def reason_of(call: object, *args: object, **kwargs: object) -> RejectReason:
    assert callable(call)
    with pytest.raises(VerificationError) as err:
        call(*args, **kwargs)
    return err.value.reason


def key(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def test_watermark_attack_future_dated_receipts_cannot_expire_an_honest_fresh_one() -> None:
    # An attacker the verifier gave many tasks answers all of them at once, every receipt dated as far in the
    # future as the clock skew allows. They overflow the guard; the watermark must stay at the verifier's clock,
    # so an honest receipt issued after that moment is still accepted.
    cfg = VerifyConfig(replay_entries_max=4, clock_skew_max_s=SKEW, receipt_age_max_s=AGE)
    guard = ReplayGuard(cfg)
    attacker = OTHER
    for i in range(12):
        b = binding(f"a{i}")
        verify_receipt(receipt(b, worker=attacker, now=NOW + SKEW, seed=i), b, NOW, cfg, worker=attacker.peer_id,
                       guard=guard)
    assert len(guard) == 4  # bounded
    assert guard.watermark_s <= NOW  # never past the verifier's clock
    honest = binding("h")
    verified = verify_receipt(receipt(honest, now=NOW + 1), honest, NOW + 1, cfg, worker=WORKER.peer_id, guard=guard)
    assert verified.worker == WORKER.peer_id
    assert len(guard) == 4


def test_a_future_dated_receipt_is_filed_under_the_verifiers_clock() -> None:
    cfg = VerifyConfig(replay_entries_max=1, clock_skew_max_s=SKEW)
    guard = ReplayGuard(cfg)
    guard.record(key(1), NOW + SKEW, NOW)
    guard.record(key(2), NOW + SKEW, NOW)  # evicts key 1
    assert guard.watermark_s == NOW
    guard.check(key(3), NOW + 0.001)  # anything issued after the verifier's clock at eviction time passes
    assert reason_of(guard.check, key(3), NOW) is RejectReason.EXPIRED


def test_eviction_raises_the_watermark_to_the_oldest_guard_time() -> None:
    guard = ReplayGuard(VerifyConfig(replay_entries_max=2))
    guard.record(key(1), NOW - 30, NOW)
    guard.record(key(2), NOW - 10, NOW)
    guard.record(key(3), NOW - 20, NOW)  # over the limit: key 1 (NOW - 30) goes
    assert len(guard) == 2
    assert key(1) not in guard
    assert guard.watermark_s == NOW - 30
    assert reason_of(guard.check, key(1), NOW - 30) is RejectReason.EXPIRED
    assert reason_of(guard.check, key(2), NOW - 10) is RejectReason.REPLAYED
    guard.check(key(4), NOW - 29)


def test_recording_a_known_key_changes_nothing() -> None:
    guard = ReplayGuard(VerifyConfig(replay_entries_max=2))
    guard.record(key(1), NOW, NOW)
    guard.record(key(1), NOW + 5, NOW + 5)
    guard.record(key(2), NOW, NOW)
    assert len(guard) == 2
    assert guard.watermark_s == float("-inf")


def test_only_the_root_of_a_tree_is_recorded() -> None:
    # checked end to end in test_tree.py; here: a guard grows by one per accepted task, not per receipt
    guard = ReplayGuard(VerifyConfig())
    for i in range(5):
        b = binding(f"t{i}")
        verify_receipt(receipt(b, seed=i), b, NOW, VerifyConfig(), worker=WORKER.peer_id, guard=guard)
    assert len(guard) == 5


# --- properties over any sequence of receipts a verifier could accept ---------------------------------------

events = st.lists(
    st.tuples(
        st.integers(0, 11),  # which (task, worker): a small key space; or which accepted receipt to replay
        # issued_at_s - now, within freshness; the edges (dated in the past or the future) are what matters
        st.one_of(st.sampled_from([-AGE, -1.0, 0.0, 1.0, SKEW]), st.floats(-AGE, SKEW, allow_nan=False)),
        st.one_of(st.sampled_from([0.5, SKEW, AGE]), st.floats(0.0, 2 * AGE, allow_nan=False)),  # clock tick
        st.sampled_from(["receipt", "tick", "replay"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(entries_max=st.integers(1, 6), steps=events)
def test_guard_properties(entries_max: int, steps: list[tuple[int, float, float, str]]) -> None:
    """For every sequence of fresh receipts, fed to the guard as verify_receipt does:

    - it never holds more than ``replay_entries_max`` keys;
    - its watermark is never later than the verifier's clock;
    - a receipt issued after the verifier's clock at the last recording is never EXPIRED by the guard;
    - while a key is remembered, every receipt for it is REPLAYED;
    - an accepted receipt that was not dated in the future is never accepted again while it is fresh.
    """
    cfg = VerifyConfig(replay_entries_max=entries_max, clock_skew_max_s=SKEW, receipt_age_max_s=AGE)
    guard = ReplayGuard(cfg)
    now = NOW
    last_record_now = -float("inf")
    accepted: list[tuple[bytes, float]] = []  # (key, issued_at_s) of receipts not dated in the future
    for n, offset, advance, kind in steps:
        if kind == "tick":
            now += advance
            continue
        if kind == "replay":
            if not accepted:
                continue
            k, issued = accepted[n % len(accepted)]
            if issued >= now - AGE:  # freshness would refuse it anyway otherwise
                assert reason_of(guard.check, k, issued) in {RejectReason.REPLAYED, RejectReason.EXPIRED}
            continue
        k, issued = key(n), now + offset
        remembered = k in guard
        try:
            guard.check(k, issued)
        except VerificationError as err:
            if err.reason is RejectReason.EXPIRED:
                assert issued <= last_record_now, "an honest receipt newer than the guard's clock was EXPIRED"
            else:
                assert remembered
            continue
        assert not remembered
        guard.record(k, issued, now)
        last_record_now = now
        if issued <= now:
            accepted.append((k, issued))
        assert len(guard) <= entries_max
        assert guard.watermark_s <= now
    for k, issued in accepted:
        if issued >= now - AGE:
            assert reason_of(guard.check, k, issued) in {RejectReason.REPLAYED, RejectReason.EXPIRED}
