"""The ``pangea`` command line.

    pangea node [--data-dir DIR] [--listen MA]... [--bootstrap MA]... [--config FILE] [--set key=value]...
    pangea id | peers | capacity | health [--data-dir DIR | --api HOST:PORT] [--json]

Every error is one line on stderr and a non-zero exit (2 for bad configuration or usage, 1 otherwise); no
tracebacks for bad input.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from pangea_p2p import __version__
from pangea_p2p.cli import guest as guest_cli
from pangea_p2p.errors import ConfigError, PangeaError
from pangea_p2p.node import logs
from pangea_p2p.node.config import NodeConfig, default_data_dir, load_config, parse_override
from pangea_p2p.node.job_cli import add_job_parser, run_job_command
from pangea_p2p.sdk.client import Client


def _common_api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="the peer's data dir (default $PANGEA_DATA_DIR or ~/.pangea)")
    p.add_argument("--api", help="HOST:PORT of the peer's API (default: read from DATA_DIR/api)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pangea", description="Pangea P2P: a peer-to-peer compute network.")
    parser.add_argument("--version", action="version", version=f"pangea {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run a peer")
    node.add_argument("--data-dir", type=Path, help="where the identity and state live (default ~/.pangea)")
    node.add_argument("--config", type=Path, help="TOML config file (default DATA_DIR/config.toml if present)")
    node.add_argument("--listen", action="append", metavar="MULTIADDR", help="e.g. /ip4/0.0.0.0/tcp/4001")
    node.add_argument("--bootstrap", action="append", metavar="MULTIADDR", help="full address of a known peer")
    node.add_argument("--api-port", type=int, help="port of the local HTTP API (0 = any free port)")
    node.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    node.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    node.add_argument("--log-format", choices=["text", "json"])

    for name, text in [("id", "this peer's id and addresses"), ("peers", "known peers"),
                       ("capacity", "capacity adverts in the directory"), ("health", "peer health")]:
        _common_api_args(sub.add_parser(name, help=text))
    add_job_parser(sub, _common_api_args)
    guest_cli.add_parser(sub)
    demo = sub.add_parser("demo", help="run the matrix-multiply demo on a small local network")
    demo.add_argument("--peers", type=int, default=4)
    demo.add_argument("--size", type=int, default=512)
    demo.add_argument("--block", type=int, default=64)
    demo.add_argument("--verify", default="spot:1")
    sim = sub.add_parser("sim", help="network simulations: `pangea sim run|sweep|list ...` (see `pangea sim -h`)",
                         add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    return parser


def node_config_from_args(args: argparse.Namespace) -> NodeConfig:
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


async def run_node(config: NodeConfig) -> None:
    from pangea_p2p.node.peer import open_peer

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_peer(config) as peer:
            print(f"peer id {peer.peer_id}", flush=True)
            for addr in peer.addrs():
                print(f"listening on {addr}", flush=True)
            print(f"api on http://127.0.0.1:{peer.api_port}", flush=True)
            async for signum in signals:
                logs.get_logger("peer").info("peer.stopping", signal=signal.Signals(signum).name)
                break


def _print_answer(command: str, doc: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
    elif command == "id":
        print(doc["peer_id"])
        for addr in doc["addrs"]:
            print(f"  {addr}")
    elif command == "peers":
        for row in doc["peers"]:
            flags = ",".join(k for k in ("connected", "in_routing_table", "has_advert") if row[k])
            print(f"{row['peer_id']}  {flags}")
    elif command == "capacity":
        for a in doc["adverts"]:
            print(f"{a['peer_id']}  cores={a['cores']} slots={a['task_slots_free']}/{a['task_slots_total']} "
                  f"mem_free={a['memory_free_bytes'] >> 20}MiB speed={a['speed_fuel_per_s']:.3g}fuel/s")
        if doc["rejected"]:
            print("rejected: " + ", ".join(f"{k}={v}" for k, v in doc["rejected"].items()))
    else:
        print(json.dumps(doc, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sim":  # the simulator and its plotting stack load only when asked for
        from pangea_p2p.sim.scenarios import main as sim_main

        return sim_main(args.sim_args)
    try:
        if args.command == "node":
            config = node_config_from_args(args)
            logs.configure(config.log.level, config.log.format, config.log.libp2p_level)
            trio.run(run_node, config)
            return 0
        if args.command == "guest":
            return guest_cli.run(args)
        if args.command == "demo":
            from pangea_p2p.demo import run_demo

            return run_demo(peers=args.peers, size=args.size, block=args.block, verification=args.verify)
        client = Client(args.api) if args.api else Client.for_data_dir(args.data_dir or default_data_dir())
        with client:
            if args.command == "job":
                return run_job_command(args, client)
            doc = getattr(client, args.command)()
        _print_answer(args.command, doc, args.json)
        return 0
    except (PangeaError, BaseExceptionGroup) as exc:
        error = _first_pangea_error(exc)
        if error is None:
            raise
        print(f"pangea: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except KeyboardInterrupt:
        return 130


def _first_pangea_error(exc: BaseException) -> PangeaError | None:
    """The error to show: errors raised inside trio nurseries arrive wrapped in exception groups."""
    if isinstance(exc, PangeaError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_pangea_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
