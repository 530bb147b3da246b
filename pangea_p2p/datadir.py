"""Where a peer keeps its state by default; a module of its own so that a client finds it without loading the
peer's configuration (``pangea_p2p.node.config``) and everything that configures."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PANGEA_DATA_DIR"


def default_data_dir() -> Path:
    """``$PANGEA_DATA_DIR``, else ``~/.pangea``."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".pangea")
