"""Reproduce the scenario figures of simulations/README.md: each scenario's sweep, its CSV and PNG plots.

Run: .venv/bin/python simulations/run_all.py [--seeds N] [--out DIR | --replace] [SCENARIO ...]
Same as `pangea sim sweep SCENARIO --seeds N --out DIR/SCENARIO` for each scenario; DIR is sim-out/ unless
--replace (simulations/results/, the committed figures) or --out says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pangea_p2p.sim.report import add_output_args
from pangea_p2p.sim.scenarios import SCENARIOS, main

COMMITTED = Path(__file__).parent / "results"


def run_all(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"scenarios to sweep (default: all of {', '.join(sorted(SCENARIOS))})")
    parser.add_argument("--seeds", type=int, default=2, help="runs per sweep value (default %(default)s)")
    add_output_args(parser, Path("sim-out"), COMMITTED, "the committed figures")
    args = parser.parse_args(argv)
    code = 0
    for name in args.scenarios:
        code |= main(["sweep", name, "--seeds", str(args.seeds), "--out", str(args.out / name)])
    return code


if __name__ == "__main__":
    sys.exit(run_all())
