"""The peer's local HTTP API: JSON over HTTP/1.1 on 127.0.0.1, served with h11 on trio.

The shape follows kubo's RPC API: versioned paths (``/v1/...``), JSON bodies, errors as
``{"error": {"code": ..., "message": ...}}`` with a matching HTTP status. Routes are registered by the node
(see ``pangea_p2p.node.peer``); this module only speaks HTTP. One request per connection keeps it simple and
bounded (``Connection: close``); request bodies are capped by ``api.request_bytes_max``.

Who may use it (kubo's and Jupyter's defences, the ``Gate``) is checked as soon as a request's head is in,
before its body is read or any route runs; a refusal is the error document above, its message one line saying
what was refused and why:

1. ``Host`` must name a loopback address (``127.0.0.1``, ``[::1]``, ``localhost``; any port), the configured
   ``api.host``, or a name of ``api.allowed_hosts`` (``"*"``: any), else 403 ``host_refused``. This defeats DNS
   rebinding: a web page whose name has been re-pointed at 127.0.0.1 still sends its own name as the Host.
2. A browser's ``Origin`` must be the API's own (``http://`` + the Host), else 403 ``origin_refused``: another
   site's page can make the browser send requests here, never with this origin. The CLI and SDK send no Origin.
3. The peer's token (DATA_DIR/api_token, ``pangea_p2p.node.keyfile``) as ``Authorization: Bearer <token>``,
   compared in constant time, is needed by every request but GET and HEAD, and by every request when
   ``api.allow_remote`` is on: else 401 ``token_required`` or ``bad_token``.
4. A POST, PUT or PATCH must declare the content type its route reads (``application/json``; the block uploads
   ``application/octet-stream``), else 415 ``bad_content_type``: the types a page of another site may send
   without asking first (text/plain, forms, multipart) are never read as a job request.

Connections (``Limits``): at most ``api.connections_max`` at once, so the API cannot take the file descriptors
the rest of the peer needs. At the cap, the connection that has waited longest for its request to arrive is
closed to make room (idle and slow clients cannot hold the API); when every connection is being answered, a new
one is closed at once. Either is logged once per ``FULL_LOG_INTERVAL_S`` with counts, never per connection. A
client that sends or takes nothing for ``api.idle_timeout_s`` is dropped; a handler that runs longer than
``HANDLER_TIMEOUT_S`` (none should: a job wait is bounded far below it) is answered 504, not left unanswered.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from pangea_p2p.errors import PangeaError
from pangea_p2p.logs import get_logger

log = get_logger("api")
HEADER_BYTES_MAX = 16 * 1024
HANDLER_TIMEOUT_S = 60.0
SEND_PIECE_BYTES = 64 * 1024
FULL_LOG_INTERVAL_S = 10.0
ACCEPT_RETRY_S = 0.1  # after accept() failed for want of file descriptors or buffers
JSON = "application/json"
BYTES = "application/octet-stream"
SAFE_METHODS = frozenset({"GET", "HEAD"})  # what needs no token (unless api.allow_remote)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # what must declare its content type
TOKEN_HINT = "Authorization: Bearer <the 64 hex digits of DATA_DIR/api_token>"


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
    content_type: str = JSON
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
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []

    def add(self, method: str, pattern: str, handler: Handler, body: str = JSON) -> None:
        """``pattern`` is a path with ``{name}`` placeholders matching one path segment; ``body`` the content type
        a POST or PUT to it must declare."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), handler, body))

    async def dispatch(self, method: str, target: str, body: bytes, content_type: str | None = None) -> ApiResponse:
        """The answer to one request. ``content_type`` is the request's Content-Type header ("" when it has none),
        checked against the route's for POST, PUT and PATCH; None (an in-process caller, not HTTP) skips that."""
        parts = urlsplit(target)
        allowed = []
        for route_method, regex, handler, route_body in self._routes:
            match = regex.match(parts.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if content_type is not None and method in BODY_METHODS:
                declared = content_type.partition(";")[0].strip().lower()
                if declared != route_body:
                    return _error(415, "bad_content_type", f"{method} {parts.path} needs Content-Type: {route_body}, "
                                                           f"got {declared or 'none'}")
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


def _error(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> ApiResponse:
    return ApiResponse(status, ApiResponse.of({"error": {"code": code, "message": message}}).body, JSON, headers)


def host_name(host: str) -> str:
    """The name a Host header gives, lower-case, without port, IPv6 brackets or final dot: ``[::1]:80`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Gate:
    """Who may use the API (rules 1-3 of the module docstring): the peer's ``token``, whether ``allow_remote`` is
    on, and the host names it answers to besides loopback (``"*"``: any)."""

    token: str
    allow_remote: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", frozenset(host_name(h) for h in self.allowed_hosts))

    def refusal(self, method: str, headers: Mapping[bytes, bytes]) -> ApiResponse | None:
        """The error answer to a request with this method and these headers (lower-case names), or None: it may
        pass."""
        host = headers.get(b"host", b"").decode("latin-1")
        name = host_name(host)
        if not (is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts):
            why = "the request has no Host header" if not host else f"Host {host!r} is not a loopback address"
            return _error(403, "host_refused", f"{why} nor in api.allowed_hosts (refused: a web page could reach "
                                               f"the API through DNS rebinding)")
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").lower() != f"http://{host.lower()}":
            return _error(403, "origin_refused", f"Origin {origin.decode('latin-1')!r} is not this API's own "
                                                 f"(http://{host}): requests from other web pages are refused")
        if method in SAFE_METHODS and not self.allow_remote:
            return None
        why = "api.allow_remote is on: every request" if method in SAFE_METHODS else f"{method}"
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return _error(401, "token_required", f"{why} needs the API token ({TOKEN_HINT})",
                          (("www-authenticate", "Bearer"),))
        if not hmac.compare_digest(token.strip(), self.token.encode()):
            return _error(401, "bad_token", f"wrong API token (send {TOKEN_HINT})", (("www-authenticate", "Bearer"),))
        return None


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the API may hold: ``api.request_bytes_max``, ``api.connections_max``, ``api.idle_timeout_s``."""

    request_bytes_max: int = 64 << 20
    connections_max: int = 64
    idle_timeout_s: float = 10.0


async def serve(router: Router, listeners: list[trio.SocketListener], gate: Gate, limits: Limits) -> None:
    """Serve forever on ``listeners`` (opened by the caller, so it can report the bound port)."""
    server = _Server(router, gate, limits)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(server.accept_loop, listener, nursery)


class _Server:
    def __init__(self, router: Router, gate: Gate, limits: Limits) -> None:
        self.router, self.gate, self.limits = router, gate, limits
        self.open = 0  # connections being served
        self.reading: dict[int, trio.CancelScope] = {}  # connections still waiting for their request, oldest first
        self._ids = itertools.count()
        self._dropped = {"evicted": 0, "refused": 0, "accept_failed": 0}  # since the last log line
        self._logged_at = -math.inf

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            await self._accept(listener, nursery)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: wait until something is freed
                self._dropped["accept_failed"] += 1
                self._log_full(exc.strerror or repr(exc))
                await trio.sleep(ACCEPT_RETRY_S)
                continue
            if self.open >= self.limits.connections_max:
                if not self.reading:
                    self._dropped["refused"] += 1
                    self._log_full("")
                    await stream.aclose()
                    continue
                oldest = next(iter(self.reading))
                self.reading.pop(oldest).cancel()  # its handler closes it at once
                self._dropped["evicted"] += 1
                self._log_full("")
            self.open += 1
            nursery.start_soon(self.handle, stream)

    def _log_full(self, error: str) -> None:
        now = trio.current_time()
        if now - self._logged_at < FULL_LOG_INTERVAL_S:
            return
        self._logged_at = now
        log.warning("api.connections_full", connections_max=self.limits.connections_max, open=self.open,
                    **{k: v for k, v in self._dropped.items() if v}, **({"error": error} if error else {}),
                    hint="raise api.connections_max if these are your own clients")
        self._dropped = dict.fromkeys(self._dropped, 0)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEADER_BYTES_MAX)
        key = next(self._ids)
        got: tuple[h11.Request, bytes] | ApiResponse | None = None
        try:
            with trio.CancelScope() as reading:
                self.reading[key] = reading
                got = await self._read(stream, conn)
            self.reading.pop(key, None)
            if got is None:  # evicted, or the client left
                return
            if isinstance(got, ApiResponse):
                response = got
            else:
                response = await self._answer(*got)
            await self._send(stream, conn, response)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.LocalProtocolError):
            pass  # the client left, or was too slow
        except Exception as exc:  # never let one connection take the peer down
            log.error("api.connection_failed", error=repr(exc))
        finally:
            self.reading.pop(key, None)
            self.open -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _receive(self, stream: trio.SocketStream) -> bytes:
        with trio.fail_after(self.limits.idle_timeout_s):
            return await stream.receive_some(65536)

    async def _read(
        self, stream: trio.SocketStream, conn: h11.Connection
    ) -> tuple[h11.Request, bytes] | ApiResponse | None:
        """The request and its body, or the error answer to it (malformed, refused, too large), or None (the
        client left without one)."""
        request: h11.Request | None = None
        body = bytearray()
        limit = self.limits.request_bytes_max
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return _error(exc.error_status_hint, "bad_request", f"malformed HTTP request: {exc}")
            if event is h11.NEED_DATA:
                data = await self._receive(stream)
                conn.receive_data(data)
                if not data and request is None:
                    return None
            elif isinstance(event, h11.Request):
                request = event
                headers = dict(event.headers)  # h11 gives the names in lower case
                refusal = self.gate.refusal(event.method.decode(), headers)
                if refusal is not None:
                    return refusal
                length = headers.get(b"content-length")
                if length is not None and length.isdigit() and int(length) > limit:
                    return _error(413, "too_large", f"request body of {int(length)} bytes, limit {limit}")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    return _error(413, "too_large", f"request body above {limit} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, request: h11.Request, body: bytes) -> ApiResponse:
        content_type = dict(request.headers).get(b"content-type", b"").decode("latin-1")
        response = _error(504, "timeout", f"{request.target.decode()} was not answered within {HANDLER_TIMEOUT_S:g} s")
        with trio.move_on_after(HANDLER_TIMEOUT_S):
            try:
                response = await self.router.dispatch(request.method.decode(), request.target.decode(), body,
                                                      content_type)
            except Exception as exc:  # never let one request take the peer down
                log.error("api.handler_failed", error=repr(exc))
                response = _error(500, "internal", f"internal error: {exc!r}")
        return response

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, response: ApiResponse) -> None:
        """Send ``response``; each piece must be taken within the idle timeout (TooSlowError otherwise)."""
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("connection", "close"),
            *response.headers,
        ]
        body = response.body
        pieces = [h11.Data(data=body[i:i + SEND_PIECE_BYTES]) for i in range(0, len(body), SEND_PIECE_BYTES)]
        for event in [h11.Response(status_code=response.status, headers=headers), *pieces, h11.EndOfMessage()]:
            with trio.fail_after(self.limits.idle_timeout_s):
                await stream.send_all(conn.send(event) or b"")

