"""Capacity adverts and the capacity directory.

Theory of operation
-------------------
Every peer periodically publishes a *signed capacity advert* (what it can run now: cores, free memory, free
task slots, measured speed, the sandbox limits it accepts, its addresses) on a gossipsub topic. Each peer keeps
a ``CapacityDirectory``: the newest unexpired advert of every peer, which the scheduler reads to pick workers.

An advert is accepted into the directory only if all of these hold (else it is rejected with a
``AdvertRejection`` reason, counted, and the directory is unchanged):

1. it decodes, within ``advert_bytes_max``, and its wire version is supported;
2. the public key it carries is the one inside its peer id, and the ed25519 signature over
   ``SIGNING_TAG || body`` verifies;
3. the peer that published it on gossipsub (the pubsub ``from`` field, itself signed by gossipsub) is the
   advert's author: nobody re-publishes another peer's advert as their own;
4. its sequence number is greater than that of every advert already accepted from that peer (a replayed or
   reordered old advert is stale) — except that the very advert already listed, byte for byte, is accepted
   again as a no-op (gossip and a directory sync both deliver it; that is not an offence);
5. it is not expired, not issued in the future beyond ``clock_skew_s_max``, its lifetime is at most
   ``ttl_s_max``, and it was issued at least ``interval_s_min`` after the previous accepted one from that peer
   (by the author's signed ``issued_at``, so delivery jitter and copies passed on by other peers do not
   matter; with the future-skew bound this caps every author at one advert per ``interval_s_min``);
6. every value is plausible (``_check_values``): no zero cores, no free slots above total, no speed of 1e15
   fuel/s, no 10 KiB version string.

States per peer: *unknown* → (accepted advert) → *listed* → (expires_at passes; ``expire(now)``) → *unknown*,
except that the highest sequence number seen is remembered for ``ttl_s_max`` after expiry so a replay of an
old advert is still recognised as stale. The directory holds at most ``peers_max`` peers.

Time is a parameter (``now``, unix seconds of the local clock); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from pangea_p2p.core.identity import Identity, peer_id_from_public_key, verify_signature
from pangea_p2p.errors import ConfigError, PangeaError
from pangea_p2p.wire import capacity_pb2

TOPIC = "pangea/capacity/1"
WIRE_VERSION = 1
SIGNING_TAG = b"pangea-capacity-advert-v1\x00"

CORES_MAX = 4096
TASK_SLOTS_MAX = 4096
MEMORY_BYTES_MAX = 1 << 50  # 1 PiB
SPEED_FUEL_PER_S_MAX = 1e12  # wasmtime runs ~1e9 fuel/s per core; 1000x that is a lie
FUEL_MAX = 10**15
WALL_TIME_S_MAX = 7 * 24 * 3600.0
SOFTWARE_VERSION_CHARS_MAX = 32
ADDRS_MAX = 16
ADDR_CHARS_MAX = 256
RELAY_SLOTS_MAX = 4096
REACHABILITIES = ("unknown", "public", "private")  # core.nat.Reachability's values; "" on the wire is unknown


class AdvertRejection(enum.StrEnum):
    """Why an advert was not accepted. Shown to users and counted per reason."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    KEY_MISMATCH = "key_mismatch"
    BAD_SIGNATURE = "bad_signature"
    SOURCE_MISMATCH = "source_mismatch"
    STALE_SEQUENCE = "stale_sequence"  # also what an honest advert that arrives after a newer one gets
    EXPIRED = "expired"
    FROM_FUTURE = "from_future"
    ABSURD_VALUE = "absurd_value"
    TOO_FREQUENT = "too_frequent"
    DIRECTORY_FULL = "directory_full"


class AdvertRejected(PangeaError):
    """An advert was rejected; ``reason`` says why and the message gives the detail."""

    def __init__(self, reason: AdvertRejection, detail: str) -> None:
        super().__init__(f"capacity advert rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class LocalCapacity:
    """What a peer measures about itself before it advertises (the advert minus identity and timing)."""

    cores: int
    memory_free_bytes: int
    task_slots_total: int
    task_slots_free: int
    speed_fuel_per_s: float
    fuel_max: int
    memory_bytes_max: int
    wall_time_s_max: float
    software_version: str
    addrs: tuple[str, ...] = ()
    reachability: str = "unknown"  # one of REACHABILITIES: can other peers dial ``addrs``? (core/nat.py)
    relay_addrs: tuple[str, ...] = ()  # .../p2p/<relay>/p2p-circuit addresses, when not publicly dialable
    relay_slots_free: int = 0  # circuit relay reservations this peer still grants (0: no relay service)
    relay_circuit_s: int = 0  # a circuit through its relays lives this long, the least of them (0: not stated)
    relay_circuit_bytes: int = 0  # ... and carries this many bytes (0: not stated)


@dataclass(frozen=True, slots=True)
class CapacityAdvert:
    """An accepted (verified) advert. ``signed`` is the exact wire bytes, so it can be passed on unchanged."""

    peer_id: str
    seq: int
    issued_at: float
    expires_at: float
    capacity: LocalCapacity
    signed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """Bounds of the capacity directory. ``validate()`` runs on construction."""

    peers_max: int = 100_000
    advert_bytes_max: int = 4096
    ttl_s_max: float = 600.0
    clock_skew_s_max: float = 30.0
    interval_s_min: float = 0.25

    def __post_init__(self) -> None:
        if not 1 <= self.peers_max <= 10_000_000:
            raise ConfigError("capacity.peers_max", f"must be in 1..10000000, got {self.peers_max}")
        if not 256 <= self.advert_bytes_max <= 1 << 20:
            raise ConfigError("capacity.advert_bytes_max", f"must be in 256..1048576, got {self.advert_bytes_max}")
        if not 1.0 <= self.ttl_s_max <= 86400.0:
            raise ConfigError("capacity.ttl_s_max", f"must be in 1..86400 seconds, got {self.ttl_s_max}")
        if not 0.0 <= self.clock_skew_s_max <= 3600.0:
            raise ConfigError("capacity.clock_skew_s_max", f"must be in 0..3600 seconds, got {self.clock_skew_s_max}")
        if not 0.0 <= self.interval_s_min <= 60.0:
            raise ConfigError("capacity.interval_s_min", f"must be in 0..60 seconds, got {self.interval_s_min}")


def encode_advert(identity: Identity, seq: int, issued_at: float, expires_at: float, cap: LocalCapacity) -> bytes:
    """Serialize and sign an advert of ``identity``'s capacity; the result is what goes on the topic."""
    body = capacity_pb2.AdvertBody(
        version=WIRE_VERSION, peer_id=identity.peer_id, seq=seq, issued_at=issued_at, expires_at=expires_at,
        cores=cap.cores, memory_free_bytes=cap.memory_free_bytes, task_slots_total=cap.task_slots_total,
        task_slots_free=cap.task_slots_free, speed_fuel_per_s=cap.speed_fuel_per_s, fuel_max=cap.fuel_max,
        memory_bytes_max=cap.memory_bytes_max, wall_time_s_max=cap.wall_time_s_max,
        software_version=cap.software_version, addrs=list(cap.addrs),
        reachability="" if cap.reachability == "unknown" else cap.reachability,
        relay_addrs=list(cap.relay_addrs), relay_slots_free=cap.relay_slots_free,
        relay_circuit_s=cap.relay_circuit_s, relay_circuit_bytes=cap.relay_circuit_bytes,
    ).SerializeToString()
    return capacity_pb2.SignedAdvert(
        body=body, public_key=identity.public_key, signature=identity.sign(SIGNING_TAG + body)
    ).SerializeToString()


def decode_advert(data: bytes, *, advert_bytes_max: int = 4096) -> CapacityAdvert:
    """Decode and authenticate an advert (rules 1–2 and 6 of the module docstring); AdvertRejected otherwise.

    Freshness, sequence and source checks need the directory's state: see ``CapacityDirectory.offer``.
    """
    if len(data) > advert_bytes_max:
        raise AdvertRejected(AdvertRejection.MALFORMED, f"{len(data)} bytes, more than {advert_bytes_max}")
    try:
        signed = capacity_pb2.SignedAdvert.FromString(data)
        body = capacity_pb2.AdvertBody.FromString(signed.body)
    except DecodeError as exc:
        raise AdvertRejected(AdvertRejection.MALFORMED, f"not a SignedAdvert protobuf: {exc}") from None
    if not signed.body or not signed.public_key or not signed.signature or not body.peer_id:
        raise AdvertRejected(AdvertRejection.MALFORMED, "body, public_key, signature or peer_id missing")
    if body.version != WIRE_VERSION:
        raise AdvertRejected(AdvertRejection.UNSUPPORTED_VERSION, f"version {body.version}, this peer speaks 1")
    try:
        key_owner = peer_id_from_public_key(signed.public_key)
    except ValueError as exc:
        raise AdvertRejected(AdvertRejection.KEY_MISMATCH, str(exc)) from None
    if key_owner != body.peer_id:
        raise AdvertRejected(AdvertRejection.KEY_MISMATCH, f"key of {key_owner} signs for {body.peer_id[:64]}")
    if not verify_signature(body.peer_id, SIGNING_TAG + signed.body, signed.signature):
        raise AdvertRejected(AdvertRejection.BAD_SIGNATURE, f"signature of {body.peer_id} does not verify")
    cap = LocalCapacity(
        cores=body.cores, memory_free_bytes=body.memory_free_bytes, task_slots_total=body.task_slots_total,
        task_slots_free=body.task_slots_free, speed_fuel_per_s=body.speed_fuel_per_s, fuel_max=body.fuel_max,
        memory_bytes_max=body.memory_bytes_max, wall_time_s_max=body.wall_time_s_max,
        software_version=body.software_version, addrs=tuple(body.addrs),
        reachability=body.reachability or "unknown", relay_addrs=tuple(body.relay_addrs),
        relay_slots_free=body.relay_slots_free, relay_circuit_s=body.relay_circuit_s,
        relay_circuit_bytes=body.relay_circuit_bytes,
    )
    problem = _check_values(body.seq, body.issued_at, body.expires_at, cap)
    if problem:
        raise AdvertRejected(AdvertRejection.ABSURD_VALUE, f"{body.peer_id}: {problem}")
    return CapacityAdvert(body.peer_id, body.seq, body.issued_at, body.expires_at, cap, bytes(data))


def _check_values(seq: int, issued_at: float, expires_at: float, cap: LocalCapacity) -> str:
    """The first implausible value of an advert, described; '' if all are plausible."""
    checks: list[tuple[bool, str]] = [
        (seq >= 1, f"seq {seq} must be >= 1"),
        (math.isfinite(issued_at) and issued_at > 0, f"issued_at {issued_at} is not a time"),
        (math.isfinite(expires_at) and expires_at > issued_at, f"expires_at {expires_at} is not after issued_at"),
        (1 <= cap.cores <= CORES_MAX, f"cores {cap.cores} not in 1..{CORES_MAX}"),
        (cap.memory_free_bytes <= MEMORY_BYTES_MAX, f"memory_free_bytes {cap.memory_free_bytes} above 1 PiB"),
        (1 <= cap.task_slots_total <= TASK_SLOTS_MAX, f"task_slots_total {cap.task_slots_total} not in 1..4096"),
        (cap.task_slots_free <= cap.task_slots_total, f"task_slots_free {cap.task_slots_free} above total"),
        (math.isfinite(cap.speed_fuel_per_s) and 0 < cap.speed_fuel_per_s <= SPEED_FUEL_PER_S_MAX,
         f"speed_fuel_per_s {cap.speed_fuel_per_s} not in (0, 1e12]"),
        (1 <= cap.fuel_max <= FUEL_MAX, f"fuel_max {cap.fuel_max} not in 1..1e15"),
        (65536 <= cap.memory_bytes_max <= MEMORY_BYTES_MAX, f"memory_bytes_max {cap.memory_bytes_max} out of range"),
        (math.isfinite(cap.wall_time_s_max) and 0 < cap.wall_time_s_max <= WALL_TIME_S_MAX,
         f"wall_time_s_max {cap.wall_time_s_max} not in (0, 1 week]"),
        (len(cap.software_version) <= SOFTWARE_VERSION_CHARS_MAX and cap.software_version.isprintable(),
         "software_version is too long or not printable"),
        (len(cap.addrs) <= ADDRS_MAX, f"{len(cap.addrs)} addrs, at most {ADDRS_MAX}"),
        (all(len(a) <= ADDR_CHARS_MAX and a.startswith("/") for a in cap.addrs), "an addr is not a multiaddr"),
        (cap.reachability in REACHABILITIES, f"reachability {cap.reachability[:16]!r} not one of {REACHABILITIES}"),
        (len(cap.relay_addrs) <= ADDRS_MAX, f"{len(cap.relay_addrs)} relay_addrs, at most {ADDRS_MAX}"),
        (all(len(a) <= ADDR_CHARS_MAX and a.startswith("/") and "/p2p-circuit" in a for a in cap.relay_addrs),
         "a relay_addr is not a /p2p-circuit multiaddr"),
        (cap.relay_slots_free <= RELAY_SLOTS_MAX, f"relay_slots_free {cap.relay_slots_free} above {RELAY_SLOTS_MAX}"),
        (cap.relay_circuit_s <= WALL_TIME_S_MAX, f"relay_circuit_s {cap.relay_circuit_s} above a week"),
        (cap.relay_circuit_bytes <= MEMORY_BYTES_MAX, f"relay_circuit_bytes {cap.relay_circuit_bytes} above 1 PiB"),
    ]
    return next((problem for ok, problem in checks if not ok), "")


def _peek_peer_id(data: bytes) -> str:
    """The claimed author of an advert, unverified ('' if it does not parse); only used to find duplicates."""
    try:
        return capacity_pb2.AdvertBody.FromString(capacity_pb2.SignedAdvert.FromString(data).body).peer_id
    except DecodeError:
        return ""


class AdvertCache:
    """Adverts already decoded and authenticated, keyed by their exact bytes (bounded, least recently used out).

    Sound because ``decode_advert`` is a pure function of the bytes: the same bytes verify the same way every
    time, so a hit skips the protobuf parse and the ed25519 check (rules 1-2 and 6) and nothing else — the
    directory still applies its own freshness, sequence and source rules (3-5). Only adverts that passed are
    stored; a rejected advert is checked again each time it comes. One cache may serve several directories
    (the simulator shares one across thousands of peers); in a node, gossip and directory syncs deliver the
    same advert several times and each copy costs a dictionary lookup instead of a signature check.
    """

    def __init__(self, entries_max: int = 4096) -> None:
        if not 1 <= entries_max <= 10_000_000:
            raise ConfigError("capacity.advert_cache_entries_max", f"must be in 1..10000000, got {entries_max}")
        self.entries_max = entries_max
        self._entries: OrderedDict[bytes, CapacityAdvert] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decode(self, data: bytes, *, advert_bytes_max: int = 4096) -> CapacityAdvert:
        """``decode_advert(data)``, from the cache when these bytes verified before (AdvertRejected otherwise)."""
        advert = self._entries.get(data)
        if advert is not None and len(data) <= advert_bytes_max:
            self._entries.move_to_end(data)
            self.hits += 1
            return advert
        self.misses += 1
        advert = decode_advert(data, advert_bytes_max=advert_bytes_max)
        self._entries[advert.signed] = advert
        if len(self._entries) > self.entries_max:
            self._entries.popitem(last=False)
        return advert

    def peek(self, data: bytes) -> CapacityAdvert | None:
        """The cached advert of exactly these bytes, if any (no counting, no reordering)."""
        return self._entries.get(data)


class CapacityDirectory:
    """The newest unexpired advert of every peer (see the module docstring for the rules).

    ``cache``: an optional ``AdvertCache`` (possibly shared) that saves decoding and verifying the same advert
    bytes twice."""

    def __init__(self, config: DirectoryConfig | None = None, cache: AdvertCache | None = None) -> None:
        self.config = config or DirectoryConfig()
        self.cache = cache
        self._adverts: dict[str, CapacityAdvert] = {}
        self._last_issued_at: dict[str, float] = {}
        self._seq_floor: dict[str, tuple[int, float]] = {}  # peer -> (highest seq, forget after)
        # (when, peer) of every advert's expiry and every sequence floor's end, so that expire() and
        # next_deadline() look only at what is due; an entry whose value changed since is skipped (lazily)
        self._expiries: list[tuple[float, str]] = []
        self._forgets: list[tuple[float, str]] = []
        self.rejections: Counter[AdvertRejection] = Counter()
        self.accepted_total = 0

    def offer(self, data: bytes, *, now: float, source: str | None = None, copy: bool = False) -> CapacityAdvert:
        """Validate ``data`` (an advert as received from ``source``) and list it; AdvertRejected otherwise.

        ``copy=True`` marks an advert passed on by a third peer (a directory sync) rather than published by its
        author: it is checked the same way, but one we already have (stale or too soon) is not counted as a
        rejection, since receiving it again is expected.
        """
        cached = self.cache.peek(data) if self.cache is not None else None
        listed = self._adverts.get(cached.peer_id if cached is not None else _peek_peer_id(data))
        if listed is not None and listed.signed == data and listed.expires_at > now:
            return listed  # the same advert again (gossip and a sync both delivered it): nothing to do
        try:
            if self.cache is not None:
                advert = self.cache.decode(data, advert_bytes_max=self.config.advert_bytes_max)
            else:
                advert = decode_advert(data, advert_bytes_max=self.config.advert_bytes_max)
            self._check_fresh(advert, now, source)
        except AdvertRejected as exc:
            if not (copy and exc.reason in {AdvertRejection.STALE_SEQUENCE, AdvertRejection.TOO_FREQUENT}):
                self.rejections[exc.reason] += 1
            raise
        peer = advert.peer_id
        self._adverts[peer] = advert
        self._last_issued_at[peer] = advert.issued_at
        forget_at = advert.expires_at + self.config.ttl_s_max
        self._seq_floor[peer] = (advert.seq, forget_at)
        heapq.heappush(self._expiries, (advert.expires_at, peer))
        heapq.heappush(self._forgets, (forget_at, peer))
        if len(self._expiries) > 4 * len(self._adverts) + 64:  # mostly superseded entries: rebuild
            self._expiries = [(a.expires_at, p) for p, a in self._adverts.items()]
            heapq.heapify(self._expiries)
        if len(self._forgets) > 4 * len(self._seq_floor) + 64:
            self._forgets = [(f, p) for p, (_, f) in self._seq_floor.items()]
            heapq.heapify(self._forgets)
        self.accepted_total += 1
        return advert

    def _check_fresh(self, advert: CapacityAdvert, now: float, source: str | None) -> None:
        cfg, peer = self.config, advert.peer_id
        if source is not None and source != peer:
            raise AdvertRejected(AdvertRejection.SOURCE_MISMATCH, f"{source} published an advert of {peer}")
        floor = self._seq_floor.get(peer)
        if floor is not None and advert.seq <= floor[0]:
            raise AdvertRejected(AdvertRejection.STALE_SEQUENCE, f"{peer} seq {advert.seq} <= {floor[0]} seen")
        if advert.expires_at <= now:
            raise AdvertRejected(AdvertRejection.EXPIRED, f"{peer} advert expired {now - advert.expires_at:.1f}s ago")
        if advert.issued_at > now + cfg.clock_skew_s_max:
            ahead = advert.issued_at - now
            raise AdvertRejected(AdvertRejection.FROM_FUTURE, f"{peer} advert issued {ahead:.1f}s ahead")
        if advert.expires_at - advert.issued_at > cfg.ttl_s_max:
            raise AdvertRejected(AdvertRejection.ABSURD_VALUE, f"{peer} advert lives longer than {cfg.ttl_s_max}s")
        last = self._last_issued_at.get(peer)
        if last is not None and advert.issued_at - last < cfg.interval_s_min:
            gap = advert.issued_at - last
            raise AdvertRejected(AdvertRejection.TOO_FREQUENT, f"{peer} issued an advert {gap:.3f}s after the last")
        if peer not in self._adverts and len(self._adverts) >= cfg.peers_max:
            self.expire(now)
            if len(self._adverts) >= cfg.peers_max:
                raise AdvertRejected(AdvertRejection.DIRECTORY_FULL, f"{cfg.peers_max} peers listed already")

    def expire(self, now: float) -> list[str]:
        """Drop adverts whose expiry has passed; return the peers dropped, soonest expired first."""
        gone: list[str] = []
        expiries, adverts = self._expiries, self._adverts
        while expiries and expiries[0][0] <= now:
            when, peer = heapq.heappop(expiries)
            advert = adverts.get(peer)
            if advert is not None and advert.expires_at == when:  # not superseded by a newer advert
                del adverts[peer]
                self._last_issued_at.pop(peer, None)
                gone.append(peer)
        forgets, floors = self._forgets, self._seq_floor
        while forgets and forgets[0][0] <= now:
            when, peer = heapq.heappop(forgets)
            floor = floors.get(peer)
            if floor is not None and floor[1] == when:
                del floors[peer]
        return gone

    def get(self, peer_id: str, now: float) -> CapacityAdvert | None:
        """The current advert of ``peer_id``, or None if it has none or it expired."""
        advert = self._adverts.get(peer_id)
        return advert if advert is not None and advert.expires_at > now else None

    def adverts(self, now: float) -> list[CapacityAdvert]:
        """All current adverts, sorted by peer id."""
        return sorted((a for a in self._adverts.values() if a.expires_at > now), key=lambda a: a.peer_id)

    def peers(self, now: float) -> list[str]:
        return [a.peer_id for a in self.adverts(now)]

    def __len__(self) -> int:
        return len(self._adverts)

    def next_deadline(self) -> float | None:
        """When the next advert expires (a driver calls ``expire`` then), or None if the directory is empty."""
        expiries, adverts = self._expiries, self._adverts
        while expiries:
            when, peer = expiries[0]
            advert = adverts.get(peer)
            if advert is not None and advert.expires_at == when:
                return when
            heapq.heappop(expiries)  # superseded or expired already
        return None


class AdvertPublisher:
    """When to publish our own advert and with which sequence number.

    Publishes every ``interval_s``; each advert lives ``ttl_s`` (> interval, so one lost advert does not drop
    us from directories). In a large network the interval stretches so that the whole network publishes at most
    ``network_adverts_per_s_max`` adverts per second (every peer relays every advert, so the per-peer load
    grows with the network size times the rate): interval = max(interval_s, network_size / rate), and the ttl
    keeps its ratio to the interval, capped so the advert stays within the directories' ``ttl_s_max``.

    ``publish_soon`` brings the next advert forward (a first neighbour appeared, capacity changed), but never
    closer than ``gap_s_min`` to the previous one: directories reject adverts issued closer than their
    ``interval_s_min``, so publishers keep ``DEFAULT_GAP_FACTOR`` times that. Sequence numbers are milliseconds
    of the local clock, forced strictly increasing, so they keep increasing across restarts of the peer.
    """

    DEFAULT_GAP_FACTOR = 2.0

    def __init__(
        self,
        identity: Identity,
        interval_s: float,
        ttl_s: float,
        gap_s_min: float = 1.0,
        network_adverts_per_s_max: float = 10.0,
        ttl_s_max: float = 600.0,
    ) -> None:
        if not 0 < interval_s < ttl_s <= ttl_s_max:
            raise ConfigError(
                "capacity.advert_interval_s",
                f"must be > 0 and below the ttl {ttl_s}s (<= {ttl_s_max}), got {interval_s}",
            )
        if not 0 <= gap_s_min <= interval_s:
            raise ConfigError("capacity.advert_interval_s", f"must be at least {gap_s_min}s, got {interval_s}")
        if not network_adverts_per_s_max > 0:
            raise ConfigError("capacity.network_adverts_per_s_max", f"must be > 0, got {network_adverts_per_s_max}")
        self.identity = identity
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.gap_s_min = gap_s_min
        self.network_adverts_per_s_max = network_adverts_per_s_max
        self.ttl_s_max = ttl_s_max
        self._last_seq = 0
        self._last_at: float | None = None
        self._next_at: float | None = None  # None: publish as soon as allowed

    def due(self, now: float) -> bool:
        deadline = self.next_deadline()
        return deadline is None or now >= deadline

    def next_deadline(self) -> float | None:
        """When the next advert is due (None: now)."""
        if self._next_at is None:
            return None if self._last_at is None else self._last_at + self.gap_s_min
        return self._next_at

    def publish_soon(self) -> None:
        """Publish as soon as the minimum gap since the previous advert allows."""
        self._next_at = None

    def timing(self, network_size: int) -> tuple[float, float]:
        """(interval, ttl) in seconds for a network of ``network_size`` peers (see the class docstring)."""
        ratio = self.ttl_s / self.interval_s
        interval = max(self.interval_s, network_size / self.network_adverts_per_s_max)
        interval = min(interval, self.ttl_s_max / ratio)
        return interval, interval * ratio

    def make(self, now: float, capacity: LocalCapacity, network_size: int = 1) -> bytes:
        """The signed advert to publish now, in a network of about ``network_size`` peers; schedules the next."""
        interval, ttl = self.timing(network_size)
        seq = max(self._last_seq + 1, int(now * 1000))
        self._last_seq = seq
        self._last_at = now
        self._next_at = now + interval
        return encode_advert(self.identity, seq, now, now + ttl, capacity)
