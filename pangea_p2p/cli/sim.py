"""`pangea sim run | sweep | plot | list ...`: network simulations; the arguments are ``pangea_p2p.sim.scenarios``'s.

The simulator's parser is built only when ``sim`` runs (it loads the simulator), so here ``sim`` takes the rest of
the command line as is, and ``-h`` right after ``sim`` is passed on to it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    sim = sub.add_parser("sim", help="network simulations: `pangea sim run|sweep|plot|list ...` (see `pangea sim -h`)",
                         add_help=False)
    sim.add_argument("-h", "--help", dest="sim_help", action="store_true", help="show the sim commands and exit")
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="a sim command and its options")


def run(args: argparse.Namespace) -> int:
    from pangea_p2p.sim.scenarios import main as sim_main  # the simulator and its plotting stack load only here

    return sim_main([*args.sim_args, "-h"] if args.sim_help else args.sim_args)
