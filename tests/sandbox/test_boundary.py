"""What callers hand the sandbox: inputs seen as bytes whatever the buffer, content ids in any spelling."""

from __future__ import annotations

import array
import mmap

import pytest
import trio
from multiformats import CID

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import FailureKind, LocalProtocolError
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits, open_sandbox
from pangea_p2p.sandbox.config import GiB
from tests.sandbox.conftest import guest, wat_module

SPELLINGS = ("base32upper", "base58btc", "base64", "base64url", "base16", "base36")


def _spelling(cid: str, base: str) -> str:
    return str(CID.decode(cid).encode(base))


def _module_whose_base64_cid_has_a_slash() -> tuple[str, bytes]:
    for i in range(1000):
        cid, module = wat_module(f"""(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const {16 + i})
            (func (export "run") (param i32 i32) (result i64) i64.const 0))""")
        if "/" in _spelling(cid, "base64"):
            return cid, module
    raise AssertionError("no module found")  # pragma: no cover - each try succeeds with p ~ 1/2


# -- inputs ----------------------------------------------------------------------------------------------


def test_a_view_with_wide_items_is_copied_as_all_its_bytes(executor):
    cid, module = guest("echo")
    doubles = array.array("d", [1.5, -2.25] * 5)
    assert executor.run(cid, module, memoryview(doubles)).unwrap() == doubles.tobytes()
    assert executor.run(cid, module, doubles).unwrap() == doubles.tobytes()  # type: ignore[arg-type]
    matrix = memoryview(bytearray(range(24))).cast("B", (4, 6))
    assert executor.run(cid, module, matrix).unwrap() == bytes(range(24))


@pytest.mark.parametrize("bad", [memoryview(bytes(200))[::2], "text", 12345])
def test_a_strided_view_or_a_non_buffer_is_the_callers_bug(executor, bad):
    cid, module = guest("echo")
    with pytest.raises(LocalProtocolError, match="task input must be"):
        executor.run(cid, module, bad)
    assert executor.run(cid, module, b"still fine").unwrap() == b"still fine"


async def test_pool_wide_items_strided_views_and_the_next_caller():
    cid, module = guest("echo")
    doubles = array.array("d", [1.5] * 10)
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        assert (await sandbox.run(cid, module, memoryview(doubles))).unwrap() == doubles.tobytes()
        assert (await sandbox.run(cid, module, b"next")).unwrap() == b"next"
        with pytest.raises(LocalProtocolError, match="C-contiguous"):
            await sandbox.run(cid, module, memoryview(bytes(300_000))[::2])
        big = array.array("q", range(20_000))  # above the small-input path: sent as a view
        assert (await sandbox.run(cid, module, memoryview(big))).unwrap() == big.tobytes()
        assert (await sandbox.run(cid, module, b"after")).unwrap() == b"after"
        assert sandbox.stats().crashed == 0


@pytest.fixture
def four_gib_view(tmp_path):
    """A 4 GiB read-only input that costs no memory (a sparse file, mapped)."""
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(4 * GiB)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        yield view
        view.release()


FOUR_GIB = SandboxConfig(workers=1, limits_max=SandboxLimits(memory_bytes_max=4 * GiB))


def test_an_input_of_four_gib_is_refused_not_truncated(four_gib_view):
    cid, module = guest("echo")
    with Executor(FOUR_GIB) as ex:
        result = ex.run(cid, module, four_gib_view, SandboxLimits(memory_bytes_max=4 * GiB))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INVALID_INPUT
    assert "below 4 GiB" in result.failure.message
    assert result.report.fuel_used == 0


async def test_pool_refuses_an_input_of_four_gib_before_the_pipe(four_gib_view):
    cid, module = guest("echo")
    async with open_sandbox(FOUR_GIB) as sandbox:
        result = await sandbox.run(cid, module, four_gib_view, SandboxLimits(memory_bytes_max=4 * GiB))
        assert result.failure is not None
        assert result.failure.kind is FailureKind.INVALID_INPUT
        assert sandbox.stats().completed == 0
        with trio.fail_after(60):
            assert (await sandbox.run(cid, module, b"ok")).unwrap() == b"ok"


# -- content ids -----------------------------------------------------------------------------------------


def test_every_spelling_of_a_cid_names_one_compiled_module(executor):
    cid, module = wat_module('(module (memory (export "memory") 1) (global i32 (i32.const 7)) '
                             '(func (export "alloc") (param i32) (result i32) i32.const 16) '
                             '(func (export "run") (param i32 i32) (result i64) i64.const 0))')
    with Executor(SandboxConfig(workers=1)) as ex:
        for base in SPELLINGS:
            assert ex.run(_spelling(cid, base), module, b"").ok, base
        assert ex.compiled_cids() == [cid]
        assert ex.is_compiled(_spelling(cid, "base58btc"))
        assert ex.run(_spelling(cid, "base36"), None, b"").ok  # compiled: no bytes needed, any spelling
    assert executor.run("not-a-cid", module, b"").failure.kind is FailureKind.INVALID_MODULE


def test_disk_cache_files_are_named_by_the_canonical_cid(tmp_path):
    cid, module = _module_whose_base64_cid_has_a_slash()
    b64 = _spelling(cid, "base64")
    cache = tmp_path / "cache"
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as ex:
        assert ex.run(b64, module, b"").ok
    names = [p.name for p in cache.iterdir()]
    assert len(names) == 1
    assert names[0].startswith(cid + ".")
    assert not any(p.is_dir() for p in cache.iterdir())


async def test_pool_sends_a_module_once_whatever_its_spelling():
    cid, module = guest("echo")
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        for base in SPELLINGS:
            assert (await sandbox.run(_spelling(cid, base), module, base.encode())).unwrap() == base.encode()
        assert sandbox.stats().modules_sent == 1
        assert cid_of(module) == cid
        wrong = await sandbox.run(_spelling(cid, "base58btc"), module + b"\x00", b"")
        assert wrong.failure is not None
        assert wrong.failure.kind is FailureKind.INVALID_MODULE
