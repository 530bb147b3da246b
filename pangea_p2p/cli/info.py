"""`pangea id | peers | capacity | health | trust`: what a running peer knows, from its HTTP API.

    pangea id | peers | capacity | health | trust [--data-dir DIR | --api HOST:PORT] [--json]

Each prints a table with a header (or one line saying there is nothing to show); ``--json`` prints the API's
answer as it is.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pangea_p2p.cli.common import add_api_args, client_from_args
from pangea_p2p.cli.output import print_json, print_table

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers

COMMANDS = {"id": "this peer's id and addresses", "peers": "known peers: connected, in the routing table, advertising",
            "capacity": "capacity adverts in the directory", "health": "peer health",
            "trust": "this peer's trust in the workers it checked"}


def add_parser(sub: Subparsers) -> None:
    for name, text in COMMANDS.items():
        add_api_args(sub.add_parser(name, help=text))


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        doc = getattr(client, args.command)()
    if args.json:
        print_json(doc)
    else:
        PRINTERS[args.command](doc)
    return 0


def _id(doc: dict[str, Any]) -> None:
    print(doc["peer_id"])
    for addr in doc["addrs"]:
        print(f"  {addr}")
    if "nat" in doc:
        print(_nat_line(doc["nat"]))
        for addr in doc["nat"].get("relay_addrs", []):
            print(f"  {addr}")


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


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def _peers(doc: dict[str, Any]) -> None:
    rows = [(p["peer_id"], _yes(p["connected"]), _yes(p["in_routing_table"]), _yes(p["has_advert"]),
             "-" if p.get("rtt_ms") is None else f"{p['rtt_ms']:.1f}") for p in doc["peers"]]
    print_table(("PEER", "CONNECTED", "ROUTING", "ADVERT", "RTT_MS"), rows,
                "no peers known yet (none connected, none in the routing table, no adverts)")


def _capacity(doc: dict[str, Any]) -> None:
    rows = [(a["peer_id"], a["cores"], f"{a['task_slots_free']}/{a['task_slots_total']}",
             a["memory_free_bytes"] >> 20, f"{a['speed_fuel_per_s']:.3g}") for a in doc["adverts"]]
    print_table(("PEER", "CORES", "SLOTS_FREE", "MEM_FREE_MIB", "FUEL_PER_S"), rows, "no capacity adverts yet")
    if doc.get("rejected"):
        print("rejected adverts: " + ", ".join(f"{k}={v}" for k, v in doc["rejected"].items()))


def _health(doc: dict[str, Any]) -> None:
    for key, value in doc.items():
        if isinstance(value, dict):
            print(f"{key}:" + ("" if value else " none"))
            for name, inner in value.items():
                text = ", ".join(f"{k}={v}" for k, v in inner.items()) if isinstance(inner, dict) else inner
                print(f"  {name}: {text}")
        else:
            print(f"{key}: {value}")


def _trust(doc: dict[str, Any]) -> None:
    fields = ("valid", "invalid", "timeouts", "outvoted", "lies", "proven", "vindicated")
    rows = [(r["peer_id"], f"{r['score']:.2f}", *(r.get(f, 0) for f in fields)) for r in doc["trust"]]
    print_table(("PEER", "SCORE", *(f.upper() for f in fields)), rows,
                "no trust records yet (this peer has not checked any worker's result)")


PRINTERS = {"id": _id, "peers": _peers, "capacity": _capacity, "health": _health, "trust": _trust}
