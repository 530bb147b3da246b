"""The files of a data dir that belong to the running peer as a whole: its lock, its API address, and setting
aside a file that cannot be read.

    DATA_DIR/repo.lock   held (flock) while a peer runs on the data dir; holds that peer's pid
    DATA_DIR/api         host:port of the running peer's HTTP API (read by the CLI and the SDK)

A second peer on the same data dir is refused with one line saying which process holds it and how to run a
second peer (its own data dir). A file the peer cannot read but can live without (its job journal, its known
peers) is moved aside, never deleted: ``set_aside`` renames it to the first free ``NAME.bad``, ``NAME.bad.1``, ...
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pangea_p2p.errors import TransportError

LOCK_FILE_NAME = "repo.lock"
API_FILE_NAME = "api"
SET_ASIDE_MAX = 100


def lock(data_dir: Path) -> int:
    """Hold ``data_dir``'s lock (its file descriptor, closed by ``unlock``), or TransportError saying who has it."""
    path = data_dir / LOCK_FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise TransportError(
            f"another pangea peer{who} is already running with data dir {data_dir}; to run a second peer on this "
            f"machine give it its own: --data-dir DIR (or PANGEA_DATA_DIR=DIR)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock(data_dir: Path, fd: int) -> None:
    """Release the lock taken by ``lock`` and remove the API address file (no peer serves it any more)."""
    (data_dir / API_FILE_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def write_api_address(data_dir: Path, host: str, port: int) -> None:
    """Write DATA_DIR/api atomically (a CLI reading it never sees half an address)."""
    path = data_dir / API_FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{host}:{port}\n")
    tmp.replace(path)


def set_aside(path: Path) -> str:
    """Rename ``path`` (and its SQLite -wal/-shm companions) to the first free ``NAME.bad[.N]``; what happened, for
    the warning the caller logs ("moved to ...", or why it could not be)."""
    for i in range(SET_ASIDE_MAX):
        bad = path.with_name(path.name + (".bad" if i == 0 else f".bad.{i}"))
        if bad.exists() or bad.is_symlink():
            continue
        try:
            path.replace(bad)
        except OSError as exc:
            return f"could not be moved aside ({exc.strerror}): move it away by hand"
        for suffix in ("-wal", "-shm"):
            companion = path.with_name(path.name + suffix)
            with contextlib.suppress(OSError):
                companion.replace(bad.with_name(bad.name + suffix))
        return f"moved to {bad}"
    return f"could not be moved aside ({SET_ASIDE_MAX} earlier copies are there): remove them"
