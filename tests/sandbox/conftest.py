"""Shared helpers of the sandbox tests: one in-process executor per module, guests by name."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from wasmtime import wat2wasm

from pangea_p2p.core.cid import cid_of
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits, SandboxResult

if TYPE_CHECKING:
    from collections.abc import Iterator


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def guest(name: str) -> tuple[str, bytes]:
    data = load_guest(name)
    return cid_of(data), data


def wat_module(text: str) -> tuple[str, bytes]:
    data = wat2wasm(text)
    return cid_of(data), bytes(data)


def run_guest(executor: Executor, name: str, data: bytes = b"", **limits: float) -> SandboxResult:
    cid, module = guest(name)
    return executor.run(cid, module, data, SandboxLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    with Executor(SandboxConfig(workers=1)) as ex:
        yield ex


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _leb(len(payload)) + payload


def _name(text: str) -> bytes:
    return _leb(len(text)) + text.encode()


def bulk_module(functions: int, body: bytes = b"\x00\x0b", *, table: int = 0) -> tuple[str, bytes]:
    """A kind-1 module (memory, alloc, run) padded with ``functions`` copies of a () -> () function of ``body``
    (locals and code), and a table of ``table`` elements: compile bombs, written straight to bytes."""
    types = _section(1, _leb(3) + b"\x60\x00\x00" + b"\x60\x01\x7f\x01\x7f" + b"\x60\x02\x7f\x7f\x01\x7e")
    funcs = _section(3, _leb(functions + 2) + b"\x01\x02" + b"\x00" * functions)
    tables = _section(4, b"\x01\x70\x00" + _leb(table)) if table else b""
    memory = _section(5, b"\x01\x00\x01")
    exports = _section(7, _leb(3) + _name("memory") + b"\x02\x00" + _name("alloc") + b"\x00\x00"
                       + _name("run") + b"\x00\x01")
    alloc = b"\x00\x41\x00\x0b"  # i32.const 0
    run = b"\x00\x42\x00\x0b"  # i64.const 0
    bodies = [alloc, run, *([body] * functions)]
    code = _section(10, _leb(len(bodies)) + b"".join(_leb(len(b)) + b for b in bodies))
    data = b"\x00asm\x01\x00\x00\x00" + types + funcs + tables + memory + exports + code
    return cid_of(data), data


# A body that costs the compiler: 8 i64 locals and 20 rounds of arithmetic on them.
HEAVY_BODY = b"\x01\x08\x7e" + (b"\x42\x01\x21\x00" + b"\x20\x00\x20\x01\x7c\x21\x02") * 20 + b"\x0b"
