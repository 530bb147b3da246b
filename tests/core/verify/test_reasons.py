from __future__ import annotations

import pytest

from pangea_p2p.errors import PangeaError, RejectReason, VerificationError


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reason_has_a_stable_code_and_a_sentence(reason: RejectReason) -> None:
    assert reason.value == reason.value.lower()
    assert " " not in reason.value
    text = reason.describe()
    assert text
    assert text[0].islower()
    assert not text.endswith(".")


def test_the_codes_the_issue_asks_for_exist() -> None:
    for code in ["bad-signature", "key-peer-mismatch", "cid-mismatch", "proof-invalid", "quorum-disagreement",
                 "replayed-receipt", "expired"]:
        assert RejectReason(code).value == code


def test_verification_error_carries_the_enum() -> None:
    err = VerificationError("expired", "issued 4000 s ago")
    assert err.reason is RejectReason.EXPIRED
    assert str(err) == "expired: issued 4000 s ago"
    assert isinstance(err, PangeaError)
    assert str(VerificationError(RejectReason.BAD_SIGNATURE)) == "bad-signature"
    with pytest.raises(ValueError, match="not-a-code"):
        VerificationError("not-a-code")
