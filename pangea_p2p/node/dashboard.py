"""The dashboard at the API's root, its JSON endpoints that the others do not cover, and /metrics.

    GET /                     the dashboard page (node/static/index.html); plain HTML, CSS and JS shipped in the
                              package, nothing fetched from elsewhere (it works offline)
    GET /static/{name}        its script and style sheet
    GET /metrics              Prometheus text exposition (node/metrics.py)
    GET /v1/errors            {"records": [...newest first], "counts": {level: n}}: the peer's recent warnings and
                              errors (a bounded ring, logs.RecentRecords)

The page polls the /v1 endpoints (id, health, peers, capacity, jobs, jobs/{id}/tasks, trust, errors) every
second or two. ``pangea dashboard`` prints and opens ``http://HOST:PORT/#token=<token>``: the page takes the API
token from the fragment (which never reaches a server), keeps it in sessionStorage, removes it from the address
bar, and sends it as ``Authorization: Bearer`` on its requests.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from pangea_p2p.node import metrics
from pangea_p2p.node.api import ApiError, ApiRequest, ApiResponse, Router

if TYPE_CHECKING:
    from pangea_p2p.node.state import Peer

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# The page loads only its own files and talks only to this peer; no other page may frame it.
PAGE_HEADERS = (
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
)


def static_file(name: str) -> ApiResponse:
    """A file of node/static with its content type; ApiError(404) for any other name."""
    suffix = name[name.rfind("."):] if "." in name else ""
    folder = resources.files("pangea_p2p.node").joinpath("static")
    path = folder.joinpath(name)
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES or not path.is_file():
        raise ApiError(404, "not_found", f"no such dashboard file: {name}")
    return ApiResponse(200, path.read_bytes(), STATIC_TYPES[suffix], PAGE_HEADERS)


def add_dashboard_routes(router: Router, peer: Peer) -> None:
    registry = metrics.registry_of(peer)

    async def index(_: ApiRequest) -> ApiResponse:
        return static_file("index.html")

    async def static(req: ApiRequest) -> ApiResponse:
        return static_file(req.params["name"])

    async def get_metrics(_: ApiRequest) -> ApiResponse:
        return ApiResponse(200, metrics.render(registry), metrics.CONTENT_TYPE)

    async def errors(_: ApiRequest) -> ApiResponse:
        return ApiResponse.of({"records": peer.recent.records(), "counts": peer.recent.counts})

    router.add("GET", "/", index)
    router.add("GET", "/static/{name}", static)
    router.add("GET", "/metrics", get_metrics)
    router.add("GET", "/v1/errors", errors)
