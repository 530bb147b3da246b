"""The wasmtime engine of one process, its epoch ticker, and the on-disk cache of compiled modules.

One ``Engine`` per process: fuel metering, epoch interruption, NaN canonicalisation (bit-exact floats),
a bounded native stack (above 2 MiB wasmtime aborts the process, so the config refuses it) and none of the
proposals that would add non-determinism or host reach (threads, relaxed SIMD, memory64, GC, components).

The epoch ticker is a daemon thread that increments the engine's epoch every ``epoch_tick_s``; a store
whose deadline is k ticks away traps with ``INTERRUPT`` within k ticks. It works while wasm runs because
wasmtime releases the GIL during guest code.

The disk cache holds ``Module.serialize()`` output (native code) of modules this process compiled, named
``<cid>.<engine fingerprint>.cwasm``. Loading native code is only safe if nobody else could write it, so
the directory and each file must belong to this user and not be writable by group or others; files are
written to a temporary name and renamed, and are read through one open file descriptor that is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from importlib import metadata
from typing import TYPE_CHECKING

from wasmtime import Config, Engine, Module, WasmtimeError

from pangea_p2p.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from pangea_p2p.sandbox.config import SandboxConfig

DISK_CACHE_FILES_MAX = 1024
CWASM_BYTES_MAX = 512 * 1024 * 1024

# Proposals switched off: each either adds non-determinism (threads, relaxed SIMD) or surface we do not need.
_FEATURES_OFF = (
    "wasm_threads", "wasm_relaxed_simd", "wasm_memory64", "wasm_multi_memory", "wasm_gc",
    "wasm_component_model", "wasm_stack_switching", "wasm_custom_page_sizes", "wasm_wide_arithmetic",
    "wasm_exceptions",
)


def engine_settings(config: SandboxConfig) -> dict[str, object]:
    """Every engine setting, as a dict (also the input of the disk cache's fingerprint)."""
    settings: dict[str, object] = {
        "consume_fuel": True,
        "epoch_interruption": True,
        "cranelift_nan_canonicalization": True,
        "max_wasm_stack": config.wasm_stack_bytes,
        "parallel_compilation": False,  # a sandbox process uses one core; the pool uses them all
    }
    settings.update({name: False for name in _FEATURES_OFF})
    return settings


def make_engine(config: SandboxConfig) -> Engine:
    cfg = Config()
    for name, value in engine_settings(config).items():
        setattr(cfg, name, value)
    return Engine(cfg)


def engine_fingerprint(config: SandboxConfig) -> str:
    """Names compiled code: wasmtime version + engine settings (a serialized module needs both to match)."""
    text = f"wasmtime={metadata.version('wasmtime')};" + ";".join(
        f"{k}={v}" for k, v in sorted(engine_settings(config).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EpochTicker:
    """A daemon thread calling ``engine.increment_epoch()`` every ``tick_s`` until ``stop()``."""

    def __init__(self, engine: Engine, tick_s: float) -> None:
        self._engine = engine
        self._tick_s = tick_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pangea-epoch-ticker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._tick_s):
            self._engine.increment_epoch()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=1.0)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class DiskCache:
    """Serialized modules this node compiled itself, in a directory only this user can write."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = directory.stat()
        except OSError as exc:
            raise ConfigError("cache_dir", f"cannot use {directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode) or not _private(st):
            raise ConfigError("cache_dir", f"{directory} must be a directory owned by this user and not "
                                           "writable by group or others (it holds native code)")
        self.directory = directory
        self._suffix = f".{fingerprint}.cwasm"

    def _path(self, cid: str) -> Path:
        return self.directory / f"{cid}{self._suffix}"

    def load(self, engine: Engine, cid: str) -> Module | None:
        """The module compiled earlier for ``cid``, or None (missing, foreign or unusable files are skipped)."""
        path = self._path(cid)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > CWASM_BYTES_MAX:
                return None
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
        finally:
            os.close(fd)
        try:
            return Module.deserialize(engine, data)
        except WasmtimeError:
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def save(self, cid: str, module: Module) -> None:
        """Write ``module``'s compiled code for ``cid`` (atomically); best effort, never raises OSError."""
        path = self._path(cid)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)
            self._trim()
        except (OSError, WasmtimeError):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _trim(self) -> None:
        files = list(self.directory.glob(f"*{self._suffix}"))
        if len(files) <= DISK_CACHE_FILES_MAX:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for old in files[: len(files) - DISK_CACHE_FILES_MAX]:
            with contextlib.suppress(OSError):
                old.unlink()
