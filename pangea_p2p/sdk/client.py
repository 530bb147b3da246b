"""A client of the local HTTP API of a running peer (``pangea node``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

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
        return path.read_text().strip()
    except FileNotFoundError:
        hint = "start one with `pangea node`"
        raise ApiUnavailable(f"no peer is running with data dir {data_dir} (no {path}); {hint}") from None
    except OSError as exc:
        raise ApiUnavailable(f"cannot read {path}: {exc.strerror}") from None


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
        try:
            response = self._http.request(method, path, json=json)
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"no peer answers at {self.base_url} ({type(exc).__name__})") from None
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
