"""Compile bombs: refused unread when their shape says so, else bounded in time and memory by a compile
process of their own; the sandbox process keeps neither the memory nor the time; the module cache is
bounded in bytes."""

from __future__ import annotations

import os

import pytest
import trio

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox import Executor, SandboxConfig, open_sandbox
from pangea_p2p.sandbox import executor as executor_module
from tests.sandbox.conftest import HEAVY_BODY, bulk_module, guest

MiB = 1 << 20


def _no_compiling(*args, **kwargs):
    raise AssertionError("a module refused by its shape reached the compiler")


@pytest.mark.parametrize(("module", "phrase"), [
    (bulk_module(100_000), "defines 100002 functions; this node compiles at most 20000"),
    (bulk_module(1, b"\x00" + b"\x01\x01" * 600_000 + b"\x0b"), "function body of 1200002 bytes"),
    (bulk_module(1, table=10_000_000), "table of 10000000 elements"),
])
def test_a_module_whose_shape_is_a_bomb_is_refused_unread(monkeypatch, module, phrase):
    monkeypatch.setattr(executor_module, "compile_isolated", _no_compiling)
    cid, data = module
    with Executor(SandboxConfig(workers=1)) as ex:
        result = ex.run(cid, data, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_MODULE
    assert phrase in result.failure.message


def test_a_module_that_compiles_too_slowly_is_rejected_at_the_compile_deadline():
    cid, data = bulk_module(19_000, HEAVY_BODY)  # ~2.5 s to compile on the 2-core machine
    with Executor(SandboxConfig(workers=1, compile_time_s_max=1.0)) as ex:
        result = ex.run(cid, data, b"")
        assert result.failure is not None
        assert result.failure.kind is FailureKind.REJECTED
        assert "did not compile within 1 s" in result.failure.message
        again = ex.run(cid, data, b"")
        assert again.failure is not None
        assert again.failure.message == result.failure.message, "remembered by CID: not compiled twice"


def test_a_module_that_needs_too_much_memory_to_compile_is_rejected():
    cid, data = bulk_module(100_000)  # ~630 MiB to compile
    config = SandboxConfig(workers=1, module_functions_max=200_000, compile_memory_bytes_max=256 * MiB)
    with Executor(config) as ex:
        result = ex.run(cid, data, b"")
    assert result.failure is not None
    assert result.failure.kind is FailureKind.REJECTED
    assert "needed more than the 256 MiB" in result.failure.message


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
async def test_the_sandbox_process_gives_no_memory_to_compile_bombs_and_serves_the_next_task():
    config = SandboxConfig(workers=1, module_functions_max=200_000, compile_memory_bytes_max=512 * MiB,
                           compile_time_s_max=2.0)
    echo_cid, echo = guest("echo")
    async with open_sandbox(config) as sandbox:
        assert (await sandbox.run(echo_cid, echo, b"warm")).unwrap() == b"warm"
        (pid,) = sandbox.process_pids()
        before = _rss_bytes(pid)
        for functions in (100_000, 150_000, 100_001):  # each a new content id, each refused
            cid, data = bulk_module(functions)
            with trio.fail_after(60):
                result = await sandbox.run(cid, data, b"")
            assert result.failure is not None
            assert result.failure.kind is FailureKind.REJECTED, result.failure
        assert sandbox.process_pids() == [pid], "the sandbox process itself was never killed"
        assert _rss_bytes(pid) - before < 20 * MiB
        assert (await sandbox.run(echo_cid, echo, b"next")).unwrap() == b"next"
        assert sandbox.stats().crashed == 0


def test_the_compiled_module_cache_is_bounded_in_bytes():
    modules = [bulk_module(2_000 + i, HEAVY_BODY) for i in range(4)]  # ~0.6 MB of native code each
    with Executor(SandboxConfig(workers=1, module_cache_bytes_max=1 * MiB)) as ex:
        for cid, data in modules:
            assert ex.run(cid, data, b"").ok
            assert ex.cached_bytes <= 1 * MiB or len(ex.compiled_cids()) == 1
        assert ex.compiled_cids() == [modules[-1][0]], "older modules evicted for the newest"
        cid, data = modules[0]
        assert ex.run(cid, data, b"").ok, "an evicted module compiles again"
