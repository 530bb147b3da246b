"""The peer's identity on disk: DATA_DIR/identity.key, created on first start with mode 0600.

Format: one line ``pangea-ed25519-v1 <64 hex digits of the 32-byte seed>``. The file is refused (IdentityError,
one line naming the file and the fix) when it is readable or writable by group or others, when it is not a
regular file, or when its content is not exactly that line.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from pangea_p2p.core.identity import Identity
from pangea_p2p.errors import IdentityError

KEY_FILE_NAME = "identity.key"
_MAGIC = "pangea-ed25519-v1"


def ensure_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
    if not data_dir.is_dir():
        raise IdentityError(f"data dir {data_dir} exists and is not a directory")


def load_or_create_identity(data_dir: Path) -> tuple[Identity, bool]:
    """The identity kept in ``data_dir`` and whether it was just created."""
    ensure_data_dir(data_dir)
    path = data_dir / KEY_FILE_NAME
    if not path.exists() and not path.is_symlink():
        return _create(path), True
    return load_identity(path), False


def _create(path: Path) -> Identity:
    seed = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_identity(path)
    except OSError as exc:
        raise IdentityError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{_MAGIC} {seed.hex()}\n")
    return Identity(seed)


def load_identity(path: Path) -> Identity:
    try:
        info = path.lstat()
    except OSError as exc:
        raise IdentityError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise IdentityError(
            f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}; other users could read the peer's key "
            f"(run: chmod 600 {path})"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    parts = text.split()
    if len(parts) != 2 or parts[0] != _MAGIC:
        raise IdentityError(f"key file {path} is corrupt (expected '{_MAGIC} <64 hex digits>')")
    try:
        seed = bytes.fromhex(parts[1])
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise IdentityError(f"key file {path} is corrupt (the seed is not 64 hex digits)")
    return Identity(seed)
