"""The peer's local HTTP API: JSON over HTTP/1.1 on 127.0.0.1, served with h11 on trio.

The shape follows kubo's RPC API: versioned paths (``/v1/...``), JSON bodies, errors as
``{"error": {"code": ..., "message": ...}}`` with a matching HTTP status. Routes are registered by the node
(see ``pangea_p2p.node.peer``); this module only speaks HTTP. One request per connection keeps it simple and
bounded (``Connection: close``); request bodies are capped by ``api.request_bytes_max``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from pangea_p2p.errors import PangeaError
from pangea_p2p.logs import get_logger

log = get_logger("api")
HEADER_BYTES_MAX = 16 * 1024
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # more headers (the dashboard's security policy)

    @classmethod
    def of(cls, value: Any, status: int = 200) -> ApiResponse:
        return cls(status, json.dumps(value, separators=(",", ":"), default=str).encode())


class ApiError(PangeaError):
    """An error answer: HTTP ``status``, a stable ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """``pattern`` is a path with ``{name}`` placeholders matching one path segment."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler))

    async def dispatch(self, method: str, target: str, body: bytes) -> ApiResponse:
        parts = urlsplit(target)
        allowed = []
        for route_method, regex, handler in self._routes:
            match = regex.match(parts.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            req = ApiRequest(method, parts.path, dict(parse_qsl(parts.query)), body, match.groupdict())
            try:
                return await handler(req)
            except ApiError as exc:
                return _error(exc.status, exc.code, exc.message)
            except PangeaError as exc:
                return _error(400, type(exc).__name__, str(exc))
        if allowed:
            return _error(405, "method_not_allowed", f"{method} {parts.path}: use {', '.join(sorted(allowed))}")
        return _error(404, "not_found", f"no such endpoint: {parts.path}")


def _error(status: int, code: str, message: str) -> ApiResponse:
    return ApiResponse.of({"error": {"code": code, "message": message}}, status)


async def serve(
    router: Router, listeners: list[trio.SocketListener], request_bytes_max: int
) -> None:
    """Serve forever on ``listeners`` (opened by the caller, so it can report the bound port)."""
    await trio.serve_listeners(
        lambda stream: _handle_connection(stream, router, request_bytes_max), listeners
    )


async def _handle_connection(stream: trio.SocketStream, router: Router, request_bytes_max: int) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEADER_BYTES_MAX)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            response = await _read_and_dispatch(stream, conn, router, request_bytes_max)
            if response is not None:
                await _send(stream, conn, response)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    except Exception as exc:  # never let one request take the peer down
        log.error("api.handler_failed", error=repr(exc))
        with contextlib.suppress(Exception):
            await _send(stream, conn, _error(500, "internal", f"internal error: {exc!r}"))
    finally:
        await stream.aclose()


async def _read_and_dispatch(
    stream: trio.SocketStream, conn: h11.Connection, router: Router, request_bytes_max: int
) -> ApiResponse | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return _error(exc.error_status_hint, "bad_request", f"malformed HTTP request: {exc}")
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None
        elif isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > request_bytes_max:
                return _error(413, "too_large", f"request body of {int(length)} bytes, limit {request_bytes_max}")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > request_bytes_max:
                return _error(413, "too_large", f"request body above {request_bytes_max} bytes")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return await router.dispatch(request.method.decode(), request.target.decode(), bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(stream: trio.SocketStream, conn: h11.Connection, response: ApiResponse) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        *response.headers,
    ]
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
    await stream.send_all(conn.send(h11.Data(data=response.body)) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
