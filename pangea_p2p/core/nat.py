"""Reachability (is this peer publicly dialable?) and the choice of circuit relays for a peer that is not.

Theory of operation
-------------------
*Reachability* is learned from dial-back evidence, as AutoNAT does: a peer asks peers it knows to dial its
listen addresses back; each answer is a ``DialBack(dialer, ok)``. The model keeps the newest answer of each
distinct dialer (bounded by ``evidence_max``, oldest out) and forgets answers older than ``evidence_ttl_s``.
From the fresh answers:

- no answer, or as many successes as failures with none newer breaking the tie: ``UNKNOWN``;
- more successes than failures: ``PUBLIC``; more failures: ``PRIVATE`` (ties: the newest answer decides);
- *confidence* is how many distinct dialers agree with the status, capped at ``confidence_max`` (go-libp2p's
  AutoNAT counts to 3 the same way), 0 when unknown.

One dialer counts once however often it answers, so one peer cannot talk a peer into or out of being public.
States: UNKNOWN -> (answers) -> PUBLIC | PRIVATE -> (answers expire) -> UNKNOWN. ``next_probe_at`` says when
to ask again: soon (``probe_interval_unknown_s``) while unknown or unsure, else ``probe_interval_s``.

*Relays.* A private peer keeps reservations on ``relays_wanted`` relays. Candidates come from the capacity
directory: peers whose advert says they are publicly reachable and have a free relay reservation slot
(``relay_slots_free`` > 0), not this peer, trusted at least ``trust_floor``, not cooling down after a failed
reservation. ``RelayBook.plan(candidates, now)`` returns what to do: drop a relay that went away (its advert
expired, it stopped offering relay service or lost its public address), renew a reservation that expires
within ``renew_before_s``, and reserve on the best new candidates until ``relays_wanted`` are held (best: lowest
round-trip time, shortened by trust, ties by peer id). Relays already held are kept while they qualify, even
if a better one appears: moving costs a reservation and changes the advertised addresses.

*Relay service.* ``reservation_refusal`` is a relay's rule for granting a slot: live reservations only, at most
``reservations_max``, and at most ``per_ip_max`` from one IP address.

*Circuit addresses of others.* A peer that never saw another's advert learns its circuit addresses from identify
or a DHT answer: ``circuit_addrs_of`` picks the ones to dial it through, and only those that are its own.

Time is a parameter (``now``, unix seconds); nothing here reads a clock or touches the network.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pangea_p2p.core.capacity import CapacityAdvert
from pangea_p2p.core.verify.fraud import TokenBucket
from pangea_p2p.errors import ConfigError


class Reachability(enum.StrEnum):
    """Whether other peers can open connections to this one (what the advert and `pangea id` show)."""

    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


class Link(enum.StrEnum):
    """How a connection to a worker is made (what the scheduler needs to know about it)."""

    DIRECT = "direct"  # we dialed it (or it dialed us) without help
    RELAYED = "relayed"  # through a circuit relay: limited bytes and duration
    HOLE_PUNCHED = "hole-punched"  # a relayed connection upgraded to a direct one by DCUtR
    UNREACHABLE = "unreachable"  # (scheduler only) private, no relay address yet, not connected: cannot be dialed


@dataclass(frozen=True, slots=True)
class ReachabilityConfig:
    evidence_max: int = 16  # distinct dialers remembered
    evidence_ttl_s: float = 900.0  # an answer counts this long
    confidence_max: int = 3
    probe_interval_s: float = 300.0  # ask again this often once sure
    probe_interval_unknown_s: float = 15.0  # ... and this often while unknown or below full confidence

    def __post_init__(self) -> None:
        if not 1 <= self.evidence_max <= 1024:
            raise ConfigError("nat.evidence_max", f"must be in 1..1024, got {self.evidence_max}")
        if not 1.0 <= self.evidence_ttl_s <= 86400.0:
            raise ConfigError("nat.evidence_ttl_s", f"must be in 1..86400 seconds, got {self.evidence_ttl_s}")
        if not 1 <= self.confidence_max <= self.evidence_max:
            raise ConfigError("nat.confidence_max", f"must be in 1..evidence_max, got {self.confidence_max}")
        if not 0.1 <= self.probe_interval_unknown_s <= self.probe_interval_s <= 86400.0:
            raise ConfigError(
                "nat.probe_interval_s",
                f"need 0.1 <= probe_interval_unknown_s <= probe_interval_s <= 86400, got "
                f"{self.probe_interval_unknown_s} and {self.probe_interval_s}",
            )


class ReachabilityModel:
    """This peer's reachability from dial-back answers (see the module docstring)."""

    def __init__(self, config: ReachabilityConfig | None = None) -> None:
        self.config = config or ReachabilityConfig()
        self._answers: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # dialer -> (ok, at), oldest first
        self._last_probe_at: float | None = None

    def observe(self, dialer: str, ok: bool, now: float) -> None:
        """``dialer`` tried to dial this peer back at ``now``: ``ok`` if it got through."""
        self._answers.pop(dialer, None)
        self._answers[dialer] = (ok, now)
        while len(self._answers) > self.config.evidence_max:
            self._answers.popitem(last=False)

    def forget(self) -> None:
        """Our addresses changed (a port mapping came or went): earlier answers say nothing about the new ones,
        and a probe is due at once."""
        self._answers.clear()
        self._last_probe_at = None

    def probed(self, now: float) -> None:
        """A round of dial-back requests went out at ``now``."""
        self._last_probe_at = now

    def _fresh(self, now: float) -> list[tuple[bool, float]]:
        horizon = now - self.config.evidence_ttl_s
        for dialer in [d for d, (_, at) in self._answers.items() if at <= horizon]:
            del self._answers[dialer]
        return list(self._answers.values())

    def status(self, now: float) -> Reachability:
        fresh = self._fresh(now)
        ok = sum(1 for good, _ in fresh if good)
        failed = len(fresh) - ok
        if not fresh:
            return Reachability.UNKNOWN
        if ok != failed:
            return Reachability.PUBLIC if ok > failed else Reachability.PRIVATE
        newest_ok = max(fresh, key=lambda a: a[1])[0]
        return Reachability.PUBLIC if newest_ok else Reachability.PRIVATE

    def confidence(self, now: float) -> int:
        """How many distinct dialers agree with ``status(now)`` (0 when unknown), at most ``confidence_max``."""
        status = self.status(now)
        if status is Reachability.UNKNOWN:
            return 0
        want = status is Reachability.PUBLIC
        return min(self.config.confidence_max, sum(1 for good, _ in self._fresh(now) if good == want))

    def next_probe_at(self, now: float) -> float:
        """When to send the next round of dial-back requests (``now`` if one is due)."""
        if self._last_probe_at is None:
            return now
        sure = self.confidence(now) >= self.config.confidence_max
        interval = self.config.probe_interval_s if sure else self.config.probe_interval_unknown_s
        return max(now, self._last_probe_at + interval)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    relays_wanted: int = 2
    reservation_ttl_s: float = 3600.0  # what a relay grants (circuit relay v2's default is one hour)
    renew_before_s: float = 300.0  # renew a reservation this long before it ends
    failure_cooldown_s: float = 60.0  # a relay that refused or could not be reached is not tried for this long
    trust_floor: float = -10.0
    trust_weight: float = 0.02  # like the scheduler's: one point of trust shortens the rtt by 2 %
    rtt_unknown_s: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.relays_wanted <= 8:
            raise ConfigError("relay.relays_wanted", f"must be in 1..8, got {self.relays_wanted}")
        if not 10.0 <= self.reservation_ttl_s <= 86400.0:
            raise ConfigError("relay.reservation_ttl_s", f"must be in 10..86400 seconds, got {self.reservation_ttl_s}")
        if not 0.0 <= self.renew_before_s < self.reservation_ttl_s:
            raise ConfigError("relay.renew_before_s", f"must be in 0..reservation_ttl_s, got {self.renew_before_s}")
        if not 0.0 <= self.failure_cooldown_s <= 86400.0:
            raise ConfigError("relay.failure_cooldown_s", f"must be in 0..86400 seconds, got {self.failure_cooldown_s}")


@dataclass(frozen=True, slots=True)
class RelayCandidate:
    """A peer that offers relay service, as the directory and our measurements describe it."""

    peer_id: str
    addrs: tuple[str, ...]  # its public addresses (without /p2p/)
    rtt_s: float | None = None
    trust: float = 0.0


def relay_candidates(adverts: Iterable[CapacityAdvert], self_id: str, rtt_s: dict[str, float] | None = None,
                     trust: dict[str, float] | None = None) -> list[RelayCandidate]:
    """The peers of ``adverts`` that offer relay service now: public, with an address and a free slot."""
    rtts, trusts = rtt_s or {}, trust or {}
    out = []
    for a in adverts:
        cap = a.capacity
        if a.peer_id == self_id or cap.reachability != Reachability.PUBLIC.value:
            continue
        if cap.relay_slots_free <= 0 or not cap.addrs:
            continue
        out.append(RelayCandidate(a.peer_id, cap.addrs, rtts.get(a.peer_id), trusts.get(a.peer_id, 0.0)))
    return out


CIRCUIT_ADDRS_MAX = 16  # circuit addresses of one peer dialed (the advert carries at most 16 too)


def circuit_addrs_of(peer_id: str, addrs: Iterable[str], limit: int = CIRCUIT_ADDRS_MAX) -> list[str]:
    """The circuit addresses to dial ``peer_id`` through, from addresses some source gives for it (identify, a DHT
    answer): each ``<relay addr>/p2p/<relay>/p2p-circuit``, ending in ``/p2p/<peer_id>`` or completed with it.
    One that ends in another peer's id, or names no relay, is not a way to ``peer_id`` and is left out. In the
    given order, without duplicates, at most ``limit``."""
    out: list[str] = []
    for addr in addrs:
        head, sep, tail = addr.rpartition("/p2p-circuit")
        if not sep or "/p2p/" not in head or tail not in ("", f"/p2p/{peer_id}"):
            continue
        full = f"{head}/p2p-circuit/p2p/{peer_id}"
        if full not in out:
            out.append(full)
            if len(out) >= limit:
                break
    return out


@dataclass(frozen=True, slots=True)
class CircuitLimit:
    """What one circuit through a relay may use before the relay closes it (circuit relay v2's ``Limit``)."""

    duration_s: int = 0  # seconds from its opening (0: not stated)
    bytes: int = 0  # bytes, both directions (0: not stated)


def reservation_refusal(peer: str, ip: str | None, held: Mapping[str, str | None], reservations_max: int,
                        per_ip_max: int) -> str | None:
    """Why a relay refuses a reservation to ``peer`` connected from ``ip`` (None: it grants it; ``ip`` None: the
    peer holds no direct connection to the relay, and a reservation over a relayed one is refused, as go-libp2p
    does). ``held``: the live reservations (peer -> the IP it is connected from; a reservation lives as long as
    that connection).
    A peer renewing its own reservation is never refused. One address cannot take more than ``per_ip_max``
    slots: without that cap, one machine with ``reservations_max`` keys (they cost nothing) fills the relay for
    the reservation's hour and the private peers that need it find no slot (go-libp2p caps per IP as well)."""
    if ip is None:
        return "a reservation needs a direct connection to the relay"
    if peer in held:
        return None
    if len(held) >= reservations_max:
        return f"all {reservations_max} reservation slots are taken"
    if sum(1 for other in held.values() if other == ip) >= per_ip_max:
        return f"{per_ip_max} reservations are held from {ip} already"
    return None


@dataclass(frozen=True, slots=True)
class DialBackConfig:
    """What an AutoNAT server spends on dial-back requests (go-libp2p's AutoNAT v1 server allows 3 per peer per
    90 s, 30 per minute in all). Each one costs a connection and a handshake; without a budget, requests from one
    address (each dial goes only to the requester's own address, so nobody else is hit) keep this peer dialing
    and handshaking as fast as they arrive."""

    per_ip_burst: int = 8  # more than go-libp2p's 3: peers behind one office NAT share an address, and pangea
    per_ip_rate_per_s: float = 0.1  # ... probes every 15 s while unsure
    global_burst: int = 60
    global_rate_per_s: float = 1.0
    addrs_max: int = 8  # addresses tried per request (the rest are ignored)
    ips_max: int = 4096  # requester addresses remembered (least recent out)


class DialBackThrottle:
    """Whether to serve a dial-back request from ``ip`` now: a token bucket per requesting IP address and one
    for all of them together (see ``DialBackConfig``)."""

    def __init__(self, config: DialBackConfig | None = None) -> None:
        self.config = config or DialBackConfig()
        self._ips: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global: TokenBucket | None = None

    def refusal(self, ip: str | None, now: float) -> str | None:
        """None: serve it (its tokens are spent); else why not. ``ip`` None: the request is not counted per
        address (the driver passes None for loopback: a flood from this machine is no remote attack, and local
        test networks put every peer on 127.0.0.1), only in all."""
        cfg = self.config
        if self._global is None:
            self._global = TokenBucket(cfg.global_rate_per_s, cfg.global_burst, now)
        if ip is not None:
            bucket = self._ips.pop(ip, None) or TokenBucket(cfg.per_ip_rate_per_s, cfg.per_ip_burst, now)
            self._ips[ip] = bucket
            while len(self._ips) > cfg.ips_max:
                self._ips.popitem(last=False)
            if not bucket.take(now):
                return f"more than {cfg.per_ip_burst} dial-back requests from {ip} lately"
        if not self._global.take(now):
            return "too many dial-back requests lately"
        return None


# What our relays grant per circuit unless configured otherwise (nat.relay_circuit_duration_s / _bytes_max), and
# what the scheduler assumes of a relay whose limits a worker's advert does not state.
CIRCUIT_DEFAULT = CircuitLimit(600, 64 << 20)


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """What to do about relays now. ``reserve`` and ``renew`` are candidates (with addresses), best first."""

    drop: tuple[str, ...] = ()
    renew: tuple[RelayCandidate, ...] = ()
    reserve: tuple[RelayCandidate, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.drop or self.renew or self.reserve)


class RelayBook:
    """The relays this peer holds reservations on, and the ones that failed lately (see the module docstring)."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = config or RelayConfig()
        self._held: dict[str, tuple[float, tuple[str, ...]]] = {}  # relay -> (reservation ends, its addrs)
        self._limits: dict[str, CircuitLimit] = {}  # relay -> the circuit limit its reservation granted
        self._cooling: dict[str, float] = {}  # relay -> not before
        self._pending: set[str] = set()  # reservation requests out

    def held(self) -> list[str]:
        return sorted(self._held)

    def relay_addrs(self, self_id: str) -> list[str]:
        """The circuit addresses other peers dial to reach this peer through its relays."""
        return [f"{addr}/p2p/{relay}/p2p-circuit/p2p/{self_id}"
                for relay, (_, addrs) in sorted(self._held.items()) for addr in addrs]

    def circuit_limit(self) -> CircuitLimit:
        """The least lifetime and byte budget of a circuit through any relay held, of those that stated one
        (what the advert states: a dialer may come through any of them); 0 where none did."""
        limits = [self._limits.get(r, CircuitLimit()) for r in self._held]
        return CircuitLimit(min((lim.duration_s for lim in limits if lim.duration_s), default=0),
                            min((lim.bytes for lim in limits if lim.bytes), default=0))

    def plan(self, candidates: list[RelayCandidate], now: float) -> RelayPlan:
        """Drops, renewals and new reservations due at ``now``; marks the new ones pending."""
        cfg = self.config
        usable = {c.peer_id: c for c in candidates
                  if c.trust >= cfg.trust_floor and self._cooling.get(c.peer_id, now) <= now}
        drop = tuple(r for r, (ends, _) in sorted(self._held.items()) if r not in usable or ends <= now)
        for relay in drop:
            del self._held[relay]
            self._limits.pop(relay, None)
        renew = tuple(usable[r] for r, (ends, _) in sorted(self._held.items())
                      if ends - cfg.renew_before_s <= now and r not in self._pending)
        wanted = cfg.relays_wanted - len(self._held) - len(self._pending - set(self._held))
        fresh = [c for c in usable.values() if c.peer_id not in self._held and c.peer_id not in self._pending]
        fresh.sort(key=lambda c: (self._score(c), c.peer_id))
        reserve = tuple(fresh[: max(0, wanted)])
        self._pending.update(c.peer_id for c in (*renew, *reserve))
        return RelayPlan(drop, renew, reserve)

    def _score(self, c: RelayCandidate) -> float:
        rtt = self.config.rtt_unknown_s if c.rtt_s is None else c.rtt_s
        return rtt / (1.0 + self.config.trust_weight * max(c.trust, 0.0))

    def release(self) -> None:
        """This peer became public (e.g. a UPnP port mapping made it reachable): it no longer advertises relay
        addresses, which dialers would prefer to its direct ones; the relays let the reservations lapse."""
        self._held.clear()
        self._limits.clear()
        self._pending.clear()

    def reserved(self, relay: RelayCandidate, expires_at: float, now: float,
                 limit: CircuitLimit | None = None) -> None:
        """A reservation on ``relay`` was granted (or renewed) until ``expires_at``, its circuits limited by
        ``limit`` (None: the relay stated none)."""
        self._pending.discard(relay.peer_id)
        self._cooling.pop(relay.peer_id, None)
        self._held[relay.peer_id] = (min(expires_at, now + self.config.reservation_ttl_s), relay.addrs)
        self._limits[relay.peer_id] = limit or CircuitLimit()

    def failed(self, relay: str, now: float) -> None:
        """A reservation request to ``relay`` failed, or the relay went away: find another, retry it later."""
        self._pending.discard(relay)
        self._held.pop(relay, None)
        self._limits.pop(relay, None)
        self._cooling[relay] = now + self.config.failure_cooldown_s
        for r in [r for r, t in self._cooling.items() if t <= now]:
            del self._cooling[r]

    def next_deadline(self) -> float | None:
        """When a held reservation needs renewing, or a cooled-down relay may be tried again."""
        times = [ends - self.config.renew_before_s for ends, _ in self._held.values()]
        times += list(self._cooling.values())
        return min(times, default=None)
