"""What several command groups share: the options that select a running peer's API, and its client."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pangea_p2p.datadir import default_data_dir
from pangea_p2p.sdk.client import Client

if TYPE_CHECKING:
    # what a group's add_parser gets: `pangea`'s subparsers (argparse's own class is private)
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_api_args(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--api`` and ``--json``, for a command that talks to a running peer."""
    p.add_argument("--data-dir", type=Path, help="the peer's data dir (default $PANGEA_DATA_DIR or ~/.pangea)")
    p.add_argument("--api", help="HOST:PORT of the peer's API (default: read from DATA_DIR/api)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def client_from_args(args: argparse.Namespace) -> Client:
    """The client of the peer that ``--api`` or ``--data-dir`` names (close it, or use it in a ``with``)."""
    return Client(args.api) if args.api else Client.for_data_dir(args.data_dir or default_data_dir())
