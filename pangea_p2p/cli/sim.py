"""`pangea sim run | sweep | list ...`: network simulations; the arguments are ``pangea_p2p.sim.scenarios``'s."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sim = sub.add_parser("sim", help="network simulations: `pangea sim run|sweep|list ...` (see `pangea sim -h`)",
                         add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    from pangea_p2p.sim.scenarios import main as sim_main  # the simulator and its plotting stack load only here

    return sim_main(args.sim_args)
