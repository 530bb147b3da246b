"""Named experiments, the ``pangea sim`` command, and their outputs (table, CSV, PNG plots).

A scenario is a base configuration plus an optional sweep (one option and its values). ``pangea sim run NAME``
runs the base configuration (with any ``--option`` given on the command line on top); ``pangea sim sweep NAME``
runs every sweep value for ``--seeds`` seeds and writes ``results.csv`` and plots into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pangea_p2p.sim.config import SimConfig
from pangea_p2p.sim.world import SimResult, Simulation


@dataclass(frozen=True)
class Scenario:
    name: str
    question: str
    base: dict[str, Any]
    sweep_option: str = ""
    sweep_values: tuple[Any, ...] = ()
    plots: tuple[str, ...] = ("jobs_done_ratio", "wrong_accepted", "wasted_work", "latency_p50_s")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("baseline", "What does a healthy network do: throughput, latency, advert spread, cost of replicas?",
             {"peers": 300, "jobs": 60}, "policy", ("hash", "spot:2", "replicas:3", "adaptive"),
             ("wasted_work", "latency_p50_s", "latency_p99_s", "advert_p99_s")),
    Scenario("byzantine_fraction", "How many colluding Byzantine workers can the network absorb before a wrong "
             "result is accepted?", {"peers": 300, "jobs": 60, "role": "collude", "checks": "count"},
             "byzantine", (0.0, 0.05, 0.1, 0.2, 0.3, 0.4),
             ("wrong_accepted", "jobs_done_ratio", "trust_separation", "wasted_work")),
    Scenario("collusion", "Which verification policy holds against 20 % colluders (same wrong answer)?",
             {"peers": 300, "jobs": 60, "role": "collude", "byzantine": 0.2, "checks": "count"},
             "policy", ("replicas:3", "replicas:5", "adaptive", "spot:2"),
             ("wrong_accepted", "jobs_done_ratio", "wasted_work", "trust_separation")),
    Scenario("partition_heal", "What happens to jobs during a partition, and after it heals?",
             {"peers": 300, "jobs": 80, "partition": "majority", "partition_at_s": 20.0, "partition_for_s": 60.0,
              "arrival_s": 80.0, "byzantine": 0.1, "role": "wrong"},
             "partition", ("one", "majority", "islands:3"),
             ("jobs_done_ratio", "latency_p50_s", "latency_p99_s", "dropped")),
    Scenario("churn", "How do crashes, leaves and joins during the run affect jobs?",
             {"peers": 300, "jobs": 60, "crash": 0.1, "leave": 0.05, "join": 0.1},
             "crash", (0.0, 0.1, 0.2, 0.3), ("jobs_done_ratio", "latency_p50_s", "wasted_work", "wrong_accepted")),
    Scenario("sybil", "Sybils (one party, many identities, inflated adverts, one wrong answer): how far do they get?",
             {"peers": 300, "jobs": 60, "role": "sybil", "checks": "count"},
             "byzantine", (0.0, 0.02, 0.05, 0.1, 0.2), ("wrong_accepted", "jobs_done_ratio", "trust_separation")),
)}

TABLE = (
    ("point", "point"), ("seed", "seed"), ("jobs done", "jobs_done_of"), ("wrong acc.", "wrong_accepted"),
    ("wrong fin.", "wrong_final"), ("work x", "work_ratio"), ("wasted", "wasted_work"), ("lat p50", "latency_p50_s"),
    ("p90", "latency_p90_s"), ("p99", "latency_p99_s"),
    ("advert p50", "advert_p50_s"), ("p99 ", "advert_p99_s"), ("trust hon/byz", "trust_pair"),
    ("sep.", "trust_separation"), ("viol.", "violations"), ("events", "events"), ("wall s", "wall_s"),
)


def row_of(result: SimResult, point: str) -> dict[str, Any]:
    m = result.metrics
    row: dict[str, Any] = {"point": point, "seed": result.config.seed}
    for k, v in m.items():
        if not isinstance(v, dict):
            row[k] = v
    row["jobs_done_of"] = f"{m['jobs_done']}/{m['jobs']}"
    row["jobs_done_ratio"] = m["jobs_done"] / m["jobs"] if m["jobs"] else math.nan
    row["trust_pair"] = f"{_fmt(m['trust_honest'])}/{_fmt(m['trust_byzantine'])}"
    row["violations"] = len(result.violations) + (1 if result.failed and not result.violations else 0)
    row["digest"] = result.digest
    row["replay"] = result.replay()
    return row


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for head, _ in TABLE:
        table.add_column(head, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(key, "")) for _, key in TABLE))
    Console(width=200).print(table)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict[str, Any]], scenario: Scenario, out: Path) -> list[Path]:
    """One PNG per metric: the mean over seeds against the sweep value (min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    points = list(dict.fromkeys(r["point"] for r in rows))
    for metric in scenario.plots:
        means, lows, highs = [], [], []
        for p in points:
            vals = [float(r[metric]) for r in rows if r["point"] == p and not _nan(r.get(metric))]
            means.append(sum(vals) / len(vals) if vals else math.nan)
            lows.append(min(vals) if vals else math.nan)
            highs.append(max(vals) if vals else math.nan)
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = list(range(len(points)))
        ax.plot(xs, means, marker="o")
        ax.fill_between(xs, lows, highs, alpha=0.2)
        ax.set_xticks(xs, [str(p) for p in points])
        ax.set_xlabel(scenario.sweep_option or "run")
        ax.set_ylabel(metric)
        ax.set_title(f"{scenario.name}: {metric}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"{scenario.name}_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def config_for(scenario: Scenario, overrides: dict[str, Any]) -> SimConfig:
    return SimConfig(**{**scenario.base, **overrides})


def run_one(config: SimConfig, scenario: str) -> SimResult:
    base = SCENARIOS[scenario].base if scenario in SCENARIOS else {}
    return Simulation(config, scenario, tuple(sorted(base))).run()


def sweep(scenario: Scenario, overrides: dict[str, Any], seeds: int, progress: bool = True) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    values = scenario.sweep_values or (None,)
    jobs = [(v, s) for v in values for s in range(seeds)]
    rows = []
    base_seed = int(overrides.get("seed", scenario.base.get("seed", 1)))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:
        task = bar.add_task(f"sweep {scenario.name}", total=len(jobs))
        for value, s in jobs:
            extra = {} if value is None else {scenario.sweep_option: value}
            cfg = replace(config_for(scenario, {**overrides, **extra}), seed=base_seed + s)
            result = run_one(cfg, scenario.name)
            rows.append(row_of(result, str(value) if value is not None else "base"))
            bar.advance(task)
    return rows


# --- command line ----------------------------------------------------------------------------------------------

def add_config_args(p: argparse.ArgumentParser) -> None:
    for f in fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=None, metavar=type(default).__name__.upper())


def build_parser() -> argparse.ArgumentParser:
    sim = argparse.ArgumentParser(prog="pangea sim", description="network simulations of the real protocol logic "
                                  "(Byzantine, partition, churn experiments)")
    simsub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    run = simsub.add_parser("run", help="run one scenario once")
    run.add_argument("scenario", choices=sorted(SCENARIOS))
    run.add_argument("--out", type=Path, default=None, help="also write results.csv here")
    add_config_args(run)
    sw = simsub.add_parser("sweep", help="run a scenario's sweep over several seeds; CSV and PNG plots")
    sw.add_argument("scenario", choices=sorted(SCENARIOS))
    sw.add_argument("--seeds", type=int, default=2)
    sw.add_argument("--out", type=Path, default=None, help="output folder (default sim-results/SCENARIO)")
    sw.add_argument("--no-progress", action="store_true")
    add_config_args(sw)
    simsub.add_parser("list", help="list the scenarios and the question each answers")
    return sim


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(SimConfig) if getattr(args, f.name, None) is not None}


def run_command(args: argparse.Namespace) -> int:
    if args.sim_command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:20} {s.question}")
        return 0
    scenario = SCENARIOS[args.scenario]
    overrides = overrides_of(args)
    if args.sim_command == "run":
        result = run_one(config_for(scenario, overrides), scenario.name)
        row = row_of(result, "run")
        print_table([row], f"{scenario.name} ({scenario.question})")
        _print_details(result)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            write_csv([row], args.out / "results.csv")
        if result.failed or (result.violations and result.config.checks == "strict"):
            print(f"FAILED: {result.failed or result.violations[0]}", file=sys.stderr)
            print(f"replay: {result.replay()}", file=sys.stderr)
            return 1
        return 0
    out = args.out or Path("sim-results") / scenario.name
    out.mkdir(parents=True, exist_ok=True)
    rows = sweep(scenario, overrides, args.seeds, progress=not args.no_progress)
    print_table(rows, f"{scenario.name}: {scenario.question}")
    write_csv(rows, out / "results.csv")
    paths = plot(rows, scenario, out)
    print(f"wrote {out / 'results.csv'} and {len(paths)} plots: {', '.join(p.name for p in paths)}")
    failed = [r for r in rows if r["violations"] and "strict" in r["replay"]]
    for r in failed:
        print(f"replay: {r['replay']}", file=sys.stderr)
    return 0


def _print_details(result: SimResult) -> None:
    m = result.metrics
    print(f"digest {result.digest}  events {m['events']}  {m['events_per_s']:.0f} events/s  "
          f"messages {m['messages']} ({m['message_bytes'] / 1e6:.1f} MB)  adverts {m['adverts_published']} "
          f"published, {m['advert_deliveries']} delivered, {m['advert_verifications']} verified")
    print(f"faults {m['faults']}  dropped {m['dropped']}  retransmits {m['retransmits']}  "
          f"clogged {m['clogged_messages']}  advert rejections {m['advert_rejections']}")
    print(f"failed jobs by reason {m['failed_reasons']}  worker actions {m['worker_stats']}")
    for v in result.violations[:5]:
        print(f"violation {v}")
    print(f"replay: {result.replay()}")


def main(argv: Sequence[str] | None = None) -> int:
    """``pangea sim ...`` (argv without the leading ``sim``)."""
    return run_command(build_parser().parse_args(argv))


__all__ = ["SCENARIOS", "Scenario", "main", "run_command"]
