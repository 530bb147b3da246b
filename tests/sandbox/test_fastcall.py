"""The private fast path agrees with wasmtime-py's public API (guards the pinned-version assumption)."""

from __future__ import annotations

import pytest
from wasmtime import Store

from pangea_p2p.sandbox import SandboxLimits
from tests.sandbox.conftest import guest, u32


def _public_api_run(executor, name: str, data: bytes, fuel: int) -> tuple[bytes, int]:
    cid, module = guest(name)
    compiled = executor.compile(cid, module)
    store = Store(executor.engine)
    store.set_fuel(fuel)
    store.set_epoch_deadline(10_000)
    exports = compiled.pre.instantiate(store).exports(store)
    ptr = exports["alloc"](store, len(data))
    exports["memory"].write(store, data, ptr)
    packed = exports["run"](store, ptr, len(data)) & 0xFFFF_FFFF_FFFF_FFFF
    out = exports["memory"].read(store, packed & 0xFFFFFFFF, (packed & 0xFFFFFFFF) + (packed >> 32))
    return bytes(out), fuel - store.get_fuel()


@pytest.mark.parametrize(
    ("name", "data"),
    [("echo", b"abc" * 1000), ("sha256", b"x" * 777), ("probe", b"F" + u32(12345)), ("wordcount_map", b"a b a")],
)
def test_fast_path_equals_public_api(executor, name, data):
    cid, module = guest(name)
    fast = executor.run(cid, module, data, SandboxLimits(fuel_max=10**9))
    slow_output, slow_fuel = _public_api_run(executor, name, data, 10**9)
    assert fast.unwrap() == slow_output
    assert fast.report.fuel_used == slow_fuel


def test_fast_path_accepts_bytearray_and_memoryview(executor):
    cid, module = guest("echo")
    data = bytes(range(256)) * 10
    assert executor.run(cid, module, bytearray(data)).unwrap() == data
    assert executor.run(cid, module, memoryview(data)).unwrap() == data
    assert executor.run(cid, module, memoryview(bytearray(data))[10:]).unwrap() == data[10:]
