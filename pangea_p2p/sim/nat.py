"""Peers behind NAT in the simulator: who is private, the relays each private peer holds, and the circuits
issuers open to private workers through them.

The decisions are core's, as in the node: each private peer keeps a ``RelayBook`` (core/nat.py) and plans its
relays at each advert it publishes, from the relays it holds and a sample of public peers (the node's
NatService takes them from its capacity directory); its advert says ``private`` with its circuit addresses and
the least circuit limit its relays granted, and the scheduler reads the advert exactly as the node's does
(``advert_link``: relayed, or unreachable while it holds no relay). What is modelled here is the network:

- A ``nat`` share of the peers (drawn from the seed; submitters included) is private: nobody can dial them;
  they dial out. Every public peer serves as a relay for up to ``RESERVATIONS_MAX`` reservations.
- A reservation is granted at once by a relay that is up, reachable and not full; it lives as long as the
  private peer's connection to the relay: when the relay crashes or leaves, its holders lose it at once (and
  plan again; their adverts say so at their next publish). A private peer that crashes loses its reservations.
- A stream an issuer opens to a private worker runs over a *circuit* through the first relay the worker holds
  that is up and reachable from both ends (none: the dial times out, as a dial behind a NAT does). Messages on
  it cross both legs (each leg's latency, jitter and bandwidth). The relay closes the circuit after
  ``relay_circuit_s`` or once it carried ``relay_circuit_bytes`` (messages, and the inputs workers fetch
  over it), or when it goes down: both ends see the
  stream reset (WorkerLost at the issuer, IssuerLost at the worker) and the issuer's next offer opens a new one.
- A private issuer dials public workers directly (its own NAT lets outgoing connections through).

Nothing here draws from the other random streams of the run, and none of it exists when ``nat`` is 0: the
trajectory of a run without NAT is unchanged.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pangea_p2p.core.nat import CircuitLimit, Reachability, RelayBook, RelayCandidate, RelayConfig
from pangea_p2p.sim.loop import EventLoop
from pangea_p2p.sim.network import Network

RESERVATIONS_MAX = 32  # as nat.relay_reservations_max
SAMPLE = 8  # public peers a private peer considers per plan, besides the relays it holds
RESERVATION_S = 3600.0


@dataclass
class Circuit:
    relay: int
    opened_s: float
    bytes: int = 0


Closed = Callable[[int, int, str], None]  # (issuer, worker, reason): both ends of a circuit hear it reset


class SimNat:
    """The NAT model of one run (see the module docstring). Peers are indexes 0..n-1."""

    def __init__(self, share: float, rng: random.Random, net: Network, loop: EventLoop, limit: CircuitLimit,
                 relays_wanted: int, ids: list[str], up: Callable[[int], bool], closed: Closed) -> None:
        n = len(ids)
        self.rng = rng
        self.net = net
        self.loop = loop
        self.closed = closed
        self.limit = limit
        self.ids = ids
        self.index = {pid: i for i, pid in enumerate(ids)}
        self.up = up
        self.private = [False] * n
        for i in rng.sample(range(n), round(share * n)):
            self.private[i] = True
        self.public = [i for i in range(n) if not self.private[i]]
        self.relays_wanted = relays_wanted
        self.books: dict[int, RelayBook] = {i: self._book() for i in range(n) if self.private[i]}
        self.holders: dict[int, set[int]] = {}  # relay -> the private peers holding a reservation on it
        self.circuits: dict[tuple[int, int], Circuit] = {}  # (issuer, worker) -> the circuit of that stream
        self.counts: Counter[str] = Counter()

    def _book(self) -> RelayBook:
        return RelayBook(RelayConfig(relays_wanted=self.relays_wanted))

    # --- relays -----------------------------------------------------------------------------------------------

    def addr(self, relay: int) -> str:
        return f"/dns4/relay{relay}.sim/tcp/4001"

    def _candidate(self, i: int, r: int) -> RelayCandidate:
        return RelayCandidate(self.ids[r], (self.addr(r),), 2.0 * (self.net.one_way_s(i, r)))

    def _usable(self, i: int, r: int) -> bool:
        return self.up(r) and not self.net.blocked(i, r) and not self.net.blocked(r, i)

    def keep_relays(self, i: int, now: float) -> None:
        """Private peer ``i`` plans its relays (RelayBook) and reserves, renews or drops (before each advert)."""
        book = self.books[i]
        held = [self.index[p] for p in book.held()]
        pool = [r for r in self.rng.sample(self.public, min(SAMPLE, len(self.public))) if r not in held]
        candidates = [self._candidate(i, r) for r in held + pool
                      if self._usable(i, r) and (r in held or len(self.holders.get(r, ())) < RESERVATIONS_MAX)]
        plan = book.plan(candidates, now)
        for pid in plan.drop:
            self.holders.get(self.index[pid], set()).discard(i)
        for cand in (*plan.renew, *plan.reserve):
            r = self.index[cand.peer_id]
            holders = self.holders.setdefault(r, set())
            if self._usable(i, r) and (i in holders or len(holders) < RESERVATIONS_MAX):
                holders.add(i)
                book.reserved(cand, now + RESERVATION_S, now, self.limit)
                self.counts["reservations"] += 1
            else:
                book.failed(cand.peer_id, now)
                self.counts["reservations_failed"] += 1

    def advert_fields(self, i: int) -> dict[str, object]:
        """What peer ``i``'s capacity advert says of its reachability and relays (as the node's does)."""
        if not self.private[i]:
            return {"reachability": Reachability.PUBLIC.value,
                    "relay_slots_free": max(0, RESERVATIONS_MAX - len(self.holders.get(i, ())))}
        book = self.books[i]
        limit = book.circuit_limit()
        return {"reachability": Reachability.PRIVATE.value, "relay_addrs": tuple(book.relay_addrs(self.ids[i])),
                "relay_circuit_s": limit.duration_s, "relay_circuit_bytes": limit.bytes}

    def relay_of(self, a: int, b: int) -> int | None:
        """The relay an issuer ``a`` reaches private worker ``b`` through now (None: none works)."""
        for pid in self.books[b].held():
            r = self.index[pid]
            if r != a and self._usable(a, r) and self._usable(b, r):
                return r
        return None

    # --- streams ----------------------------------------------------------------------------------------------

    def dialable(self, a: int, b: int) -> bool:
        """Whether ``a`` can open a stream to ``b`` (partitions and liveness aside): ``b`` is public, or holds a
        relay both can reach."""
        if not self.private[b] or (a, b) in self.circuits or self.relay_of(a, b) is not None:
            return True
        self.counts["dials_failed"] += 1  # the scheduler offered a task to a peer it cannot reach
        return False

    def opened(self, issuer: int, worker: int, now: float) -> None:
        """``issuer`` opened a stream to ``worker``: through a new circuit if the worker is private."""
        if not self.private[worker] or (issuer, worker) in self.circuits:
            return
        relay = self.relay_of(issuer, worker)
        if relay is None:
            return
        self.circuits[(issuer, worker)] = Circuit(relay, now)
        self.counts["circuits_opened"] += 1
        if self.limit.duration_s:
            self.loop.at(now + self.limit.duration_s, self._expire, (issuer, worker, now))

    def _expire(self, arg: tuple[int, int, float]) -> None:
        issuer, worker, opened = arg
        circuit = self.circuits.get((issuer, worker))
        if circuit is not None and circuit.opened_s == opened:
            self.close(issuer, worker, "duration", "the relay closed the circuit at its duration limit")

    def close(self, issuer: int, worker: int, why: str, reason: str) -> None:
        del self.circuits[(issuer, worker)]
        self.counts[f"closed_{why}"] += 1
        self.closed(issuer, worker, reason)

    def route(self, issuer: int, worker: int, size: int) -> Circuit | bool:
        """How a message between ``issuer`` and ``worker`` travels: True directly (the worker is public), a
        circuit (its byte count grows by ``size``: the message, and for an offer the input the worker fetches
        over the same connection), or False (the worker is private and no circuit carries the stream: dropped,
        like a message on a reset stream)."""
        if not self.private[worker]:
            return True
        circuit = self.circuits.get((issuer, worker))
        if circuit is None:
            return False
        circuit.bytes += size
        if self.limit.bytes and circuit.bytes > self.limit.bytes:
            self.close(issuer, worker, "bytes", "the relay closed the circuit at its byte limit")
            return False
        self.counts["relayed_messages"] += 1
        return circuit

    def circuit_age_s(self, issuer: int, worker: int, now: float) -> float | None:
        circuit = self.circuits.get((issuer, worker))
        return None if circuit is None else now - circuit.opened_s

    # --- churn ------------------------------------------------------------------------------------------------

    def went_down(self, i: int, now: float) -> None:
        """Peer ``i`` crashed or left: as a relay, its reservations and circuits are gone (the holders plan
        again at once); as a private peer, so are its own reservations; circuits to or from it are left to the
        streams' own reset (the world breaks them)."""
        for key in [k for k, c in self.circuits.items() if c.relay == i]:
            self.close(*key, "relay_gone", "the relay of the circuit went down")
        for key in [k for k in self.circuits if i in k]:
            del self.circuits[key]
        for holder in sorted(self.holders.pop(i, set())):
            self.books[holder].failed(self.ids[i], now)
            self.counts["relays_lost"] += 1
            if self.up(holder):
                self.keep_relays(holder, now)
        if self.private[i]:
            for pid in self.books[i].held():
                self.holders.get(self.index[pid], set()).discard(i)
            self.books[i] = self._book()
