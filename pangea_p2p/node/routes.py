"""The endpoints of the local HTTP API (``/v1/...``), each a thin view of the running peer's state."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pangea_p2p import __version__
from pangea_p2p.core.capacity import CapacityAdvert
from pangea_p2p.node.api import ApiRequest, ApiResponse, Router

if TYPE_CHECKING:
    from pangea_p2p.node.state import Peer


def advert_json(advert: CapacityAdvert, now: float) -> dict[str, Any]:
    doc = {"peer_id": advert.peer_id, "seq": advert.seq, "issued_at": advert.issued_at,
           "expires_in_s": round(advert.expires_at - now, 3)}
    doc.update(asdict(advert.capacity))
    return doc


def add_routes(router: Router, peer: Peer) -> None:
    async def get_id(_: ApiRequest) -> ApiResponse:
        return ApiResponse.of({
            "peer_id": peer.peer_id,
            "addrs": peer.addrs(),
            "public_key": peer.identity.public_key.hex(),
            "version": __version__,
            "nat": peer.nat_json(),
        })

    async def get_peers(_: ApiRequest) -> ApiResponse:
        now = time.time()
        connected = set(peer.connected_peers())
        table = set(peer.routing_table_peers())
        adverts = {a.peer_id: a for a in peer.directory.adverts(now)}
        rows = []
        for pid in sorted((connected | table | set(adverts)) - {peer.peer_id}):
            advert = adverts.get(pid)
            rows.append({
                "peer_id": pid,
                "connected": pid in connected,
                "in_routing_table": pid in table,
                "has_advert": advert is not None,
                "addrs": list(advert.capacity.addrs) if advert else [],
                "rtt_ms": round(peer.rtt_s[pid] * 1000, 3) if pid in peer.rtt_s else None,
                "reached": "direct" if pid in connected else None,  # how the connection was made
                "capacity": None if advert is None else {
                    k: getattr(advert.capacity, k) for k in ("cores", "task_slots_total", "task_slots_free",
                                                              "speed_fuel_per_s", "memory_free_bytes")},
            })
        return ApiResponse.of({"peers": rows})

    async def get_capacity(_: ApiRequest) -> ApiResponse:
        now = time.time()
        directory = peer.directory
        return ApiResponse.of({
            "self": asdict(peer.local_capacity()),
            "adverts": [advert_json(a, now) for a in directory.adverts(now)],
            "accepted_total": directory.accepted_total,
            "rejected": {str(reason): n for reason, n in sorted(directory.rejections.items())},
        })

    async def get_health(_: ApiRequest) -> ApiResponse:
        return ApiResponse.of(peer.health())  # node/state.py: "ok", or "degraded" and why

    router.add("GET", "/v1/id", get_id)
    router.add("GET", "/v1/peers", get_peers)
    router.add("GET", "/v1/capacity", get_capacity)
    router.add("GET", "/v1/health", get_health)
