"""The peers this one was connected to, kept in DATA_DIR/peers.json so a restarted peer dials them at once.

Without it a restarted peer that has no ``--bootstrap`` (the first peer of a network, which the others
bootstrap from) knows nobody, and waits for its neighbours' next routing-table refresh to find it again (about
a minute with the defaults). With it, it dials them as soon as it is up, and is back in the mesh and the
directories within a few seconds.

Format: ``{"version": 1, "peers": [{"peer_id": ..., "addrs": [multiaddr, ...], "seen_at": unix time}, ...]}``,
most recently seen first, at most ``PEERS_MAX`` peers of at most ``ADDRS_MAX`` addresses each. Written
atomically (a temporary file renamed) when the set of connected peers or their addresses changed, at most every
``SAVE_INTERVAL_S``, so a ``kill -9`` loses at most that much. A file that does not parse is moved aside
(``datadir.set_aside``) with a warning, and the peer starts knowing nobody (the file is only a shortcut: the
bootstrap address and the DHT still work).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pangea_p2p.logs import get_logger
from pangea_p2p.node.datadir import set_aside

FILE_NAME = "peers.json"
PEERS_MAX = 64
ADDRS_MAX = 8
ADDR_CHARS_MAX = 300
SAVE_INTERVAL_S = 1.0

log = get_logger("peer")


@dataclass(frozen=True, slots=True)
class KnownPeer:
    peer_id: str
    addrs: tuple[str, ...]
    seen_at: float


class KnownPeers:
    """The known peers of a data dir: ``load`` at start, ``update`` with the connected ones, ``save`` when due."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self.peers: dict[str, KnownPeer] = {}
        self._dirty = False

    def load(self) -> list[KnownPeer]:
        """Read the file (none: nobody known); the peers, most recently seen first."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            peers = [_peer(row) for row in doc["peers"][:PEERS_MAX]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            where = set_aside(self.path)
            log.warning("known_peers.unreadable", path=str(self.path), error=f"{type(exc).__name__}: {exc}"[:200],
                        then=f"starting with no known peers; the file {where}")
            return []
        self.peers = {p.peer_id: p for p in peers}
        return self.ordered()

    def ordered(self) -> list[KnownPeer]:
        return sorted(self.peers.values(), key=lambda p: -p.seen_at)

    def update(self, peer_id: str, addrs: list[str], now: float) -> None:
        """``peer_id`` is connected now and reachable at ``addrs`` (kept if empty: the old ones may still do)."""
        addrs = [a for a in addrs if len(a) <= ADDR_CHARS_MAX][:ADDRS_MAX]
        old = self.peers.get(peer_id)
        if old is None and not addrs:
            return  # it could not be dialed
        if old is not None and (not addrs or tuple(addrs) == old.addrs) and now - old.seen_at < 60:
            return  # nothing worth a write
        kept = tuple(addrs) if addrs or old is None else old.addrs
        self.peers[peer_id] = KnownPeer(peer_id, kept, now)
        if len(self.peers) > PEERS_MAX:
            for gone in self.ordered()[PEERS_MAX:]:
                del self.peers[gone.peer_id]
        self._dirty = True

    def save(self) -> bool:
        """Write the file if something changed; False (and a warning) if it could not be written."""
        if not self._dirty:
            return True
        doc = {"version": 1, "peers": [{"peer_id": p.peer_id, "addrs": list(p.addrs), "seen_at": round(p.seen_at, 3)}
                                       for p in self.ordered()]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("known_peers.save_failed", path=str(self.path), error=exc.strerror)
            return False
        self._dirty = False
        return True


def _peer(row: Any) -> KnownPeer:
    peer_id, addrs, seen_at = row["peer_id"], row["addrs"], row["seen_at"]
    if not isinstance(peer_id, str) or not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise TypeError(f"bad entry {str(row)[:80]}")
    if isinstance(seen_at, bool) or not isinstance(seen_at, int | float):
        raise TypeError(f"bad seen_at {seen_at!r}")
    return KnownPeer(peer_id, tuple(a for a in addrs if len(a) <= ADDR_CHARS_MAX)[:ADDRS_MAX], float(seen_at))
