"""Reproduce every figure of simulations/README.md: each scenario's sweep, CSV and PNG plots in results/.

Run: .venv/bin/python simulations/run_all.py [--seeds N] [SCENARIO ...]
Same as `pangea sim sweep SCENARIO --seeds N --out simulations/results/SCENARIO` for each scenario.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pangea_p2p.sim.scenarios import SCENARIOS, main


def run_all(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="*", default=sorted(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(__file__).parent / "results"
    code = 0
    for name in args.scenarios:
        code |= main(["sweep", name, "--seeds", str(args.seeds), "--out", str(out / name)])
    return code


if __name__ == "__main__":
    sys.exit(run_all())
