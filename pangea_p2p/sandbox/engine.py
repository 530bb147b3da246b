"""The wasmtime engine of one process, its wall-time alarm, compilation, and the on-disk cache of compiled
modules.

One ``Engine`` per process: fuel metering, epoch interruption, NaN canonicalisation (bit-exact floats),
a bounded native stack (above 2 MiB wasmtime aborts the process, so the config refuses it) and none of the
proposals that would add non-determinism or host reach (threads, relaxed SIMD, memory64, GC, components).
Exception handling is on: it is deterministic, and the MicroPython interpreter of Python steps is built
with it (its non-local returns are wasm exceptions).

Wall time is measured, not counted. A store's epoch deadline is the next epoch; the ``DeadlineAlarm``
thread sleeps until the real (monotonic) deadline of the run in progress and only then increments the
epoch, so the guest traps with ``INTERRUPT`` as soon as that thread is scheduled after the deadline. A
ticker that counted 10 ms ticks drifted under CPU load (ticks taken late add up: a 2 s limit fired at
3.8 s at load 10-14); a single wake-up at the deadline is late by one scheduling delay at most. It works
while wasm runs because wasmtime releases the GIL during guest code.

The disk cache holds ``Module.serialize()`` output (native code) of modules this node compiled, named
``<cid>.<engine fingerprint>.cwasm``, at most ``disk_cache_bytes_max`` bytes of them (the least recently
used go first). Loading native code is only safe if nobody else could write it, so the directory and each
file must belong to this user and not be writable by group or others; files are written to a temporary name
and renamed, and are read through one open file descriptor that is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING

from wasmtime import Config, Engine, Module, WasmtimeError

from pangea_p2p.errors import ConfigError, InvalidModule

if TYPE_CHECKING:
    from pathlib import Path

    from pangea_p2p.sandbox.config import SandboxConfig

CWASM_BYTES_MAX = 512 * 1024 * 1024

# Proposals switched off: each either adds non-determinism (threads, relaxed SIMD) or surface we do not need.
_FEATURES_OFF = (
    "wasm_threads", "wasm_relaxed_simd", "wasm_memory64", "wasm_multi_memory", "wasm_gc",
    "wasm_component_model", "wasm_stack_switching", "wasm_custom_page_sizes", "wasm_wide_arithmetic",
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
    settings["wasm_exceptions"] = True
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


def first_line(text: str, deepest: bool = False) -> str:
    """The line of a wasmtime error that says what happened: the first (or deepest) cause, without noise."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else "unknown error"
    for i, candidate in enumerate(lines):
        if candidate.startswith("Caused by:") and i + 1 < len(lines):
            causes = lines[i + 1:]
            line = causes[-1] if deepest else causes[0]
            break
    return " ".join(re.sub(r"^(\d+:\s*)?(wasm trap:\s*)?", "", line).split())[:300]


def compile_module(engine: Engine, module_bytes: bytes) -> bytes:
    """Compile and serialize (the compile process's work); InvalidModule with wasmtime's reason if refused."""
    try:
        return bytes(Module(engine, module_bytes).serialize())
    except WasmtimeError as exc:
        raise InvalidModule(f"invalid WebAssembly module: {first_line(str(exc), deepest=True)}") from None


class DeadlineAlarm:
    """Interrupts the guest running on ``engine`` at a monotonic deadline: ``arm(deadline)`` before a run,
    ``disarm()`` after it. One run at a time (the executor's); stores use ``set_epoch_deadline(1)``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="pangea-deadline-alarm", daemon=True)
        self._thread.start()

    def arm(self, deadline: float) -> None:
        with self._cond:
            self._deadline = deadline
            self._cond.notify()

    def disarm(self) -> None:
        """After this returns the alarm does not fire for the deadline it was armed with."""
        with self._cond:
            self._deadline = None

    def _loop(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._deadline = None
                self._engine.increment_epoch()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=1.0)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class DiskCache:
    """Serialized modules this node compiled itself, in a directory only this user can write, at most
    ``bytes_max`` bytes of them (the least recently used are removed first)."""

    def __init__(self, directory: Path, fingerprint: str, bytes_max: int) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = directory.stat()
        except OSError as exc:
            raise ConfigError("cache_dir", f"cannot use {directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode) or not _private(st):
            raise ConfigError("cache_dir", f"{directory} must be a directory owned by this user and not "
                                           "writable by group or others (it holds native code)")
        self.directory = directory
        self.bytes_max = bytes_max
        self._suffix = f".{fingerprint}.cwasm"

    def _path(self, cid: str) -> Path:
        return self.directory / f"{cid}{self._suffix}"

    def load(self, cid: str) -> bytes | None:
        """The native code compiled earlier for ``cid``, or None (missing or foreign files are skipped)."""
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
            with contextlib.suppress(OSError):
                os.utime(fd)  # recently used: trimmed last
        finally:
            os.close(fd)
        return data

    def drop(self, cid: str) -> None:
        """Remove the file of ``cid`` (it did not deserialize: another wasmtime build, or damaged)."""
        with contextlib.suppress(OSError):
            self._path(cid).unlink()

    def save(self, cid: str, native: bytes) -> None:
        """Write the native code of ``cid`` (atomically); best effort, never raises OSError."""
        path = self._path(cid)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(native)
            os.replace(tmp, path)
            self._trim()
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _trim(self) -> None:
        files = []
        for p in self.directory.glob(f"*{self._suffix}"):
            with contextlib.suppress(OSError):
                st = p.stat()
                files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, old in sorted(files, key=lambda f: f[0]):
            if total <= self.bytes_max:
                break
            with contextlib.suppress(OSError):
                old.unlink()
                total -= size
