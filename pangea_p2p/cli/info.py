"""`pangea id | peers | capacity | health`: what a running peer knows, from its HTTP API.

    pangea id | peers | capacity | health [--data-dir DIR | --api HOST:PORT] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from pangea_p2p.cli.common import add_api_args, client_from_args

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers

COMMANDS = {"id": "this peer's id and addresses", "peers": "known peers",
            "capacity": "capacity adverts in the directory", "health": "peer health"}


def add_parser(sub: Subparsers) -> None:
    for name, text in COMMANDS.items():
        add_api_args(sub.add_parser(name, help=text))


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        doc = getattr(client, args.command)()
    _print_answer(args.command, doc, args.json)
    return 0


def _print_answer(command: str, doc: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
    elif command == "id":
        print(doc["peer_id"])
        for addr in doc["addrs"]:
            print(f"  {addr}")
        if "nat" in doc:
            print(_nat_line(doc["nat"]))
            for addr in doc["nat"].get("relay_addrs", []):
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


def _nat_line(nat: dict[str, Any]) -> str:
    """``reachability: private (confidence 2), relays: 2`` — how other peers reach this one."""
    line = f"reachability: {nat['reachability']}"
    if nat.get("confidence"):
        line += f" (confidence {nat['confidence']})"
    if nat.get("relay_service"):
        line += f", relay service: {nat['relay_slots_free']} reservations free"
    if nat.get("relays"):
        line += f", reserved on {len(nat['relays'])} relay(s):"
    return line
