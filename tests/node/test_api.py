"""The HTTP layer of the peer's API (pangea_p2p/node/api.py) on a real socket on 127.0.0.1, in this process: who
may use it (each refusal, and the legitimate client getting through) and how many connections it holds."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from pangea_p2p.errors import IdentityError
from pangea_p2p.node import api
from pangea_p2p.node.api import BYTES, ApiRequest, ApiResponse, Gate, Limits, Router
from pangea_p2p.node.keyfile import load_or_create_api_token
from pangea_p2p.sdk.client import ApiCallFailed, ApiUnavailable, Client, read_api_token

TOKEN = "5e" * 32
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON_TYPE = {"content-type": "application/json"}


class App:
    """A router with one route of each kind; ``calls`` is every request a handler saw."""

    def __init__(self) -> None:
        self.router = Router()
        self.calls: list[tuple[str, str, bytes]] = []
        self.busy = 0  # handlers inside /v1/busy
        self.release = trio.Event()

        async def record(req: ApiRequest) -> ApiResponse:
            self.calls.append((req.method, req.path, req.body))
            return ApiResponse.of({"ok": True, **req.params})

        async def busy(req: ApiRequest) -> ApiResponse:
            self.busy += 1
            await self.release.wait()
            return await record(req)

        self.router.add("GET", "/v1/thing", record)
        self.router.add("POST", "/v1/thing", record)
        self.router.add("DELETE", "/v1/thing/{name}", record)
        self.router.add("POST", "/v1/bytes", record, body=BYTES)
        self.router.add("GET", "/v1/busy", busy)
        self.router.add("POST", "/v1/blocks", self.block, body=BYTES)  # what the SDK client calls
        self.router.add("DELETE", "/v1/jobs/{job_id}", record)
        self.router.add("GET", "/v1/jobs/{job_id}/wait", self.wait)

    async def block(self, req: ApiRequest) -> ApiResponse:
        self.calls.append((req.method, req.path, req.body))
        return ApiResponse.of({"cid": "c1", "size": len(req.body)})

    async def wait(self, req: ApiRequest) -> ApiResponse:
        self.calls.append((req.method, req.path, json.dumps(req.query).encode()))
        return ApiResponse.of(req.query)


@asynccontextmanager
async def serving(app: App, gate: Gate | None = None, limits: Limits | None = None) -> AsyncIterator[int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(api.serve, app.router, listeners, gate or Gate(TOKEN), limits or Limits())
        yield port
        nursery.cancel_scope.cancel()


async def call(port: int, method: str, path: str, headers: dict[str, str] | None = None,
               body: bytes = b"") -> tuple[int, Any]:
    """The status and decoded JSON of one request; Host is 127.0.0.1:port unless ``headers`` say otherwise."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as http:
        response = await http.request(method, path, headers=headers or {}, content=body)
    return response.status_code, response.json()


def error(doc: Any) -> tuple[str, str]:
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"code", "message"}
    message = doc["error"]["message"]
    assert "\n" not in message
    assert message
    return doc["error"]["code"], message


# --- who may use it ---------------------------------------------------------------------------------------


async def test_the_legitimate_client_gets_through() -> None:
    app = App()
    async with serving(app) as port:
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", "[::1]:80", "127.0.0.2"):
            assert await call(port, "GET", "/v1/thing", {"host": host}) == (200, {"ok": True})  # reads: no token
        assert (await call(port, "POST", "/v1/thing", {**AUTH, **JSON_TYPE}, b'{"a": 1}'))[0] == 200
        own = {"origin": f"http://127.0.0.1:{port}"}  # the dashboard's own page
        assert (await call(port, "POST", "/v1/thing", {**AUTH, **own, "content-type": "application/json; "
                                                       "charset=utf-8"}, b"{}"))[0] == 200
        assert (await call(port, "POST", "/v1/bytes", {**AUTH, "content-type": BYTES}, b"\x00\x01"))[0] == 200
        assert await call(port, "DELETE", "/v1/thing/j1", AUTH) == (200, {"ok": True, "name": "j1"})
    assert [c[0] for c in app.calls] == ["GET"] * 6 + ["POST", "POST", "POST", "DELETE"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5101", "127.0.0.1.evil.example", "0.0.0.0:5101",
                                  "localhost.evil.example", "[::ffff:8.8.8.8]:5101"])
async def test_a_foreign_host_is_refused_even_with_the_token(host: str) -> None:
    """DNS rebinding: the page's own name, now resolving to 127.0.0.1, arrives as the Host header."""
    app = App()
    async with serving(app) as port:
        for method, path in (("GET", "/v1/thing"), ("POST", "/v1/thing"), ("DELETE", "/v1/thing/j1")):
            status, doc = await call(port, method, path, {"host": host, **AUTH, **JSON_TYPE}, b"{}")
            code, message = error(doc)
            assert (status, code) == (403, "host_refused")
            assert message == (f"Host {host!r} is not a loopback address nor in api.allowed_hosts (refused: a web "
                               f"page could reach the API through DNS rebinding)")
    assert app.calls == []


async def test_a_request_without_host_is_refused() -> None:
    app = App()
    async with serving(app) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /v1/thing HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
        reply = await read_all(stream)
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert b'"host_refused"' in reply
    assert b"the request has no Host header" in reply
    assert app.calls == []


async def test_configured_host_names_are_served() -> None:
    app = App()
    async with serving(app, Gate(TOKEN, allowed_hosts=frozenset({"Peer.LAN", "10.0.0.5"}))) as port:
        assert (await call(port, "GET", "/v1/thing", {"host": f"peer.lan:{port}"}))[0] == 200
        assert (await call(port, "GET", "/v1/thing", {"host": "10.0.0.5"}))[0] == 200
        assert (await call(port, "GET", "/v1/thing", {"host": "other.lan"}))[0] == 403
    async with serving(app, Gate(TOKEN, allowed_hosts=frozenset({"*"}))) as port:
        assert (await call(port, "GET", "/v1/thing", {"host": "anything.example"}))[0] == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1:{port}",
                                    "http://127.0.0.1:1", "http://localhost:{port}"])
async def test_a_foreign_origin_is_refused(origin: str) -> None:
    app = App()
    async with serving(app) as port:
        origin = origin.format(port=port)
        for method in ("GET", "POST"):
            status, doc = await call(port, method, "/v1/thing", {"origin": origin, **AUTH, **JSON_TYPE}, b"{}")
            code, message = error(doc)
            assert (status, code) == (403, "origin_refused")
            assert message == (f"Origin {origin!r} is not this API's own (http://127.0.0.1:{port}): requests from "
                               f"other web pages are refused")
    assert app.calls == []


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_a_change_without_its_content_type_is_refused(content_type: str | None) -> None:
    """What a page of another site may POST without a preflight is never read as a job request."""
    app = App()
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    declared = (content_type or "none").partition(";")[0].lower()
    async with serving(app) as port:
        status, doc = await call(port, "POST", "/v1/thing", headers, b'{"module_cid": "x"}')
        assert (status, error(doc)) == (415, ("bad_content_type",
                                              f"POST /v1/thing needs Content-Type: application/json, got {declared}"))
        status, doc = await call(port, "POST", "/v1/bytes", headers, b"data")
        assert (status, error(doc)[0]) == (415, "bad_content_type")
        assert (await call(port, "POST", "/v1/bytes", {**AUTH, **JSON_TYPE}, b"data"))[0] == 415
    assert app.calls == []


@pytest.mark.parametrize(("authorization", "code"), [
    (None, "token_required"), ("", "token_required"), ("Bearer", "token_required"),
    (f"Basic {TOKEN}", "token_required"),
    ("Bearer " + "0" * 64, "bad_token"), (f"Bearer {TOKEN[:-1]}", "bad_token"), (f"Bearer {TOKEN}0", "bad_token"),
    (f"Bearer {TOKEN.upper()}", "bad_token"),
])
async def test_a_change_without_the_right_token_is_refused(authorization: str | None, code: str) -> None:
    app = App()
    headers = {"authorization": authorization} if authorization is not None else {}
    async with serving(app) as port:
        for method, path in (("POST", "/v1/thing"), ("DELETE", "/v1/thing/j1"), ("PUT", "/v1/thing")):
            status, doc = await call(port, method, path, {**headers, **JSON_TYPE}, b"{}")
            got, message = error(doc)
            assert (status, got) == (401, code)
            if code == "token_required":
                assert message == (f"{method} needs the API token (Authorization: Bearer <the 64 hex digits of "
                                   f"DATA_DIR/api_token>)")
            else:
                assert message.startswith("wrong API token")
    assert app.calls == []


async def test_with_allow_remote_every_request_needs_the_token() -> None:
    app = App()
    async with serving(app, Gate(TOKEN, allow_remote=True)) as port:
        status, doc = await call(port, "GET", "/v1/thing")
        assert (status, error(doc)) == (401, ("token_required", "api.allow_remote is on: every request needs the "
                                              "API token (Authorization: Bearer <the 64 hex digits of "
                                              "DATA_DIR/api_token>)"))
        assert (await call(port, "GET", "/v1/thing", {"authorization": "Bearer nope"}))[0] == 401
        assert app.calls == []
        assert (await call(port, "GET", "/v1/thing", AUTH))[0] == 200


async def test_the_token_is_checked_before_the_body_is_read() -> None:
    """An unauthorised upload is refused on its head: the 1 MB body it announces is never waited for."""
    app = App()
    async with serving(app, limits=Limits(idle_timeout_s=30)) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(f"POST /v1/bytes HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {BYTES}\r\n"
                              f"content-length: 1000000\r\n\r\n".encode())
        with trio.fail_after(5):
            reply = await read_all(stream)
    assert reply.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: Bearer" in reply


# --- connections ------------------------------------------------------------------------------------------


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything ``stream`` receives until the server closes it (b"" when it closed it unanswered); then closes
    ``stream``."""
    data = b""
    async with stream:
        with trio.fail_after(10):
            while True:
                try:
                    piece = await stream.receive_some(65536)
                except trio.BrokenResourceError:  # reset: closed with our request unread
                    return data
                if not piece:
                    return data
                data += piece


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc/self/fd (Linux)")
async def test_idle_connections_beyond_the_cap_do_not_starve_the_api(caplog: pytest.LogCaptureFixture) -> None:
    """cap + 50 idle or half-sent connections: the API holds at most cap of them (the oldest waiting ones are
    closed to make room), answers a legitimate request at once, and logs it once, without a traceback."""
    cap, extra = 8, 50
    app = App()
    caplog.set_level(logging.INFO, logger="pangea")
    async with serving(app, limits=Limits(connections_max=cap, idle_timeout_s=60)) as port:
        before = open_fds()
        idle = []
        for i in range(cap + extra):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if i % 2:
                await stream.send_all(b"GET /v1/thing HT")  # a slow client: half a request line
            idle.append(stream)
        with trio.fail_after(5):
            assert await call(port, "GET", "/v1/thing") == (200, {"ok": True})
            status, _ = await call(port, "POST", "/v1/thing", {**AUTH, **JSON_TYPE}, b"{}")
            assert status == 200
        # the server side holds at most `cap` sockets: every other idle connection was closed by it
        closed = 0
        for stream in idle[:extra]:
            closed += await read_all(stream) == b""
        assert closed == extra
        assert open_fds() - before <= len(idle) + cap
        for stream in idle[extra:]:
            await stream.aclose()
    full = [r for r in caplog.records if r.getMessage() == "api.connections_full"]
    assert len(full) == 1
    assert not any(r.exc_info or "Traceback" in r.getMessage() for r in caplog.records)


async def test_beyond_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once() -> None:
    cap = 4
    app = App()
    async with serving(app, limits=Limits(connections_max=cap)) as port, trio.open_nursery() as nursery:
        answers: list[int] = []

        async def busy_call() -> None:
            answers.append((await call(port, "GET", "/v1/busy"))[0])

        for _ in range(cap):
            nursery.start_soon(busy_call)
        with trio.fail_after(5):
            while app.busy < cap:  # noqa: ASYNC110 - the handlers run in this process; bounded by the deadline
                await trio.sleep(0.01)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(f"GET /v1/thing HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert await read_all(stream) == b""  # closed, unanswered, at once
        app.release.set()
    assert answers == [200] * cap
    assert [c[1] for c in app.calls] == ["/v1/busy"] * cap


async def test_an_idle_client_is_dropped_after_the_idle_timeout() -> None:
    app = App()
    async with serving(app, limits=Limits(idle_timeout_s=0.2)) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        assert await read_all(stream) == b""
        assert 0.15 < trio.current_time() - start < 5
        assert (await call(port, "GET", "/v1/thing"))[0] == 200


async def test_a_handler_that_runs_too_long_is_answered_504(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "HANDLER_TIMEOUT_S", 0.1)
    app = App()
    async with serving(app) as port:
        status, doc = await call(port, "GET", "/v1/busy")
    assert (status, error(doc)) == (504, ("timeout", "/v1/busy was not answered within 0.1 s"))


def test_host_names() -> None:
    assert [api.host_name(h) for h in ("127.0.0.1:5101", "[::1]:80", "[::1]", "::1", "LocalHost.", "a.b:1")] == [
        "127.0.0.1", "::1", "::1", "::1", "localhost", "a.b"]
    assert [api.is_loopback(n) for n in ("127.0.0.1", "127.9.9.9", "::1", "localhost", "0.0.0.0", "evil.example",
                                         )] == [True, True, True, True, False, False]


def test_the_error_document_has_the_usual_shape() -> None:
    response = api._error(401, "token_required", "x", (("www-authenticate", "Bearer"),))
    assert json.loads(response.body) == {"error": {"code": "token_required", "message": "x"}}
    assert response.headers == (("www-authenticate", "Bearer"),)


# --- the token on disk, and the SDK client that sends it ----------------------------------------------------


def test_the_peer_makes_its_token_once_only_its_owner_may_read(tmp_path: Path) -> None:
    token = load_or_create_api_token(tmp_path)
    path = tmp_path / "api_token"
    assert len(token) == 64
    assert int(token, 16) >= 0
    assert path.read_text() == token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_api_token(tmp_path) == token  # kept across restarts
    assert read_api_token(tmp_path) == token
    (tmp_path / "other").mkdir()
    assert load_or_create_api_token(tmp_path / "other") != token  # each peer its own


@pytest.mark.parametrize(("content", "mode", "problem"), [
    ("not a token\n", 0o600, "is corrupt (expected 64 hex digits); delete it and restart the peer to make a new one"),
    ("ab" * 32 + "\n", 0o644, "has mode 0644; other users could use the peer's API (run: chmod 600 "),
])
def test_a_bad_token_file_is_one_line_naming_the_fix(tmp_path: Path, content: str, mode: int, problem: str) -> None:
    path = tmp_path / "api_token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(IdentityError) as info:
        load_or_create_api_token(tmp_path)
    assert str(info.value).startswith(f"API token file {path} ")
    assert problem in str(info.value)


def test_the_client_reads_no_token_or_refuses_a_garbled_one(tmp_path: Path) -> None:
    assert read_api_token(tmp_path) is None
    (tmp_path / "api_token").write_text("garbage")
    with pytest.raises(ApiUnavailable, match="is not an API token"):
        read_api_token(tmp_path)


async def test_the_sdk_client_of_a_data_dir_sends_the_token_and_a_tokenless_one_can_only_read(tmp_path: Path) -> None:
    app = App()
    async with serving(app) as port:
        (tmp_path / "api").write_text(f"127.0.0.1:{port}\n")
        (tmp_path / "api_token").write_text(TOKEN + "\n")

        def upload() -> str:
            with Client.for_data_dir(tmp_path, timeout_s=4) as client:
                return client.upload_block(b"\x00bytes")  # a change: its token and octet-stream type pass
        assert await trio.to_thread.run_sync(upload) == "c1"
        assert app.calls[-1] == ("POST", "/v1/blocks", b"\x00bytes")

        def cancel_and_wait() -> Any:
            with Client.for_data_dir(tmp_path, timeout_s=4) as client:
                client.cancel("j1")
                return client.wait_job("j1", 3, timeout_s=100)  # asks for half its own timeout at most
        assert await trio.to_thread.run_sync(cancel_and_wait) == {"timeout_s": "2", "seen": "3"}

        def without_token() -> None:
            with Client(f"127.0.0.1:{port}") as client:
                assert client.call("GET", "/v1/thing") == {"ok": True}
                client.cancel("j1")
        with pytest.raises(ApiCallFailed) as info:
            await trio.to_thread.run_sync(without_token)
        assert (info.value.status, info.value.code) == (401, "token_required")
        assert str(info.value).startswith("DELETE needs the API token")
