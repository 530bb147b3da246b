"""Client commands against a real HTTP server on 127.0.0.1 (the standard library's, answering as a peer's API
would): the SDK client's transport, what a client command loads (no py-libp2p, no trio), and a reader that goes
away (`pangea job explain J | head`) without a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.sdk.client import ApiCallFailed, ApiUnavailable, Client, api_address

STATUS = {"job_id": "j1", "state": "running", "reason": "", "tasks_total": 4, "elapsed_s": 1.5, "fuel_used": 7,
          "eta_s": None, "progress": {"done": 1, "running": 1, "verifying": 0, "pending": 2, "failed": 0}}
EXPLAIN = {"job_id": "j1", "state": "running", "reason": "",
           "tasks": {f"j1/t{i}": {"state": "pending", "reasons": ["waiting for a worker with a free slot"] * 3}
                     for i in range(20_000)}}


class FakeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: dict[str, tuple[int, bytes]] = {
            "/v1/jobs": (200, json.dumps({"jobs": [STATUS]}).encode()),
            "/v1/jobs/j1": (200, json.dumps(STATUS).encode()),
            "/v1/jobs/j1/explain": (200, json.dumps(EXPLAIN).encode()),
            "/v1/jobs/nope": (404, b'{"error": {"code": "no_such_job", "message": "no job nope on this peer"}}'),
            "/v1/text": (200, b"not json"),
        }
        self.connections = 0
        self.close_after_each = False  # like a peer that closes kept-alive connections between requests

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeApi

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        status, body = self.server.answers.get(self.path, (404, b'{"error": {"code": "x", "message": "no route"}}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.server.close_after_each  # without saying so

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_client_keeps_one_connection_and_reconnects_when_the_peer_closed_it(api: FakeApi) -> None:
    with Client(api.address) as client:
        assert client.job("j1") == STATUS
        assert client.jobs() == {"jobs": [STATUS]}
        assert api.connections == 1
        api.close_after_each = True
        assert client.job("j1") == STATUS  # still on the kept connection, which the server then closes
        assert client.job("j1") == STATUS  # a new one, sent again once
        assert api.connections == 2


def test_the_clients_errors_are_typed_and_one_line(api: FakeApi) -> None:
    with Client(api.address) as client:
        with pytest.raises(ApiCallFailed) as info:
            client.job("nope")
        assert (info.value.status, info.value.code, str(info.value)) == (404, "no_such_job", "no job nope on this peer")
        with pytest.raises(ApiCallFailed, match=r"^/v1/text: not JSON$"):
            client.call("GET", "/v1/text")
    port = api.server_address[1]
    api.shutdown()
    api.server_close()
    for address in (f"127.0.0.1:{port}", "127.0.0.1:notaport"):
        with Client(address) as client, pytest.raises(ApiUnavailable, match=f"^no peer answers at http://{address} "):
            client.health()


HEAVY = ("libp2p", "trio", "multiaddr", "httpx", "wasmtime", "numpy", "pangea_p2p.node.peer", "pangea_p2p.net.overlay",
         "pangea_p2p.node.compute", "pangea_p2p.sim")


def test_a_client_command_loads_neither_libp2p_nor_trio(api: FakeApi) -> None:
    probe = ("import sys\nfrom pangea_p2p.cli.main import main\n"
             f"code = main(['job', 'status', '--api', {api.address!r}, 'j'])\n"
             f"print(code, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == [
        "j1 running: 1/4 done, 1 running, 0 verifying, 2 pending, 0 failed; fuel 7, 1.5s", "0 []"]


def test_a_reader_that_goes_away_is_no_traceback(api: FakeApi) -> None:
    command = [sys.executable, "-m", "pangea_p2p", "job", "explain", "--api", api.address, "j1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"job j1: running\n"  # what `| head -1` reads, then it exits
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 1
    assert err == b""


@pytest.mark.parametrize("content", [b"\x00\xffgarbage\n", b"", b"127.0.0.1", b"a b:80", b"127.0.0.1:http"])
def test_a_garbage_api_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "api").write_bytes(content)
    with pytest.raises(ApiUnavailable, match=rf"^{re.escape(str(tmp_path / 'api'))} does not hold the API's host:port"):
        api_address(tmp_path)
    (tmp_path / "api").write_bytes(b"[::1]:5101\n")
    assert api_address(tmp_path) == "[::1]:5101"
