"""The peer's secrets on disk, created on first start with mode 0600 and kept across restarts.

DATA_DIR/identity.key: one line ``pangea-ed25519-v1 <64 hex digits of the 32-byte seed>``.
DATA_DIR/api_token: one line of 64 hex digits (32 random bytes), the token the local HTTP API asks for
(pangea_p2p/node/api.py; the SDK's ``Client.for_data_dir`` and the CLI read it).

Either file is refused (IdentityError, one line naming the file and the fix) when it is readable or writable by
group or others, when it is not a regular file, or when its content is not exactly that line.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from pangea_p2p.core.identity import Identity
from pangea_p2p.errors import IdentityError

KEY_FILE_NAME = "identity.key"
API_TOKEN_FILE_NAME = "api_token"  # also in pangea_p2p/sdk/client.py, which does not import the node
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
    if not _create_secret(path, "key file", f"{_MAGIC} {seed.hex()}\n"):  # another process was first: use theirs
        return load_identity(path)
    return Identity(seed)


def load_or_create_api_token(data_dir: Path) -> str:
    """The API token kept in ``data_dir`` (64 hex digits), created when missing."""
    path = data_dir / API_TOKEN_FILE_NAME
    token = secrets.token_hex(32)
    if _create_secret(path, "API token file", token + "\n"):
        return token
    token = _read_secret(path, "API token file", "other users could use the peer's API").strip()
    if len(token) != 64 or not all(c in "0123456789abcdef" for c in token):
        raise IdentityError(f"API token file {path} is corrupt (expected 64 hex digits); delete it and restart the "
                            f"peer to make a new one")
    return token


def _create_secret(path: Path, what: str, text: str) -> bool:
    """Write ``text`` to a new file ``path`` of mode 0600; False if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise IdentityError(f"cannot create {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _read_secret(path: Path, what: str, risk: str) -> str:
    """The text of ``path``, a regular file only its owner can read; IdentityError naming the fix otherwise."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise IdentityError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"{what} {path} is not a regular file")
    if info.st_mode & 0o077:
        raise IdentityError(f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}; {risk} (run: chmod 600 {path})")
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_identity(path: Path) -> Identity:
    text = _read_secret(path, "key file", "other users could read the peer's key")
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
