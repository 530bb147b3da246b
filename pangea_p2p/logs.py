"""Structured logging of every part of a peer: an event name plus key=value fields, as text or JSON lines.

    log.info("peer.started", peer_id=..., addrs=[...])
    2026-11-24T16:01:02.345Z info  peer.started peer_id=12D3KooW... addrs=['/ip4/...']

py-libp2p's own loggers stay silent unless ``log.libp2p_level`` asks for them (see net/workarounds.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections import deque
from typing import Any, TextIO

ROOT = "pangea"


class EventLogger:
    """A thin wrapper that turns keyword arguments into structured fields."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(f"{ROOT}.{name}")

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"fields": fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def short_trace(exc: BaseException, frames: int = 3) -> str:
    """The last ``frames`` lines of ``exc``'s traceback on one line (a log field for a bug's report)."""
    lines = traceback.format_exception(exc)[-frames:]
    return " | ".join(line.strip().replace("\n", " ") for line in lines)


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.as_json:
            doc = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
            doc.update(fields)
            return json.dumps(doc, default=str)
        kv = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{ts} {record.levelname.lower():<7} {record.getMessage()} {kv}".rstrip()


class RecentRecords(logging.Handler):
    """The last ``size`` records at ``level`` or above of pangea's loggers, as JSON-ready dicts, and a count per
    level (a peer's "recent errors": the dashboard and /metrics). ``attach`` and ``detach`` it. Loggers are the
    process's: where several peers run in one process (tests), each ring holds the records of all of them."""

    FIELD_CHARS_MAX = 500

    def __init__(self, size: int = 200, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.ring: deque[dict[str, Any]] = deque(maxlen=size)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        self.counts[level] = self.counts.get(level, 0) + 1
        fields: dict[str, Any] = getattr(record, "fields", {})
        self.ring.append({"ts": record.created, "level": level, "logger": record.name, "event": record.getMessage(),
                          "fields": {k: str(v)[: self.FIELD_CHARS_MAX] for k, v in fields.items()}})

    def records(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self.ring))

    def attach(self) -> None:
        logging.getLogger(ROOT).addHandler(self)

    def detach(self) -> None:
        logging.getLogger(ROOT).removeHandler(self)


def configure(level: str = "info", fmt: str = "text", libp2p_level: str = "off", stream: TextIO | None = None) -> None:
    """Send pangea's events (and optionally libp2p's) to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    lib = logging.getLogger("libp2p")
    lib.handlers[:] = [logging.NullHandler()]
    if libp2p_level != "off":
        lib.addHandler(handler)
        lib.setLevel(libp2p_level.upper())
