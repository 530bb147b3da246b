"""`pangea dashboard`: print the address of a running peer's dashboard, with its API token, and open it.

    pangea dashboard [--data-dir DIR | --api HOST:PORT] [--token TOKEN] [--no-open]

The address is ``http://HOST:PORT/#token=<token>``: the token (--token, else $PANGEA_API_TOKEN, else
DATA_DIR/api_token, as for every client command: cli/common.py) travels in the fragment, which the browser
never sends to any server; the page keeps it for its tab and takes it out of the address bar
(node/dashboard.py).
"""

from __future__ import annotations

import argparse
import os
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from pangea_p2p.cli.common import TOKEN_ENV
from pangea_p2p.datadir import default_data_dir
from pangea_p2p.sdk.client import API_TOKEN_FILE_NAME, api_address, read_api_token

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("dashboard", help="open the live dashboard of a running peer in a web browser")
    p.add_argument("--data-dir", type=Path, help="the peer's data dir (default $PANGEA_DATA_DIR or ~/.pangea)")
    p.add_argument("--api", help="HOST:PORT of the peer's API (default: read from DATA_DIR/api)")
    p.add_argument("--token", help=f"the peer's API token (default ${TOKEN_ENV}, else DATA_DIR/{API_TOKEN_FILE_NAME})")
    p.add_argument("--no-open", action="store_true", help="only print the address; do not start a browser")


def dashboard_url(address: str, token: str | None) -> str:
    return f"http://{address}/" + (f"#token={quote(token, safe='')}" if token else "")


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    address = args.api or api_address(data_dir)
    token = args.token or os.environ.get(TOKEN_ENV) or read_api_token(data_dir)
    url = dashboard_url(address, token)
    print(url)
    if not args.no_open and not webbrowser.open(url):
        print("pangea: no web browser found here; open the address above in one", flush=True)
    return 0
