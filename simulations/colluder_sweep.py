"""Colluder fraction 0-40 % under replicas:3 and adaptive: wrong results (accepted, and in final outputs), jobs
done and total work per point, as a CSV and one PNG.

Colluders are one party returning the same wrong bytes for a task (role ``collude``), every task they serve.
Each point is one run of 1,000 peers and 100 jobs of 4 tasks (no partition, no other fault) per seed.

Run: .venv/bin/python simulations/colluder_sweep.py [--seeds N] [--out DIR | --replace] [--replot]
     (default 2 seeds, into sim-out/colluder_sweep/; --replace: into simulations/results/colluder_sweep/, the
     committed figures; --replot: draw the PNG again from the folder's results.csv, running nothing; a minute or
     two on the 2-core machine)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pangea_p2p.sim.report import add_output_args, metric, print_table, read_csv, seeds_text, summary, write_csv
from pangea_p2p.sim.scenarios import Scenario, sweep

FRACTIONS = tuple(round(0.05 * k, 2) for k in range(9))  # 0, 5, ..., 40 %
POLICIES = ("replicas:3", "adaptive")
BASE: dict[str, Any] = {"peers": 1_000, "jobs": 100, "submitters": 4, "role": "collude", "checks": "count"}
PANELS = ("wrong_final", "wrong_accepted", "jobs_done", "work_ratio")
COMMITTED = Path(__file__).parent / "results" / "colluder_sweep"
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
    """One panel per metric: the mean over the seeds for each policy, and the range of the seeds (rows from
    ``run``, or read back from results.csv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = int(float(rows[0]["jobs"])) if rows and "jobs" in rows[0] else BASE["jobs"]
    runs = len({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.9))
    for ax, key in zip(axes, PANELS, strict=True):
        m = metric(key) if key != "jobs_done" else replace(metric(key), label=f"jobs done (of {jobs})")
        for policy, style in zip(POLICIES, ("o-", "s--"), strict=True):
            stats = [summary([float(r[key]) for r in rows if r["policy"] == policy and float(r["colluders"]) == f])
                     for f in FRACTIONS]
            xs = [100 * f for f in FRACTIONS]
            line = ax.plot(xs, [s[0] for s in stats], style, label=f"{policy}: mean")[0]
            if runs > 1:
                ax.fill_between(xs, [s[1] for s in stats], [s[2] for s in stats], alpha=0.15,
                                color=line.get_color(), label=f"{policy}: min-max")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("colluding workers (% of workers)")
        ax.set_ylabel(m.label)
        ax.set_title(m.title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Colluder sweep: {BASE['peers']:,} peers, {jobs} jobs × 4 tasks; mean and min-max of {runs} "
                 f"run{'s' if runs > 1 else ''} per point ({seeds_text([r['seed'] for r in rows])})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="runs per point, seeds 1..N (default %(default)s)")
    add_output_args(parser, Path("sim-out") / "colluder_sweep", COMMITTED, "the committed figures")
    parser.add_argument("--replot", action="store_true", help="draw the PNG again from OUT/results.csv, running "
                        "nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.replot:
        plot(read_csv(args.out / "results.csv"), args.out / "colluder_sweep.png")
        print(f"wrote {args.out / 'colluder_sweep.png'}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.seeds, progress=not args.no_progress)
    print_table(rows, "colluder sweep")
    write_csv([{k: r[k] for k in COLUMNS} for r in rows], args.out / "results.csv")
    plot(rows, args.out / "colluder_sweep.png")
    print(f"wrote {args.out / 'results.csv'} and {args.out / 'colluder_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
