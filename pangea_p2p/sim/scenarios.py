"""Named experiments and the ``pangea sim`` command (its table, CSV and plots are report.py's).

A scenario is a base configuration plus an optional sweep (one option and its values). ``pangea sim run NAME``
runs the base configuration (with any ``--option`` given on the command line on top); ``pangea sim sweep NAME``
runs every sweep value for ``--seeds`` seeds and writes ``results.csv`` and plots into ``--out`` (by default
under ``sim-out/``, never over the committed results unless ``--out`` names them); ``pangea sim plot NAME``
draws the plots again from a results.csv without running anything.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pangea_p2p.errors import ConfigError
from pangea_p2p.sim.config import FRACTIONS, HELP, SimConfig, flag
from pangea_p2p.sim.report import WIDTH, plain, plot, print_table, read_csv, write_csv
from pangea_p2p.sim.sandbox import ROLES
from pangea_p2p.sim.world import SimResult, Simulation


@dataclass(frozen=True)
class Scenario:
    name: str
    question: str
    base: dict[str, Any]
    sweep_option: str = ""
    sweep_values: tuple[Any, ...] = ()
    plots: tuple[str, ...] = ("jobs_done_ratio", "wrong_accepted", "wasted_work", "latency_p50_s")
    x_label: str = ""  # the plots' x axis, words and unit (fractions are shown as %)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("baseline", "What does a healthy network do: throughput, latency, advert spread, cost of replicas?",
             {"peers": 300, "jobs": 60}, "policy", ("hash", "spot:2", "replicas:3", "adaptive"),
             ("wasted_work", "latency_p50_s", "latency_p99_s", "advert_p99_s"), "verification policy"),
    Scenario("byzantine_fraction", "How many colluding Byzantine workers can the network absorb before a wrong "
             "result is accepted?", {"peers": 300, "jobs": 60, "role": "collude", "checks": "count"},
             "byzantine", (0.0, 0.05, 0.1, 0.2, 0.3, 0.4),
             ("wrong_accepted", "jobs_done_ratio", "trust_separation", "wasted_work"),
             "colluding workers (% of workers)"),
    Scenario("collusion", "Which verification policy holds against 20 % colluders (same wrong answer)?",
             {"peers": 300, "jobs": 60, "role": "collude", "byzantine": 0.2, "checks": "count"},
             "policy", ("replicas:3", "replicas:5", "adaptive", "spot:2"),
             ("wrong_accepted", "jobs_done_ratio", "wasted_work", "trust_separation"), "verification policy"),
    Scenario("partition_heal", "What happens to jobs during a partition, and after it heals?",
             {"peers": 300, "jobs": 80, "partition": "majority", "partition_at_s": 20.0, "partition_for_s": 60.0,
              "arrival_s": 80.0, "byzantine": 0.1, "role": "wrong"},
             "partition", ("one", "majority", "islands:3"),
             ("jobs_done_ratio", "latency_p50_s", "latency_p99_s", "dropped"),
             "partition (one peer cut off, majority/minority, 3 islands)"),
    Scenario("churn", "How do crashes, leaves and joins during the run affect jobs?",
             {"peers": 300, "jobs": 60, "crash": 0.1, "leave": 0.05, "join": 0.1},
             "crash", (0.0, 0.1, 0.2, 0.3), ("jobs_done_ratio", "latency_p50_s", "wasted_work", "wrong_accepted"),
             "workers that crash and restart (% of workers)"),
    Scenario("nat", "How do jobs fare when most peers sit behind NAT, reached through relays that crash and close "
             "circuits?", {"peers": 300, "jobs": 60, "crash": 0.1, "relay_circuit_s": 60.0},
             "nat", (0.0, 0.5, 0.8, 0.95), ("jobs_done_ratio", "latency_p50_s", "latency_p99_s", "circuits_closed"),
             "peers behind a NAT (% of peers)"),
    Scenario("sybil", "Sybils (one party, many identities, inflated adverts, one wrong answer): how far do they get?",
             {"peers": 300, "jobs": 60, "role": "sybil", "checks": "count"},
             "byzantine", (0.0, 0.02, 0.05, 0.1, 0.2), ("wrong_accepted", "jobs_done_ratio", "trust_separation"),
             "Sybil workers (% of workers)"),
)}

def row_of(result: SimResult, point: str) -> dict[str, Any]:
    m = result.metrics
    row: dict[str, Any] = {"point": point, "seed": result.config.seed}
    for k, v in m.items():
        if not isinstance(v, dict):
            row[k] = v
    row["jobs_done_of"] = f"{m['jobs_done']}/{m['jobs']}"
    row["jobs_done_ratio"] = m["jobs_done"] / m["jobs"] if m["jobs"] else math.nan
    row["trust_pair"] = f"{plain(m['trust_honest'])}/{plain(m['trust_byzantine'])}"
    row["violations"] = len(result.violations) + (1 if result.failed and not result.violations else 0)
    row["digest"] = result.digest
    row["replay"] = result.replay()
    return row


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


def plot_scenario(rows: Sequence[dict[str, Any]], scenario: Scenario, out: Path) -> list[Path]:
    """The scenario's plots of ``rows`` (a sweep's, or read back from its results.csv) into ``out``."""
    option = scenario.sweep_option
    x_label = scenario.x_label or (option.replace("_", " ") if option else "run")
    x_scale = 100.0 if option in FRACTIONS else 1.0
    return plot(rows, out, scenario.name, scenario.plots, x_label, x_scale, _subtitle(rows, option))


def _subtitle(rows: Sequence[dict[str, Any]], swept: str) -> str:
    """What the runs of ``rows`` had in common, from the replay command of the first (empty if unreadable)."""
    words = str(rows[0].get("replay", "")).split() if rows else []
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_config_args(parser)
    try:
        cfg = SimConfig(**overrides_of(parser.parse_known_args(words[4:])[0]))
    except (argparse.ArgumentError, ValueError, ConfigError):
        return ""
    parts = [f"{cfg.peers:,} peers ({cfg.submitters} submitters), {cfg.jobs} jobs × {cfg.tasks_per_job} tasks"]
    if swept != "policy":
        parts.append(cfg.policy)
    if swept != "byzantine" and cfg.byzantine:
        parts.append(f"{cfg.byzantine:.0%} Byzantine ({cfg.role})")
    if swept != "partition" and cfg.partition != "none":
        parts.append(f"partition {cfg.partition}")
    for name, what in (("crash", "crash"), ("leave", "leave"), ("join", "join late")):
        if swept != name and getattr(cfg, name):
            parts.append(f"{getattr(cfg, name):.0%} {what}")
    return textwrap.fill(", ".join(parts), 80)


# --- command line ----------------------------------------------------------------------------------------------

CHOICES: dict[str, tuple[str, ...]] = {"role": (*ROLES, "mix"), "directories": ("submitters", "all"),
                                       "checks": ("strict", "count")}


def add_config_args(p: argparse.ArgumentParser) -> None:
    """One flag per SimConfig option, with its help (config.HELP) and default."""
    group = p.add_argument_group("simulation options", "Each overrides the scenario's value; a default shown is "
                                 "the value where the scenario sets none.")
    for f in fields(SimConfig):
        default = f.default
        if isinstance(default, bool):
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{HELP[f.name]} (default: {'on' if default else 'off'})")
        else:
            group.add_argument(flag(f.name), dest=f.name, type=type(default), default=None,
                               choices=CHOICES.get(f.name), metavar=type(default).__name__.upper(),
                               help=f"{HELP[f.name]} (default {default})")


def build_parser() -> argparse.ArgumentParser:
    sim = argparse.ArgumentParser(
        prog="pangea sim", description="Network simulations of the real protocol logic (Byzantine, partition and "
        "churn experiments), fixed by their seed.", epilog="`pangea sim COMMAND -h` shows a command's options.")
    simsub = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    simsub.add_parser("list", help="list the scenarios and the question each answers",
                      description="List the scenarios and the question each answers.")
    names = sorted(SCENARIOS)
    run = simsub.add_parser("run", help="run a scenario once and print its table",
                            usage="pangea sim run SCENARIO [--out DIR] [--wide] [simulation options]",
                            description="Run a scenario once (its base configuration, with the options given on "
                            "top) and print its table; exit 1 when a strict run breaks an invariant.")
    run.add_argument("scenario", choices=names, metavar="SCENARIO", help=f"one of: {', '.join(names)}")
    run.add_argument("--out", type=Path, default=None, metavar="DIR", help="also write results.csv into DIR")
    run.add_argument("--wide", action="store_true", help="print every column (the table is then wider than 100)")
    add_config_args(run)
    sw = simsub.add_parser("sweep", help="run a scenario's sweep over several seeds; results.csv and PNG plots",
                           usage="pangea sim sweep SCENARIO [--seeds N] [--out DIR] [--wide] [simulation options]",
                           description="Run every value of a scenario's sweep for --seeds seeds; print the table, "
                           "write results.csv and one PNG plot per metric.")
    sw.add_argument("scenario", choices=names, metavar="SCENARIO", help=f"one of: {', '.join(names)}")
    sw.add_argument("--seeds", type=int, default=2, metavar="N",
                    help="runs per sweep value, with seeds --seed, --seed + 1, ... (default %(default)s)")
    sw.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="output folder (default sim-out/SCENARIO; the committed figures are "
                    "simulations/results/SCENARIO: name it to replace them)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--wide", action="store_true", help="print every column (the table is then wider than 100)")
    add_config_args(sw)
    pl = simsub.add_parser("plot", help="draw a sweep's plots again from its results.csv, without running",
                           usage="pangea sim plot SCENARIO [--csv FILE] [--out DIR]",
                           description="Draw a sweep's PNG plots again from its results.csv, without running it.")
    pl.add_argument("scenario", choices=names, metavar="SCENARIO", help=f"one of: {', '.join(names)}")
    pl.add_argument("--csv", type=Path, default=None, metavar="FILE",
                    help="the sweep's results.csv (default sim-out/SCENARIO/results.csv)")
    pl.add_argument("--out", type=Path, default=None, metavar="DIR", help="where to write the plots (default: "
                    "the CSV's folder)")
    for command in (run, sw, pl):
        command.set_defaults(command_parser=command)
    return sim


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(SimConfig) if getattr(args, f.name, None) is not None}


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``pangea sim`` command; a bad value is reported as argparse reports bad usage (the command's
    usage line, one line of error, exit 2)."""
    if args.sim_command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:20} {s.question}")
        return 0
    parser: argparse.ArgumentParser = args.command_parser
    scenario = SCENARIOS[args.scenario]
    overrides = overrides_of(args)
    try:
        config_for(scenario, overrides)
    except (ValueError, ConfigError) as exc:
        parser.error(str(exc))
    if args.sim_command == "plot":
        return _plot(parser, scenario, args.csv or Path("sim-out") / scenario.name / "results.csv", args.out)
    if args.sim_command == "run":
        return _run(scenario, overrides, args.out and _folder(parser, args.out), args.wide)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1")
    out = _folder(parser, args.out or Path("sim-out") / scenario.name)
    rows = sweep(scenario, overrides, args.seeds, progress=not args.no_progress)
    print_table(rows, f"{scenario.name}: {scenario.question}", wide=args.wide)
    write_csv(rows, out / "results.csv")
    paths = plot_scenario(rows, scenario, out)
    print(f"wrote {out / 'results.csv'} and {len(paths)} plots: {', '.join(p.name for p in paths)}")
    failed = [r for r in rows if r["violations"] and "strict" in r["replay"]]
    for r in failed:
        print(f"replay: {r['replay']}", file=sys.stderr)
    return 0


def _folder(parser: argparse.ArgumentParser, path: Path) -> Path:
    """``path``, made a folder before any run (or the usage error saying why it cannot be)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {path}: {exc.strerror}")
    return path


def _plot(parser: argparse.ArgumentParser, scenario: Scenario, csv_path: Path, out: Path | None) -> int:
    try:
        rows = read_csv(csv_path)
    except OSError as exc:
        parser.error(f"{csv_path}: {exc.strerror}")
    except (UnicodeDecodeError, csv.Error):
        rows = []
    if not rows or "point" not in rows[0] or "seed" not in rows[0]:
        parser.error(f"{csv_path}: not a sweep's results.csv (no rows with point and seed)")
    out = _folder(parser, out or csv_path.parent)
    paths = plot_scenario(rows, scenario, out)
    print(f"wrote {len(paths)} plots into {out}: {', '.join(p.name for p in paths)}")
    return 0


def _run(scenario: Scenario, overrides: dict[str, Any], out: Path | None, wide: bool) -> int:
    result = run_one(config_for(scenario, overrides), scenario.name)
    row = row_of(result, "run")
    print_table([row], f"{scenario.name} ({scenario.question})", wide=wide)
    _print_details(result)
    if out is not None:
        write_csv([row], out / "results.csv")
    if result.failed or (result.violations and result.config.checks == "strict"):
        print(f"FAILED: {result.failed or result.violations[0]}", file=sys.stderr)
        print(f"replay: {result.replay()}", file=sys.stderr)
        return 1
    return 0


def _print_details(result: SimResult) -> None:
    m = result.metrics
    lines = [
        f"digest {result.digest}  events {m['events']}  {m['events_per_s']:.0f} events/s  messages {m['messages']} "
        f"({m['message_bytes'] / 1e6:.1f} MB)  adverts {m['adverts_published']} published, "
        f"{m['advert_deliveries']} delivered, {m['advert_verifications']} verified",
        f"faults {m['faults']}  dropped {m['dropped']}  retransmits {m['retransmits']}  "
        f"clogged {m['clogged_messages']}  advert rejections {m['advert_rejections']}",
        f"failed jobs by reason {m['failed_reasons']}",
        *([f"nat: {m['private_peers']} private peers; {m['nat']}"] if m["private_peers"] else []),
        f"worker actions {m['worker_stats']}",
        *(f"violation {v}" for v in result.violations[:5]),
    ]
    for line in lines:
        print(textwrap.fill(line, WIDTH, subsequent_indent="    "))
    print(f"replay: {result.replay()}")


def main(argv: Sequence[str] | None = None) -> int:
    """``pangea sim ...`` (argv without the leading ``sim``)."""
    return run_command(build_parser().parse_args(argv))


__all__ = ["SCENARIOS", "Scenario", "main", "run_command"]
