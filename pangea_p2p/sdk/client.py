"""A client of the local HTTP API of a running peer (``pangea node``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.errors import PangeaError

API_FILE_NAME = "api"


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
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        hint = "start one with `pangea node`"
        raise ApiUnavailable(f"no peer is running with data dir {data_dir} (no {path}); {hint}") from None
    except OSError as exc:
        raise ApiUnavailable(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        text = "binary data"
    host, sep, port = text.rpartition(":")
    if sep and host.isprintable() and port.isdigit() and 0 < int(port) <= 65535 and len(text) <= 300:
        return text
    raise ApiUnavailable(
        f"{path} does not hold the API's host:port (it holds {text[:40]!r}): if no peer runs with data dir "
        f"{data_dir}, delete that file; else restart the peer, or give its address with --api HOST:PORT"
    )


class Client:
    """``Client("127.0.0.1:5101")`` or ``Client.for_data_dir(path)``; methods return decoded JSON."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        self.address = address
        self.base_url = f"http://{address}"
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, trust_env=False)

    @classmethod
    def for_data_dir(cls, data_dir: Path, timeout_s: float = 30.0) -> Client:
        return cls(api_address(data_dir), timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, json: Any = None) -> Any:
        return self._decode(path, self._send(method, path, json=json))

    def call_bytes(self, method: str, path: str, body: bytes) -> Any:
        return self._decode(path, self._send(method, path, content=body))

    def raw(self, method: str, path: str, body: bytes | None = None) -> bytes:
        response = self._send(method, path, content=body)
        if response.status_code >= 400:
            self._decode(path, response)
        return response.content

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"no peer answers at {self.base_url} ({type(exc).__name__})") from None

    def _decode(self, path: str, response: httpx.Response) -> Any:
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
        return self.call("GET", f"/v1/jobs/{job_id}/wait?timeout_s={timeout_s}&seen={seen}")

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
