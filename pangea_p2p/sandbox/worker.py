"""A sandbox worker process: ``python -m pangea_p2p.sandbox.worker CONFIG_JSON``.

Reads requests from stdin and writes responses to stdout (``pangea_p2p.sandbox.wire``), one task at a time,
with one ``Executor`` (one wasmtime engine) for its whole life. It exits when stdin closes. Anything else
printed to stdout (a library's stray print) is redirected to stderr so it cannot corrupt the protocol.
SIGINT is ignored: the pool decides when workers stop (a Ctrl-C in a terminal reaches the whole group).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys

from pangea_p2p.sandbox.config import SandboxConfig
from pangea_p2p.sandbox.executor import Executor
from pangea_p2p.sandbox.wire import (
    FLAG_MODULE,
    OP_RUN,
    READY,
    REQUEST,
    decode_request_head,
    encode_need_module,
    encode_response,
)


class _Closed(Exception):
    """stdin reached end of file: the pool wants this worker to exit."""


def _read_into(stream: io.FileIO, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise _Closed
        got += n


def _read(stream: io.FileIO, n: int) -> bytearray:
    buf = bytearray(n)
    _read_into(stream, memoryview(buf))
    return buf


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(config: SandboxConfig, in_fd: int, out_fd: int) -> None:
    """Answer requests on ``in_fd`` until it closes."""
    stream = io.FileIO(in_fd, "rb", closefd=False)
    head = bytearray(REQUEST.size)
    head_view = memoryview(head)
    with Executor(config) as executor:
        _write_all(out_fd, READY)
        while True:
            try:
                _read_into(stream, head_view)
            except _Closed:
                return
            op, flags, cid_len, module_len, input_len, limits = decode_request_head(head)
            if op != OP_RUN:
                raise SystemExit(f"pangea sandbox worker: unknown op {op}")
            cid = bytes(_read(stream, cid_len)).decode("ascii")
            module = bytes(_read(stream, module_len)) if flags & FLAG_MODULE else None
            data = _read(stream, input_len)
            if module is None and not executor.has_module(cid):
                _write_all(out_fd, encode_need_module())
                continue
            result = executor.run(cid, module, data, limits)
            _write_all(out_fd, encode_response(result, cached=executor.is_compiled(cid)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pangea_p2p.sandbox.worker CONFIG_JSON", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = SandboxConfig.from_json(args[0])
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    with contextlib.suppress(BrokenPipeError, _Closed):
        serve(config, 0, out_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
