"""The on-disk cache of compiled modules: reused across executors, only from a private directory."""

from __future__ import annotations

import os

import pytest

from pangea_p2p.errors import ConfigError
from pangea_p2p.sandbox import Executor, SandboxConfig
from pangea_p2p.sandbox import executor as executor_module
from tests.sandbox.conftest import guest


def _cwasm_files(directory):
    return sorted(p for p in directory.iterdir() if p.suffix == ".cwasm")


def test_second_executor_loads_this_nodes_compiled_code_without_compiling(tmp_path, monkeypatch):
    cid, module = guest("sha256")
    cache = tmp_path / "cache"
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as first:
        expected = first.run(cid, module, b"abc").unwrap()
    files = _cwasm_files(cache)
    assert len(files) == 1
    assert files[0].name.startswith(cid)
    assert oct(cache.stat().st_mode & 0o777) == "0o700"

    def no_compiling(*args, **kwargs):
        raise AssertionError("module was compiled although a cached copy exists")

    monkeypatch.setattr(executor_module, "compile_isolated", no_compiling)
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as second:
        assert second.run(cid, module, b"abc").unwrap() == expected


def test_corrupt_cache_file_is_ignored_and_replaced(tmp_path):
    cid, module = guest("echo")
    cache = tmp_path / "cache"
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as ex:
        ex.run(cid, module, b"")
    (path,) = _cwasm_files(cache)
    path.write_bytes(b"garbage, not compiled code")
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as ex:
        assert ex.run(cid, module, b"still works").unwrap() == b"still works"
    assert path.read_bytes() != b"garbage, not compiled code"


def test_cache_file_writable_by_others_is_not_loaded(tmp_path, monkeypatch):
    cid, module = guest("echo")
    cache = tmp_path / "cache"
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as ex:
        ex.run(cid, module, b"")
    (path,) = _cwasm_files(cache)
    os.chmod(path, 0o666)
    compiled = []
    real_compile = executor_module.compile_isolated

    def counting(*args, **kwargs):
        compiled.append(1)
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(executor_module, "compile_isolated", counting)
    with Executor(SandboxConfig(workers=1, cache_dir=cache)) as ex:
        assert ex.run(cid, module, b"x").unwrap() == b"x"
    assert compiled == [1]


def test_shared_cache_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError) as info:
        Executor(SandboxConfig(workers=1, cache_dir=shared))
    assert info.value.key == "cache_dir"
