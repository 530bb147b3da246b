"""A client of the local HTTP API of a running peer (``pangea node``).

It speaks HTTP/1.1 over one kept-alive connection with the standard library's ``http.client``: every `pangea`
client command goes through it, and importing httpx alone would take most of such a command's time budget.
It sends the peer's API token (DATA_DIR/api_token; ``Client.for_data_dir`` reads it) as ``Authorization: Bearer``
on every request: the peer asks for it on every request that changes anything, and on all of them when
``api.allow_remote`` is on (pangea_p2p/node/api.py).
"""

from __future__ import annotations

import http.client
import json as jsonlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pangea_p2p.errors import PangeaError

if TYPE_CHECKING:
    from pangea_p2p.core.jobs.request import JobRequest

API_FILE_NAME = "api"
API_TOKEN_FILE_NAME = "api_token"  # written by the peer (pangea_p2p/node/keyfile.py)


class ApiUnavailable(PangeaError):
    """No peer answers at the API address (not running, or another data dir)."""


class ApiCallFailed(PangeaError):
    """The peer answered with an error; ``code`` is its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def api_address(data_dir: Path) -> str:
    """The ``host:port`` a peer running on ``data_dir`` serves its API on (it writes DATA_DIR/api)."""
    path = data_dir / API_FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        hint = "start one with `pangea node`"
        raise ApiUnavailable(f"no peer is running with data dir {data_dir} (no {path}); {hint}") from None
    except OSError as exc:
        raise ApiUnavailable(f"cannot read {path}: {exc.strerror}") from None
    text = raw.decode("ascii", errors="replace").strip()
    host, sep, port = text.rpartition(":")
    if (sep and host and text.isascii() and host.isprintable() and " " not in host and port.isdigit()
            and 0 < int(port) <= 65535 and len(text) <= 300):
        return text
    raise ApiUnavailable(
        f"{path} does not hold the API's host:port (it holds {raw[:40]!r}): if no peer runs with data dir "
        f"{data_dir}, delete that file; else restart the peer, or give its address with --api HOST:PORT"
    )


@dataclass(frozen=True, slots=True)
class _Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


# a kept-alive connection the peer closed meanwhile fails like this on its next request: send it again, once
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def read_api_token(data_dir: Path) -> str | None:
    """The API token of the peer of ``data_dir`` (DATA_DIR/api_token), None when there is none."""
    path = data_dir / API_TOKEN_FILE_NAME
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiUnavailable(f"cannot read the API token {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(token) != 64 or not all(c in "0123456789abcdef" for c in token):
        raise ApiUnavailable(f"{path} is not an API token (64 hex digits); restart the peer after deleting it")
    return token


class Client:
    """``Client("127.0.0.1:5101", token)`` or ``Client.for_data_dir(path)``; methods return decoded JSON.

    ``token``: the peer's API token (None: send none; reads still work on a loopback peer). ``timeout_s``: how long
    a request may wait for its answer (a job wait asks the peer for at most half of it, so it is answered first).
    """

    def __init__(self, address: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.address = address
        self.base_url = f"http://{address}"
        self.timeout_s = timeout_s
        # sent with every request
        self._headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path, timeout_s: float = 30.0, token: str | None = None) -> Client:
        """The client of the peer running on ``data_dir``, with its token (``token`` overrides the file's)."""
        return cls(api_address(data_dir), token or read_api_token(data_dir), timeout_s)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, json: Any = None) -> Any:
        body = None if json is None else jsonlib.dumps(json).encode()
        return self._decode(path, self._send(method, path, body, "application/json"))

    def call_bytes(self, method: str, path: str, body: bytes) -> Any:
        return self._decode(path, self._send(method, path, body, "application/octet-stream"))

    def raw(self, method: str, path: str, body: bytes | None = None) -> bytes:
        response = self._send(method, path, body, "application/octet-stream")
        if response.status_code >= 400:
            self._decode(path, response)
        return response.content

    def _send(self, method: str, path: str, body: bytes | None, content_type: str) -> _Response:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.address, timeout=self.timeout_s)
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                content = response.read()
                if response.will_close:
                    self.close()
                return _Response(response.status, content)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if not (reused and attempt == 0 and isinstance(exc, _STALE)):
                    raise ApiUnavailable(f"no peer answers at {self.base_url} ({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def _decode(self, path: str, response: _Response) -> Any:
        try:
            doc = response.json()
        except ValueError:
            raise ApiCallFailed(response.status_code, "bad_response", f"{path}: not JSON") from None
        if response.status_code >= 400:
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise ApiCallFailed(response.status_code, err.get("code", "error"), err.get("message", response.text))
        return doc

    def id(self) -> Any:
        return self.call("GET", "/v1/id")

    def peers(self) -> Any:
        return self.call("GET", "/v1/peers")

    def capacity(self) -> Any:
        return self.call("GET", "/v1/capacity")

    def health(self) -> Any:
        return self.call("GET", "/v1/health")

    def upload_block(self, data: bytes) -> str:
        """Store ``data`` in the peer's block store; its content id."""
        return str(self.call_bytes("POST", "/v1/blocks", data)["cid"])

    def upload_chunks(self, framed: bytes) -> list[str]:
        """Store every chunk of a framed chunk list; their content ids, in order."""
        return [str(c) for c in self.call_bytes("POST", "/v1/chunks", framed)["cids"]]

    def block(self, cid: str) -> bytes:
        return self.raw("GET", f"/v1/blocks/{cid}")

    def submit_job(self, request: JobRequest) -> Any:
        """Start the job ``request`` asks for (its module and chunks uploaded first); the job's status."""
        return self.call("POST", "/v1/jobs", request.to_json())

    def jobs(self) -> Any:
        return self.call("GET", "/v1/jobs")

    def job(self, job_id: str) -> Any:
        return self.call("GET", f"/v1/jobs/{job_id}")

    def wait_job(self, job_id: str, seen: int, timeout_s: float = 10.0) -> Any:
        """The job's status once its version is no longer ``seen``, or after ``timeout_s`` (capped at half this
        client's timeout, and by the peer at its WAIT_S_MAX) with the status as it is."""
        timeout_s = min(timeout_s, self.timeout_s / 2)
        return self.call("GET", f"/v1/jobs/{job_id}/wait?timeout_s={timeout_s:g}&seen={seen}")

    def job_result(self, job_id: str) -> Any:
        return self.call("GET", f"/v1/jobs/{job_id}/result")

    def explain(self, job_id: str, *, done: bool = False) -> Any:
        """Why each task of the job is where it is (``done``: the finished tasks' histories too)."""
        return self.call("GET", f"/v1/jobs/{job_id}/explain" + ("?all=1" if done else ""))

    def job_logs(self, job_id: str) -> Any:
        """What each task of the job printed: ``{"tasks": {task_id: {"worker", "log"}}}`` (unsigned)."""
        return self.call("GET", f"/v1/jobs/{job_id}/logs")

    def cancel(self, job_id: str) -> Any:
        return self.call("DELETE", f"/v1/jobs/{job_id}")

    def trust(self) -> Any:
        """This peer's trust scores of the workers it checked, best first."""
        return self.call("GET", "/v1/trust")

    def job_evidence(self, job_id: str, start: int = 0, *, inputs: bool = True) -> bytes:
        """One page of the job's evidence from task ``start`` on (``pangea_p2p.core.jobs.evidence``): what
        ``sdk.verify.verify_job`` checks offline; ``inputs``: with each task's framed input."""
        return self.raw("GET", f"/v1/jobs/{job_id}/evidence?start={start}&inputs={int(inputs)}")
