"""Fraud proofs: a proven lie, in a form any peer can check by one re-execution.

A *fraud proof* (``FraudProof``) is the liar's signed execution receipt exactly as it was received, the task
it describes (module and input content ids, chunk count and the four limits: what re-executing it needs, all
equal to what the receipt binds) and the accuser's own claim of the correct outcome (an output digest and
fuel, or a failure kind; an output digest of zero when the accuser re-ran only some chunks, as a spot check
does). A receipt is a deterministic statement — this module over this input under these limits gave this
output with this much fuel — so a peer that re-runs the task knows whether the signer lied (``judge``). Who
sent a proof is the transport's (the gossipsub author, strictly signed); a proof carries no signature of its
own, and a peer re-publishes a proof only after it verified it, so a false proof costs only its sender.

Encoding (protocols/fraud.md): ``FIXED`` (version, module digest, input digest, chunk count, limits, the
claim, the receipt's length), then the receipt bytes; nothing after them; at most ``PROOF_BYTES_MAX`` bytes.
``decode_proof`` accepts exactly what ``encode`` produces and checks, in order: size, version, layout, the
receipt's format, the task described against the receipt's binding, the receipt's signature against the key
inside its signer's peer id, that it claims a deterministic outcome within its fuel budget, and that the
claim differs from the receipt. Each rejection is a VerificationError whose message is one line.

``ProofIntake``, theory of operation: what a peer does with proofs before re-running any. State: a token
bucket per sender and one for all senders, the ids of proofs seen (bounded, each forgotten when its receipt
is too old to be offered again), the proofs being verified. ``admit(sender, data, now)``: oversized ->
rejected (the sender's fault); sender's bucket empty, then global bucket empty -> dropped; the proof does
not decode or verify -> rejected; too old or from the future -> dropped; seen already -> dropped; too many
verifications pending -> dropped (not remembered as seen, so a later copy is taken); else the proof is seen
and pending until ``done``. Invariants: at most ``pending_max`` pending; at most ``seen_max`` ids and
``senders_max`` buckets remembered; a proof id is verified at most once while it is remembered.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.checks import check_fuel, check_signature
from pangea_p2p.core.verify.config import check_range
from pangea_p2p.core.verify.format import EXECUTION_BYTES_MAX, ZERO_DIGEST, malformed
from pangea_p2p.core.verify.merkle import root_of
from pangea_p2p.core.verify.receipts import Receipt, decode_receipt
from pangea_p2p.core.verify.voting import NONDETERMINISTIC_FAILURES
from pangea_p2p.errors import ConfigError, FailureKind, RejectReason, VerificationError

TOPIC = "pangea/fraud/1"
PROOF_VERSION = 1
# version, module digest, input digest, chunk count, fuel_max, memory_bytes_max, wall_time_s, output_bytes_max,
# claimed status (0: a result, else a FailureKind), claimed output digest (zeros: not computed), claimed fuel,
# receipt length
FIXED = struct.Struct(">B32s32sIQQdQB32sQH")
PROOF_BYTES_MAX = FIXED.size + EXECUTION_BYTES_MAX


@dataclass(frozen=True)
class FraudProof:
    """A signed receipt said to be a lie, and the accuser's claim. Build with :meth:`of`, parse with
    :func:`decode_proof`."""

    receipt: Receipt
    claim_failure: FailureKind | None = None
    claim_output_digest: bytes | None = None  # None: the accuser did not compute the whole output
    claim_fuel: int = 0  # 0: not known

    @classmethod
    def of(cls, receipt: Receipt, *, output_digest: bytes | None = None, fuel_used: int = 0,
           failure: FailureKind | None = None) -> FraudProof:
        return cls(receipt, failure, output_digest, fuel_used)

    @property
    def accused(self) -> str:
        return self.receipt.worker

    @property
    def binding(self) -> TaskBinding:
        return self.receipt.binding

    @functools.cached_property
    def proof_id(self) -> bytes:
        """What dedups proofs: the receipt's digest (two accusers of one receipt make one proof)."""
        return self.receipt.digest

    def encode(self) -> bytes:
        b = self.receipt.binding
        lim = b.limits
        wire = self.receipt.wire
        return FIXED.pack(
            PROOF_VERSION, b.module_digest, b.input_digest, b.chunk_count, lim.fuel_max, lim.memory_bytes_max,
            lim.wall_time_s, lim.output_bytes_max, 0 if self.claim_failure is None else int(self.claim_failure),
            self.claim_output_digest or ZERO_DIGEST, self.claim_fuel, len(wire),
        ) + wire


def decode_proof(data: bytes | bytearray | memoryview) -> FraudProof:
    """Parse and check a proof from a peer (see the module docstring); VerificationError says what is wrong."""
    data = bytes(data)
    if len(data) > PROOF_BYTES_MAX:
        raise VerificationError(RejectReason.LIMIT_EXCEEDED,
                                f"fraud proof is {len(data)} bytes, the limit is {PROOF_BYTES_MAX}")
    if len(data) < FIXED.size:
        raise malformed(f"fraud proof is {len(data)} bytes, shorter than its fixed fields ({FIXED.size})")
    (version, module_d, input_d, chunks, fuel_max, memory_max, wall_s, output_max, status, claim_d, claim_fuel,
     length) = FIXED.unpack_from(data)
    if version != PROOF_VERSION:
        raise malformed(f"fraud proof has version {version}, this peer understands version {PROOF_VERSION}")
    if FIXED.size + length != len(data):
        raise malformed(f"fraud proof announces a {length}-byte receipt, {len(data) - FIXED.size} bytes follow")
    receipt = decode_receipt(data[FIXED.size:], "fraud proof's receipt")
    b = receipt.binding
    described = (module_d, input_d, chunks, (fuel_max, memory_max, wall_s, output_max))
    bound = (b.module_digest, b.input_digest, b.chunk_count, _limits_tuple(b.limits))
    if described != bound:
        raise VerificationError(RejectReason.BINDING_MISMATCH,
                                "fraud proof describes another task (module, input, chunks or limits) than its "
                                "receipt binds")
    check_signature(receipt.worker, receipt.public_key, receipt.body, receipt.signature, "fraud proof's receipt")
    if receipt.failure is not None and receipt.failure in NONDETERMINISTIC_FAILURES:
        raise malformed(f"fraud proof's receipt reports {receipt.failure.name}, which no re-execution can disprove")
    check_fuel(receipt.fuel_used, b.limits)
    try:
        failure = FailureKind(status) if status else None
    except ValueError:
        raise malformed(f"fraud proof claims unknown status {status}") from None
    if failure is not None and claim_d != ZERO_DIGEST:
        raise malformed(f"fraud proof claims failure {failure.name} and an output")
    proof = FraudProof(receipt, failure, None if claim_d == ZERO_DIGEST else claim_d, claim_fuel)
    if (proof.claim_output_digest is not None or failure is not None) and (
            receipt.failure, receipt.output_digest, receipt.fuel_used) == (failure, proof.claim_output_digest,
                                                                            claim_fuel):
        raise malformed("fraud proof claims exactly what its receipt says")
    return proof


def _limits_tuple(lim: ReceiptLimits) -> tuple[int, int, float, int]:
    return lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max


# --- judging a proof by one re-execution -----------------------------------------------------------------


class Verdict(enum.Enum):
    LIE_PROVEN = "lie-proven"  # this peer's run differs from the receipt: its signer lied
    FALSE_PROOF = "false-proof"  # this peer's run agrees with the receipt: the sender accused falsely
    INCONCLUSIVE = "inconclusive"  # the run here says nothing (a timeout, a crash, ...)


def judge(proof: FraudProof, outputs: list[bytes] | None, failure: FailureKind | None,
          fuel_used: int) -> tuple[Verdict, str]:
    """Compare this peer's run of the proof's task (its output chunks or failure, and fuel) with the receipt;
    the verdict and a one-line reason."""
    r = proof.receipt
    if failure is not None and failure in NONDETERMINISTIC_FAILURES:
        return Verdict.INCONCLUSIVE, f"the run here ended with {failure.name}"
    if failure is not None or r.failure is not None:
        if failure != r.failure:
            here = failure.name if failure is not None else "an output"
            there = r.failure.name if r.failure is not None else "an output"
            return Verdict.LIE_PROVEN, f"the receipt reports {there}, the run here gave {here}"
    else:
        chunks = outputs or []
        if hashlib.sha256(frame_chunks(chunks)).digest() != r.output_digest:
            return Verdict.LIE_PROVEN, "the receipt's output differs from the run here"
        if root_of(chunks) != r.output_root or len(chunks) != r.output_chunks:
            return Verdict.LIE_PROVEN, "the receipt commits to other output chunks than the run here gave"
    if fuel_used != r.fuel_used:
        return Verdict.LIE_PROVEN, f"the receipt reports fuel {r.fuel_used}, the run here used {fuel_used}"
    return Verdict.FALSE_PROOF, "the run here agrees with the receipt"


# --- intake: rate limits, dedup, pending verifications ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """How many proofs a peer takes in and verifies."""

    sender_rate_per_s: float = 0.2  # proofs per second per sender, refilled...
    sender_burst: int = 5  # ...into a bucket of this many
    global_rate_per_s: float = 2.0  # proofs per second from all senders together
    global_burst: int = 20
    pending_max: int = 4  # proofs being re-executed at once
    seen_max: int = 10_000  # proof ids remembered
    senders_max: int = 10_000  # sender buckets remembered (least recently used forgotten)
    proof_age_s_max: float = 86400.0  # a receipt older than this is not taken as a proof (nor remembered)
    clock_skew_max_s: float = 60.0

    def __post_init__(self) -> None:
        check_range("sender_rate_per_s", self.sender_rate_per_s, 0.0, 1e6)
        check_range("sender_burst", self.sender_burst, 1, 1_000_000)
        check_range("global_rate_per_s", self.global_rate_per_s, 0.0, 1e6)
        check_range("global_burst", self.global_burst, 1, 1_000_000)
        check_range("pending_max", self.pending_max, 1, 1024)
        check_range("seen_max", self.seen_max, 1, 10_000_000)
        check_range("senders_max", self.senders_max, 1, 10_000_000)
        check_range("proof_age_s_max", self.proof_age_s_max, 1.0, 365 * 86400.0)
        check_range("clock_skew_max_s", self.clock_skew_max_s, 0.0, 3600.0)
        for name in ("sender_burst", "global_burst", "pending_max", "seen_max", "senders_max"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be an integer, got {getattr(self, name)!r}")


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; ``take(now)`` spends one if there is one."""

    __slots__ = ("at", "burst", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> bool:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate_per_s)
            self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ProofIntake:
    """Which proofs a peer re-executes (see the module docstring)."""

    __slots__ = ("_global", "_seen", "_senders", "config", "pending")

    def __init__(self, config: FraudConfig | None = None) -> None:
        self.config = config or FraudConfig()
        self._senders: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global: TokenBucket | None = None
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # proof id -> when it may be forgotten
        self.pending: set[bytes] = set()

    def admit(self, sender: str, data: bytes, now: float) -> FraudProof | str:
        """The proof to verify, or why it is dropped (not the sender's fault); VerificationError when the
        proof is bad (the sender's fault)."""
        cfg = self.config
        if len(data) > PROOF_BYTES_MAX:
            raise VerificationError(RejectReason.LIMIT_EXCEEDED,
                                    f"fraud proof is {len(data)} bytes, the limit is {PROOF_BYTES_MAX}")
        if not self._bucket(sender, now).take(now):
            return f"rate limited: {sender} sends more than {cfg.sender_rate_per_s}/s"
        if self._global is None:
            self._global = TokenBucket(cfg.global_rate_per_s, cfg.global_burst, now)
        if not self._global.take(now):
            return f"rate limited: more than {cfg.global_rate_per_s} proofs/s from all senders"
        proof = decode_proof(data)
        issued = proof.receipt.issued_at_s
        if issued < now - cfg.proof_age_s_max:
            return f"stale: the receipt was issued {now - issued:.0f} s ago, the limit is {cfg.proof_age_s_max:.0f} s"
        if issued > now + cfg.clock_skew_max_s:
            return f"the receipt is dated {issued - now:.0f} s in the future"
        self._expire(now)
        pid = proof.proof_id
        if self.known(pid):
            return "seen already"
        if len(self.pending) >= cfg.pending_max:
            return f"busy: {len(self.pending)} proofs are being verified already"
        self.seen(pid, issued + cfg.proof_age_s_max)
        self.pending.add(pid)
        return proof

    def known(self, proof_id: bytes) -> bool:
        """Whether ``proof_id`` was seen (and is still remembered) or is being verified."""
        return proof_id in self._seen or proof_id in self.pending

    def seen(self, proof_id: bytes, until: float) -> None:
        """Remember ``proof_id`` (a proof taken in, or one this peer made) until ``until``."""
        self._seen[proof_id] = until
        self._seen.move_to_end(proof_id)
        while len(self._seen) > self.config.seen_max:
            self._seen.popitem(last=False)

    def done(self, proof_id: bytes) -> None:
        """The verification of ``proof_id`` ended (whatever its verdict)."""
        self.pending.discard(proof_id)

    def _bucket(self, sender: str, now: float) -> TokenBucket:
        bucket = self._senders.get(sender)
        if bucket is None:
            cfg = self.config
            bucket = self._senders[sender] = TokenBucket(cfg.sender_rate_per_s, cfg.sender_burst, now)
            while len(self._senders) > cfg.senders_max:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(sender)
        return bucket

    def _expire(self, now: float) -> None:
        seen = self._seen
        # ids are mostly added in order of expiry; stop at the first one still live (a bound, not exactness)
        while seen:
            pid, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[pid]
