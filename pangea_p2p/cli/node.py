"""`pangea node`: run a peer until Ctrl-C or SIGTERM.

    pangea node [--data-dir DIR] [--listen MA]... [--bootstrap MA]... [--config FILE] [--set key=value]...

The configuration is built here from the flags (``pangea_p2p.node.config``); the peer is
``pangea_p2p.node.peer.run_node``. Prints the peer id, its addresses and the API address once it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pangea_p2p import logs

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers
    from pangea_p2p.node.config import NodeConfig
    from pangea_p2p.node.peer import Peer


def add_parser(sub: Subparsers) -> None:
    node = sub.add_parser("node", help="run a peer")
    node.add_argument("--data-dir", type=Path, help="where the identity and state live (default $PANGEA_DATA_DIR "
                      "or ~/.pangea); one per peer")
    node.add_argument("--config", type=Path, help="TOML config file (default DATA_DIR/config.toml if present)")
    node.add_argument("--listen", action="append", metavar="MULTIADDR",
                      help="e.g. /ip4/0.0.0.0/tcp/4001 (default: that, or the next free port if another peer has it)")
    node.add_argument("--bootstrap", action="append", metavar="MULTIADDR", help="full address of a known peer")
    node.add_argument("--api-port", type=int, help="port of the local HTTP API (0 = any free port; default 5101, "
                      "or the next free port if another peer has it)")
    node.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    node.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    node.add_argument("--log-format", choices=["text", "json"])


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Defaults < the TOML file < ``--set`` < the dedicated flags (ConfigError naming the key)."""
    from pangea_p2p.node.config import load_config, parse_override  # the peer's configuration: only for `node`

    overrides: dict[str, Any] = dict(parse_override(s) for s in args.set)
    if args.listen:
        overrides["listen"] = args.listen
    if args.bootstrap:
        overrides["bootstrap"] = args.bootstrap
    if args.api_port is not None:
        overrides["api.port"] = args.api_port
    if args.log_level:
        overrides["log.level"] = args.log_level
    if args.log_format:
        overrides["log.format"] = args.log_format
    return load_config(args.config, overrides, args.data_dir)


def run(args: argparse.Namespace) -> int:
    import trio  # trio and py-libp2p load only for the command that runs a peer

    from pangea_p2p.node.peer import run_node

    config = config_from_args(args)
    logs.configure(config.log.level, config.log.format, config.log.libp2p_level)
    trio.run(run_node, config, _print_started)
    return 0


def _print_started(peer: Peer) -> None:
    print(f"peer id {peer.peer_id}", flush=True)
    for addr in peer.addrs():
        print(f"listening on {addr}", flush=True)
    print(f"api on http://127.0.0.1:{peer.api_port}", flush=True)
