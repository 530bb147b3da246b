"""How every command prints: JSON documents with ``--json``, tables with a header row otherwise, and never binary
data onto a terminal.

    print_json(doc)                        one JSON document on stdout (bytes never appear raw: base64 or hex)
    print_table(["ID", "STATE"], rows)     aligned columns under a header; ``empty`` said when there are no rows
    write_output(data, path, text=...)     to a file, or to stdout unless stdout is a terminal and it is not text
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pangea_p2p.errors import PangeaError

_CONTROL = frozenset(range(32)) - {9, 10, 13}  # tab, newline and carriage return are text


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``rows`` under ``headers``, each column as wide as its widest cell (the last one is not padded)."""
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """The table of ``rows``, or the sentence ``empty`` when there are none."""
    print(table(headers, rows) if rows else empty)


def is_text(data: bytes) -> bool:
    """Whether ``data`` reads as text on a terminal: UTF-8 without control characters but tabs and newlines."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not _CONTROL.intersection(data)


def write_output(data: bytes, path: Path | None, *, what: str, hint: str) -> None:
    """Write ``data`` to ``path``, or to stdout. PangeaError, writing nothing, when stdout is a terminal and
    ``data`` is not text: ``what`` names the data, ``hint`` says how else to get it (``-o FILE`` is always said)."""
    if path is None:
        if sys.stdout.isatty() and not is_text(data):
            more = f", or {hint}" if hint else ""
            raise PangeaError(f"{what} is {len(data)} bytes of binary data, not written to the terminal: save it "
                              f"with -o FILE{more}")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise PangeaError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {len(data)} bytes to {path}", file=sys.stderr)
