"""The worker process on its own: the wire protocol, NEED_MODULE, stray stdout, exit on stdin close."""

from __future__ import annotations

import subprocess
import sys

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.wire import READY, RESPONSE, STATUS_NEED_MODULE, decode_response, encode_request_head
from tests.sandbox.conftest import guest


def _read_response(proc: subprocess.Popen[bytes]):
    assert proc.stdout is not None
    head = proc.stdout.read(RESPONSE.size)
    status, _flags, tk_len, payload_len = RESPONSE.unpack(head)[:4]
    rest = proc.stdout.read(tk_len + payload_len)
    return status, decode_response(head, rest[:tk_len], rest[tk_len:])


def _send(proc: subprocess.Popen[bytes], cid: str, module: bytes | None, data: bytes, limits: SandboxLimits) -> None:
    assert proc.stdin is not None
    proc.stdin.write(encode_request_head(cid, module, len(data), limits) + data)
    proc.stdin.flush()


def test_worker_protocol_round_trip():
    cid, module = guest("echo")
    bad_cid, bad_module = guest("probe")
    limits = SandboxLimits()
    proc = subprocess.Popen([sys.executable, "-m", "pangea_p2p.sandbox.worker", SandboxConfig(workers=1).to_json()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(len(READY)) == READY
        _send(proc, cid, None, b"hi", limits)  # never sent the module: the worker must ask for it
        status, _ = _read_response(proc)
        assert status == STATUS_NEED_MODULE
        _send(proc, cid, module, b"hi", limits)
        status, result = _read_response(proc)
        assert status == 0
        assert result.unwrap() == b"hi"
        _send(proc, cid, None, b"again", limits)  # compiled now: no bytes needed
        assert _read_response(proc)[1].unwrap() == b"again"
        _send(proc, bad_cid, bad_module, b"Tu", limits)
        status, result = _read_response(proc)
        assert status == FailureKind.TRAP
        assert result.failure is not None
        assert result.failure.trap_kind == "unreachable"
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_worker_refuses_bad_usage():
    proc = subprocess.run([sys.executable, "-m", "pangea_p2p.sandbox.worker"], capture_output=True, timeout=30,
                          check=False)
    assert proc.returncode == 2
    assert b"usage" in proc.stderr
