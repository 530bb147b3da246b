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
