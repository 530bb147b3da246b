"""The sandbox process on its own: the wire protocol, NEED_MODULE, chunked runs, malformed requests, exit on
stdin close, and what the process gives up (resource limits, no new privileges)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.harden import process_env, restrict_process
from pangea_p2p.sandbox.ipc import (
    READY,
    REQUEST,
    RESPONSE,
    STATUS_NEED_MODULE,
    IpcError,
    decode_response_body,
    decode_response_head,
    encode_compile,
    encode_run_head,
)
from tests.sandbox.conftest import guest

OUTPUT_MAX = 1 << 24


class _Proc:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pangea_p2p.sandbox.process",
                                      SandboxConfig(workers=1).to_json()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seq = 0
        assert self.proc.stdout is not None
        assert self.proc.stdout.read(len(READY)) == READY

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def response(self, count: int):
        assert self.proc.stdout is not None
        head = decode_response_head(self.proc.stdout.read(RESPONSE.size), self.seq, 4 * count + OUTPUT_MAX)
        if head.status == STATUS_NEED_MODULE:
            return head.status, None
        return head.status, decode_response_body(head, self.proc.stdout.read(head.rest_len))

    def run(self, cid: str, chunks: list[bytes], limits: SandboxLimits):
        self.seq += 1
        self.send(encode_run_head(self.seq, cid, [len(c) for c in chunks], limits) + b"".join(chunks))
        return self.response(len(chunks))

    def compile(self, cid: str, module: bytes):
        self.seq += 1
        self.send(encode_compile(self.seq, cid, module))
        return self.response(0)

    def close(self) -> int:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def worker():
    proc = _Proc()
    yield proc
    proc.close()


def test_worker_protocol_round_trip(worker):
    cid, module = guest("echo")
    bad_cid, bad_module = guest("probe")
    limits = SandboxLimits()
    status, _ = worker.run(cid, [b"hi"], limits)  # never sent the module: the worker must ask for it
    assert status == STATUS_NEED_MODULE
    status, compiled = worker.compile(cid, module)
    assert status == 0
    assert compiled.unwrap() == []
    status, result = worker.run(cid, [b"hi"], limits)
    assert status == 0
    assert result.unwrap() == [b"hi"]
    assert worker.run(cid, [b"a", b"", b"ccc"], limits)[1].unwrap() == [b"a", b"", b"ccc"]
    assert worker.compile(bad_cid, bad_module)[0] == 0
    status, result = worker.run(bad_cid, [b"Tu"], limits)
    assert status == FailureKind.TRAP
    assert result.failure.trap_kind == "unreachable"
    assert result.failed_index == 0
    assert worker.close() == 0


def test_worker_reports_a_refused_module_at_compile_time(worker):
    cid, module = guest("forbidden_import")
    status, result = worker.compile(cid, module)
    assert status == FailureKind.FORBIDDEN_IMPORT
    assert result.failure.kind is FailureKind.FORBIDDEN_IMPORT
    status, result = worker.run(cid, [b""], SandboxLimits())  # remembered: no bytes needed for the verdict
    assert status == FailureKind.FORBIDDEN_IMPORT


def test_a_malformed_request_ends_the_worker_with_a_clear_message(worker):
    worker.send(REQUEST.pack(9, 0, 0, 1, 0, 0, 0, 0, 0.0, 0))
    assert worker.proc.wait(timeout=30) == 1
    assert b"malformed request" in worker.proc.stderr.read()


def test_chunk_lengths_that_do_not_match_the_body_end_the_worker(worker):
    cid, module = guest("echo")
    worker.compile(cid, module)
    head = bytearray(encode_run_head(99, cid, [3], SandboxLimits()))
    struct.pack_into("<Q", head, 12, 4 + 2)  # body_len: the u32 length, then 2 bytes where 3 are announced
    worker.send(bytes(head) + b"ab")
    assert worker.proc.wait(timeout=30) == 1
    assert b"chunk lengths add up" in worker.proc.stderr.read()


def test_a_response_to_another_request_is_refused():
    cid, module = guest("echo")
    proc = _Proc()
    try:
        proc.compile(cid, module)
        proc.seq += 1
        proc.send(encode_run_head(proc.seq, cid, [1], SandboxLimits()) + b"x")
        assert proc.proc.stdout is not None
        with pytest.raises(IpcError, match="response to request"):
            decode_response_head(proc.proc.stdout.read(RESPONSE.size), proc.seq + 1, OUTPUT_MAX)
    finally:
        proc.close()


def test_worker_refuses_bad_usage():
    proc = subprocess.run([sys.executable, "-m", "pangea_p2p.sandbox.process"], capture_output=True, timeout=30,
                          check=False)
    assert proc.returncode == 2
    assert b"usage" in proc.stderr


def _proc_status(pid: int) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    limits = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f.readlines()[1:]:
            name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
            limits[name] = (soft, hard)
    return status, limits


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_process_has_no_core_dumps_bounded_files_and_no_new_privileges(worker):
    status, limits = _proc_status(worker.proc.pid)
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max open files"] == ("64", "64")
    assert status["NoNewPrivs"].strip() == "1"
    cid, module = guest("sha256")  # and it still works: compiling and running need no more
    worker.compile(cid, module)
    assert worker.run(cid, [b"abc"], SandboxLimits())[1].ok


def test_restrict_process_reports_what_it_could_not_apply(monkeypatch, caplog):
    from pangea_p2p.sandbox import harden

    def refuse(*args):
        raise ValueError("not allowed here")

    # (in this test process: nothing may really be applied, hence both patches)
    monkeypatch.setattr(harden.sys, "platform", "darwin")
    monkeypatch.setattr(harden.resource, "setrlimit", refuse)
    with caplog.at_level("DEBUG", logger="pangea_p2p.sandbox.harden"):
        problems = restrict_process()
    assert problems == ["RLIMIT_CORE: not allowed here", "RLIMIT_NOFILE: not allowed here",
                        "prctl is Linux only (this is darwin)"]
    assert "hardening not applied: prctl is Linux only" in caplog.text


def test_process_environment_is_scrubbed():
    parent = {"PATH": "/usr/bin", "HOME": "/root", "PANGEA_KEY": "secret", "PYTHONPATH": "/extra",
              "AWS_SECRET_ACCESS_KEY": "x", "LD_LIBRARY_PATH": "/opt/lib"}
    env = process_env("/pkg", parent)
    assert env == {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib", "PYTHONPATH": "/pkg:/extra",
                   "PANGEA_PARENT_PID": str(os.getpid())}
