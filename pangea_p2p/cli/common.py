"""What several command groups share: the options that select a running peer's API, and its client."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pangea_p2p.datadir import default_data_dir
from pangea_p2p.sdk.client import Client, read_api_token

if TYPE_CHECKING:
    # what a group's add_parser gets: `pangea`'s subparsers (argparse's own class is private)
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

TOKEN_ENV = "PANGEA_API_TOKEN"


def add_api_args(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--api``, ``--token`` and ``--json``, for a command that talks to a running peer."""
    p.add_argument("--data-dir", type=Path, help="the peer's data dir (default $PANGEA_DATA_DIR or ~/.pangea)")
    p.add_argument("--api", help="HOST:PORT of the peer's API (default: read from DATA_DIR/api)")
    p.add_argument("--token", help=f"the peer's API token (default ${TOKEN_ENV}, else DATA_DIR/api_token)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def client_from_args(args: argparse.Namespace) -> Client:
    """The client of the peer that ``--api`` or ``--data-dir`` names, with its API token: ``--token``, else
    $PANGEA_API_TOKEN, else the data dir's (close it, or use it in a ``with``)."""
    data_dir = args.data_dir or default_data_dir()
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.api:
        return Client(args.api, token or read_api_token(data_dir))
    return Client.for_data_dir(data_dir, token=token)
