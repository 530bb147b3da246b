"""Liars that lie with probability q per task: the measured escape rate (the fraction of their lies that end in a
final job output) beside its analytic value for the policy (pangea_p2p/sim/bounds.py states the formulas:
replicas:3 gives 1 - (1 - fq)^2; adaptive at most the worst of its plans, escape(2, fq, q), about 4fq/(1 + 2fq)
at q = 1, with the default ReplicationPolicy and one chunk per task). Each analytic value is given twice: with f
the liars' share of the workers (uniform draws), and with f their share of the replicas they actually served
(the scheduler weights draws by trust, so liars that lost votes serve fewer).

The liars are one party (role ``collude``: their lies for a task are the same bytes), each deciding per task,
independently, whether to lie (``--lie-q``). Each point is one run of 500 peers and 400 jobs of 4 tasks.

Run: .venv/bin/python simulations/escape_rate.py [--seeds N] [--out DIR | --replace]
     (default 1 seed, into sim-out/escape_rate/results.csv; --replace: into simulations/results/escape_rate/, the
     committed results; a minute or two)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pangea_p2p.core.jobs.model import VerificationPolicy
from pangea_p2p.sim.bounds import escape_bound
from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.world import Simulation

POLICIES = ("replicas:3", "adaptive")
FRACTIONS = (0.1, 0.3)
QS = (0.25, 0.5, 1.0)
COMMITTED = Path(__file__).parent / "results" / "escape_rate"
BASE = SimConfig(peers=500, jobs=400, submitters=4, role="collude", checks="count")


def run(seeds: int) -> list[dict[str, Any]]:
    rows = []
    for policy in POLICIES:
        parsed = VerificationPolicy.parse(policy)
        for f in FRACTIONS:
            for q in QS:
                for s in range(seeds):
                    cfg = replace(BASE, policy=policy, byzantine=f, lie_q=q, seed=1 + s)
                    m = Simulation(cfg, "escape_rate").run().metrics
                    uniform = escape_bound(parsed, m["liar_fraction"], q, chunks=cfg.chunks_per_task)
                    served = escape_bound(parsed, m["liar_share"], q, chunks=cfg.chunks_per_task)
                    row = {"policy": policy, "liars": f, "q": q, "seed": cfg.seed, "liar_share": m["liar_share"],
                           "lies_sent": m["lies_sent"], "lies_escaped": m["lies_escaped"],
                           "escape_rate": m["escape_rate"], "analytic_uniform": uniform, "analytic_served": served,
                           "wrong_final": m["wrong_final"], "jobs_done": m["jobs_done"], "work_ratio": m["work_ratio"]}
                    rows.append(row)
                    bound = "<=" if policy == "adaptive" else "  "
                    print(f"{policy:>10}  liars {f:4.0%} (served {row['liar_share']:5.1%})  q {q:4.2f}  lies "
                          f"{row['lies_sent']:4}  escaped {row['lies_escaped']:4}  measured {row['escape_rate']:.3f}  "
                          f"analytic {bound} {uniform:.3f} (uniform draws), {bound} {served:.3f} (at the share served)"
                          f"  wrong final {row['wrong_final']:3}  work {row['work_ratio']:.2f}x", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from pangea_p2p.sim.report import add_output_args, write_csv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="runs per point, seeds 1..N (default %(default)s)")
    add_output_args(parser, Path("sim-out") / "escape_rate", COMMITTED, "the committed results")
    args = parser.parse_args(argv)

    rows = run(args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "results.csv")
    print(f"wrote {args.out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
