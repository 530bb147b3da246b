"""Colluder fraction 0-40 % under replicas:3 and adaptive: wrong results (accepted, and in final outputs), jobs
done and total work per point, as a CSV and one PNG.

Colluders are one party returning the same wrong bytes for a task (role ``collude``), every task they serve.
Each point is one run of 1,000 peers and 100 jobs of 4 tasks (no partition, no other fault) per seed.

Run: .venv/bin/python simulations/colluder_sweep.py [--seeds N] [--out DIR]
     (default 2 seeds, into simulations/results/colluder_sweep/; a minute or two on the 2-core machine)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pangea_p2p.sim.scenarios import Scenario, print_table, sweep, write_csv

FRACTIONS = tuple(round(0.05 * k, 2) for k in range(9))  # 0, 5, ..., 40 %
POLICIES = ("replicas:3", "adaptive")
BASE: dict[str, Any] = {"peers": 1_000, "jobs": 100, "submitters": 4, "role": "collude", "checks": "count"}
PANELS = (("wrong_final", "wrong results in final outputs"), ("wrong_accepted", "wrong results accepted"),
          ("jobs_done", "jobs done (of 100)"), ("work_ratio", "total work / single execution"))
COLUMNS = ("policy", "colluders", "seed", "jobs", "jobs_done", "wrong_accepted", "wrong_final", "wrong_at_job_end",
           "work_ratio", "lies_sent", "lies_escaped", "escape_rate", "trust_separation", "digest", "replay")


def run(seeds: int, progress: bool = True) -> list[dict[str, Any]]:
    rows = []
    for policy in POLICIES:
        scenario = Scenario("colluder_sweep", "colluder fraction", {**BASE, "policy": policy}, "byzantine", FRACTIONS)
        for row in sweep(scenario, {}, seeds, progress=progress):
            point = row["point"]
            rows.append({**row, "policy": policy, "colluders": float(point), "point": f"{policy} {point}"})
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for ax, (metric, label) in zip(axes, PANELS, strict=True):
        for policy, style in zip(POLICIES, ("o-", "s--"), strict=True):
            xs, means = [], []
            for f in FRACTIONS:
                vals = [float(r[metric]) for r in rows if r["policy"] == policy and r["colluders"] == f
                        and not math.isnan(float(r[metric]))]
                xs.append(100 * f)
                means.append(sum(vals) / len(vals) if vals else math.nan)
            ax.plot(xs, means, style, label=policy)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("colluders (% of workers)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("colluder sweep: 1,000 peers, 100 jobs x 4 tasks (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "colluder_sweep")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.seeds, progress=not args.no_progress)
    print_table(rows, "colluder sweep")
    write_csv([{k: r[k] for k in COLUMNS} for r in rows], args.out / "results.csv")
    plot(rows, args.out / "colluder_sweep.png")
    print(f"wrote {args.out / 'results.csv'} and {args.out / 'colluder_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
