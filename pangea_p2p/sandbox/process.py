"""A sandbox process: ``python -m pangea_p2p.sandbox.process CONFIG_JSON``.

Reads requests from stdin and writes responses to stdout (``pangea_p2p.sandbox.ipc``), one at a time,
with one ``Executor`` (one wasmtime engine) for its whole life. It exits when stdin closes, and at once
when the peer dies, even while a guest runs (``harden.die_with_parent``, watching the stdout pipe). Before it
builds the engine it drops what it does not need (``pangea_p2p.sandbox.harden``: no core dumps, bounded
open files, no new privileges). Anything else printed to stdout (a library's stray print) is redirected to
stderr so it cannot corrupt the protocol. SIGINT is ignored: the pool decides when sandbox processes stop (a Ctrl-C
in a terminal reaches the whole group). A malformed request ends the process with a one-line message.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys

from pangea_p2p.errors import SandboxError
from pangea_p2p.sandbox.config import SandboxConfig
from pangea_p2p.sandbox.executor import Executor
from pangea_p2p.sandbox.harden import die_with_parent, restrict_process
from pangea_p2p.sandbox.ipc import (
    OP_COMPILE,
    READY,
    REQUEST,
    IpcError,
    decode_request_head,
    encode_need_module,
    encode_response,
    split_chunks,
)
from pangea_p2p.sandbox.result import ChunksResult, MeteringReport

_COMPILED = ChunksResult([], None, None, MeteringReport(0, 0, 0.0, 0.0, None))


class _Closed(Exception):
    """stdin reached end of file: the pool wants this process to exit."""


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


def _compile(executor: Executor, cid: str, module: bytes) -> ChunksResult:
    try:
        executor.compile(cid, module)
    except SandboxError as exc:
        return ChunksResult.failed(exc.kind, exc.message)
    return _COMPILED


def serve(config: SandboxConfig, in_fd: int, out_fd: int) -> None:
    """Answer requests on ``in_fd`` until it closes."""
    stream = io.FileIO(in_fd, "rb", closefd=False)
    head_buf = bytearray(REQUEST.size)
    head_view = memoryview(head_buf)
    with Executor(config) as executor:
        _write_all(out_fd, READY)
        while True:
            try:
                _read_into(stream, head_view)
            except _Closed:
                return
            try:
                head = decode_request_head(head_buf)
                cid = bytes(_read(stream, head.cid_len)).decode("ascii")
            except (IpcError, UnicodeDecodeError) as exc:
                raise SystemExit(f"pangea sandbox process: {exc}") from None
            body = _read(stream, head.body_len)
            if head.op == OP_COMPILE:
                result = _compile(executor, cid, bytes(body))
            elif not executor.has_module(cid):
                _write_all(out_fd, encode_need_module(head.seq))
                continue
            else:
                assert head.limits is not None
                try:
                    chunks = split_chunks(body, head.chunk_count)
                except IpcError as exc:
                    raise SystemExit(f"pangea sandbox process: {exc}") from None
                result = executor.run_chunks(cid, None, chunks, head.limits)
            _write_all(out_fd, encode_response(head.seq, result, cached=executor.is_compiled(cid)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pangea_p2p.sandbox.process CONFIG_JSON", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    die_with_parent(out_fd, forked_by_waiting_thread=False)  # forked by a trio worker thread that may exit
    restrict_process()
    config = SandboxConfig.from_json(args[0])
    with contextlib.suppress(BrokenPipeError, _Closed):
        serve(config, 0, out_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
