"""`pangea demo`: the matrix-multiply demo on a small network of local peers (``pangea_p2p.demo``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="run the matrix-multiply demo on a small local network")
    demo.add_argument("--peers", type=int, default=4)
    demo.add_argument("--size", type=int, default=512)
    demo.add_argument("--block", type=int, default=64)
    demo.add_argument("--verify", default="spot:1")


def run(args: argparse.Namespace) -> int:
    from pangea_p2p.demo import run_demo  # numpy and the peers' processes only for this command

    return run_demo(peers=args.peers, size=args.size, block=args.block, verification=args.verify)
