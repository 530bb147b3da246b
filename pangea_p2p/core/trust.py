"""Local trust scores and the adaptive replication policy they drive.

Every peer keeps its own book of the workers it has dealt with, fed only by *verified* outcomes: a result
that won a vote (VALID), a result this peer's own re-execution agreed with — a spot check or an audit passed,
an outvoted answer vindicated (CONFIRMED, VINDICATED) —, a result that came with a forged or unverifiable
receipt (INVALID), a result that lost a vote (OUTVOTED: weak evidence, since colluders can outvote the honest),
a signed result that this peer's own deterministic re-execution contradicts (PROVEN_LIE: strong evidence,
nobody can fake it), a replica that never answered (TIMEOUT). Results accepted without any check must not be
reported as VALID, or a worker could build trust on work nobody looked at (BOINC counts only replicated jobs
for the same reason).

TrustBook, theory of operation.
  State per peer: a score, the length of its current run of valid results, counts, and the time of the last
  update. ``record(peer, outcome, now)`` first decays the score toward 0 with half-life ``half_life_s``
  (old behaviour fades, both ways), then: VALID adds ``valid_gain`` and extends the run; INVALID drops the
  score to ``min(score, 0) - invalid_penalty`` and resets the run to 0 (sharp: one wrong result wipes every
  credit); TIMEOUT subtracts ``timeout_penalty`` and leaves the run alone (slow is not wrong); OUTVOTED
  subtracts ``outvote_penalty`` and resets the run (the peer's next tasks are checked again); PROVEN_LIE
  drops the score to ``score_min`` and resets the run; CONFIRMED is VALID and adds one to ``proven`` (results
  this peer re-executed itself and found right: what the audit rate falls with); VINDICATED is CONFIRMED for
  an answer that had been OUTVOTED: it gives the outvote's penalty back.
  The run does not decay: it counts checked work, and only a wrong result ends it. The counts of each kind of
  evidence are fields of the record (``PeerRecord``).
  Invariants: ``score_min <= score <= score_max``; at most ``peers_max`` peers are kept, the least recently
  updated forgotten first — a forgotten peer is just a new peer again, which any peer can become anyway by
  making a new key, so forgetting gives an attacker nothing a fresh identity would not.
  Persistence is the driver's: ``export_rows`` gives every record as plain data (each ``PeerRecord`` field,
  whatever fields it has), ``load_rows`` takes them back, forgiving unknown, missing and malformed fields.
  ``version`` moves on every change and ``strong_version`` when a peer falls below ``suspect_score``
  (a driver saves soon after that, and at a bounded rate otherwise: node/trust_store.py).

ReplicationPolicy decides per task, from the primary worker's record (BOINC adaptive replication, with this
peer's audits as the check of unreplicated work, core/jobs/audits.py):
  - score below ``suspect_score`` (a worker outvoted repeatedly, timing out, or worse): ``replicas_suspect``
    replicas, majority quorum;
  - otherwise the task runs once, and its accepted result may be audited: re-run here, drawn after it was
    committed, at a rate that falls as the worker's confirmed record with this peer grows and never reaches
    zero, within a budget per accepted result (``audit_budget``, more per liar proven). So when no one lies the
    total work is at most 1 + ``audit_budget`` single executions; a liar found costs everything it signed here
    (backtracking) and drops below the trust floor for good.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from pangea_p2p.core.verify.config import check_range, config_from_mapping
from pangea_p2p.core.verify.voting import quorum_for
from pangea_p2p.errors import ConfigError

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Mapping


class Outcome(enum.Enum):
    VALID = "valid"  # won a vote
    INVALID = "invalid"  # a forged, malformed or unverifiable answer
    TIMEOUT = "timeout"
    OUTVOTED = "outvoted"  # lost a vote: weak evidence (colluders can outvote an honest worker)
    PROVEN_LIE = "proven_lie"  # this peer's own deterministic re-execution contradicts its signed result
    CONFIRMED = "confirmed"  # this peer's own re-execution agrees with its result (spot check, audit)
    VINDICATED = "vindicated"  # an answer of it that lost a vote was proven right after all


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """Scores, decay and the replication policy."""

    valid_gain: float = 1.0
    invalid_penalty: float = 20.0
    timeout_penalty: float = 0.5
    score_min: float = -100.0
    score_max: float = 100.0
    half_life_s: float = 7 * 86400.0
    peers_max: int = 100_000
    suspect_score: float = -5.0
    replicas_suspect: int = 3
    outvote_penalty: float = 2.0  # losing a vote (weak evidence)
    audit_rate_new: float = 1.0  # chance that a result of a worker with no confirmed record is audited
    audit_rate_min: float = 0.02  # ... and the floor it falls to as its confirmed record grows
    audit_proven_half: float = 2.0  # confirmed results at which the audit rate is half of audit_rate_new
    audit_budget: float = 0.28  # re-executions drawn audits may spend per accepted result (jobs.audits.AuditBudget)
    audit_budget_per_liar: float = 20.0  # ... and this many more re-executions for each liar proven here

    def __post_init__(self) -> None:
        check_range("valid_gain", self.valid_gain, 0.0, 1e6)
        check_range("invalid_penalty", self.invalid_penalty, 0.0, 1e6)
        check_range("timeout_penalty", self.timeout_penalty, 0.0, 1e6)
        check_range("score_min", self.score_min, -1e9, 0.0)
        check_range("score_max", self.score_max, 0.0, 1e9)
        check_range("half_life_s", self.half_life_s, 1.0, 1e10)
        check_range("peers_max", self.peers_max, 1, 10_000_000)
        check_range("suspect_score", self.suspect_score, self.score_min, 0.0)
        check_range("replicas_suspect", self.replicas_suspect, 1, 64)
        check_range("outvote_penalty", self.outvote_penalty, 0.0, 1e6)
        check_range("audit_rate_new", self.audit_rate_new, 0.0, 1.0)
        check_range("audit_rate_min", self.audit_rate_min, 0.0, self.audit_rate_new)
        check_range("audit_proven_half", self.audit_proven_half, 0.001, 1e9)
        check_range("audit_budget", self.audit_budget, 0.0, 64.0)
        check_range("audit_budget_per_liar", self.audit_budget_per_liar, 0.0, 1e6)
        for name in ("peers_max", "replicas_suspect"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(name, f"must be an integer, got {value!r}")

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], prefix: str = "trust") -> TrustConfig:
        return config_from_mapping(cls, section, prefix)


_GOOD = frozenset({Outcome.VALID, Outcome.CONFIRMED, Outcome.VINDICATED})


@dataclass(slots=True)
class PeerRecord:
    score: float = 0.0
    run: int = 0  # consecutive verified valid results since the last invalid one
    valid: int = 0  # results verified right (won a vote, confirmed, vindicated)
    invalid: int = 0  # forged, malformed or unverifiable answers
    timeouts: int = 0
    updated_s: float = 0.0
    outvoted: int = 0  # votes lost and not vindicated since
    lies: int = 0  # proven lies: signed results this peer's own re-execution contradicted
    proven: int = 0  # results this peer's own re-execution confirmed (what the audit rate falls with)
    vindicated: int = 0  # lost votes proven right after all


TIME_FIELDS = frozenset({"updated_s"})  # PeerRecord fields that are instants on the clock of ``now``
PEER_ID_CHARS_MAX = 256
Row = tuple[str, dict[str, object]]  # (peer, {PeerRecord field: value}): what export_rows gives, load_rows takes


class TrustBook:
    """Local trust scores per peer (see the module docstring)."""

    __slots__ = ("_peers", "config", "outcomes", "strong_version", "version")

    def __init__(self, config: TrustConfig | None = None) -> None:
        self.config = config or TrustConfig()
        self._peers: OrderedDict[str, PeerRecord] = OrderedDict()
        self.version = 0  # bumped by every change
        self.strong_version = 0  # bumped when a change takes a peer below suspect_score
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)  # outcomes recorded since it was made

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer: str) -> bool:
        return peer in self._peers

    def record(self, peer: str, outcome: Outcome, now: float) -> PeerRecord:
        """Feed one verified outcome; returns the peer's updated record (a copy)."""
        cfg = self.config
        self.outcomes[outcome] += 1
        rec = self._peers.get(peer)
        if rec is None:
            rec = PeerRecord(updated_s=now)
            self._peers[peer] = rec
            while len(self._peers) > cfg.peers_max:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        rec.score = self._decayed(rec, now)
        rec.updated_s = max(rec.updated_s, now)
        if outcome in _GOOD:
            rec.score += cfg.valid_gain
            rec.run += 1
            rec.valid += 1
            if outcome is not Outcome.VALID:
                rec.proven += 1
            if outcome is Outcome.VINDICATED and rec.outvoted > 0:
                rec.outvoted -= 1
                rec.vindicated += 1
                rec.score += cfg.outvote_penalty
        elif outcome is Outcome.INVALID:
            rec.score = min(rec.score, 0.0) - cfg.invalid_penalty
            rec.run = 0
            rec.invalid += 1
        elif outcome is Outcome.OUTVOTED:
            rec.score -= cfg.outvote_penalty
            rec.run = 0
            rec.outvoted += 1
        elif outcome is Outcome.PROVEN_LIE:
            rec.score = cfg.score_min
            rec.run = 0
            rec.lies += 1
        else:
            rec.score -= cfg.timeout_penalty
            rec.timeouts += 1
        rec.score = min(cfg.score_max, max(cfg.score_min, rec.score))
        self.version += 1
        if outcome is not Outcome.VALID and rec.score < cfg.suspect_score:
            self.strong_version += 1
        return replace(rec)

    def score(self, peer: str, now: float) -> float:
        """The peer's score decayed to ``now``; 0 for a peer never seen."""
        rec = self._peers.get(peer)
        return 0.0 if rec is None else self._decayed(rec, now)

    def run(self, peer: str) -> int:
        """Consecutive verified valid results of ``peer`` since its last invalid one."""
        rec = self._peers.get(peer)
        return 0 if rec is None else rec.run

    def lies(self, peer: str) -> int:
        """Proven lies of ``peer`` on record here."""
        rec = self._peers.get(peer)
        return 0 if rec is None else rec.lies

    def peers(self) -> list[str]:
        """Every peer with a record, least recently updated first."""
        return list(self._peers)

    def get(self, peer: str) -> PeerRecord | None:
        rec = self._peers.get(peer)
        return None if rec is None else replace(rec)

    def audit_probability(self, peer: str) -> float:
        """The chance that an accepted result of ``peer`` is audited (re-executed here): see the module
        docstring. 1 for a peer with a proven lie on record."""
        cfg = self.config
        rec = self._peers.get(peer)
        proven = 0 if rec is None else rec.proven
        if self.lies(peer):
            return 1.0
        half = cfg.audit_proven_half
        return max(cfg.audit_rate_min, cfg.audit_rate_new * half / (half + proven))

    def rank(self, peers: Iterable[str], now: float) -> list[str]:
        """``peers`` by decreasing score (ties by peer id, so the order is deterministic)."""
        return sorted(peers, key=lambda p: (-self.score(p, now), p))

    def export_rows(self) -> list[Row]:
        """Every record as plain data, least recently updated first (``TIME_FIELDS`` on the clock of ``now``)."""
        return [(peer, {f.name: getattr(rec, f.name) for f in fields(PeerRecord)}) for peer, rec in self._peers.items()]

    def load_rows(self, rows: Iterable[Row]) -> int:
        """Replace the book by ``rows`` (as ``export_rows`` gives them, from a file: not trusted). Unknown fields
        are ignored and missing ones take their defaults; a row with a bad peer id or a field that is not a
        finite number (a negative count) is skipped; scores are clamped to the configured range; at most
        ``peers_max`` rows are kept, the most recently updated. Returns how many records were loaded."""
        cfg = self.config
        loaded: list[tuple[str, PeerRecord]] = []
        for peer, values in rows:
            rec = _record_from(values)
            if rec is not None and isinstance(peer, str) and 0 < len(peer) <= PEER_ID_CHARS_MAX:
                rec.score = min(cfg.score_max, max(cfg.score_min, rec.score))
                loaded.append((peer, rec))
        loaded.sort(key=lambda item: item[1].updated_s)
        self._peers = OrderedDict(loaded[-cfg.peers_max:])
        self.version += 1
        return len(self._peers)

    def _decayed(self, rec: PeerRecord, now: float) -> float:
        elapsed = now - rec.updated_s
        if elapsed <= 0.0:
            return rec.score
        return rec.score * float(0.5 ** (elapsed / self.config.half_life_s))


def _record_from(values: object) -> PeerRecord | None:
    """A PeerRecord from a row's values; None if one of them is malformed."""
    if not isinstance(values, dict):
        return None
    rec = PeerRecord()
    for f in fields(PeerRecord):
        value = values.get(f.name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        if isinstance(getattr(rec, f.name), int):
            if value < 0 or value != int(value):
                return None
            value = int(value)
        setattr(rec, f.name, value)
    return rec


@dataclass(frozen=True, slots=True)
class Plan:
    """How to verify one task: run it on ``replicas`` workers needing ``quorum`` to agree, then spot-check
    ``spot_checks`` chunks of the accepted output. ``why`` explains the choice to a user."""

    replicas: int
    quorum: int
    spot_checks: int
    why: str


class ReplicationPolicy:
    """Per-task replication decisions from a TrustBook (see the module docstring)."""

    __slots__ = ("book", "config")

    def __init__(self, book: TrustBook) -> None:
        self.book = book
        self.config = book.config

    def plan(self, worker: str, now: float, rng: random.Random, *, chunks: int = 0, replicas_max: int = 64) -> Plan:
        """The plan for a task whose primary worker is ``worker`` (see the module docstring: a suspect's task is
        voted on, any other runs once and may be audited; ``rng`` and ``chunks`` are not needed by it)."""
        cfg = self.config
        score = self.book.score(worker, now)
        if score < cfg.suspect_score:
            n = min(cfg.replicas_suspect, replicas_max)
            return Plan(n, quorum_for(n), 0, f"score {score:.1f} is below {cfg.suspect_score}: suspect")
        rec = self.book.get(worker)
        proven = rec.proven if rec is not None else 0
        return Plan(1, 1, 0, f"runs once ({proven} result(s) confirmed here so far; its result may be audited)")
