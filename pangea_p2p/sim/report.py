"""What a simulation run or sweep prints and writes: the table (100 columns by default, every column with
``wide``), results.csv (written, and read back to plot again without running), and one PNG per metric.

A row is a flat dict of a run's metrics (``scenarios.row_of``), as in results.csv; rows read back from a CSV hold
strings, which is why every number here goes through ``float``.
"""

from __future__ import annotations

import argparse
import csv
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH = 100  # the default table's width, legend included


@dataclass(frozen=True)
class Column:
    head: str  # two lines at most ("\n"); units go in the legend
    key: str
    fmt: Callable[[Any], str]
    wide_only: bool = False


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def plain(v: Any) -> str:
    """A value as the table shows it: floats to 3 decimals under 10, 1 above; nan as -."""
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _times(v: Any) -> str:
    x = _num(v)
    return "-" if math.isnan(x) else f"{x:.2f}x"


def _percent(v: Any) -> str:
    x = _num(v)
    return "-" if math.isnan(x) else f"{100 * x:.0f} %"


COLUMNS = (
    Column("point", "point", str), Column("seed", "seed", plain), Column("jobs\ndone", "jobs_done_of", str),
    Column("wrong\nacc.", "wrong_accepted", plain), Column("wrong\nfinal", "wrong_final", plain),
    Column("work", "work_ratio", _times), Column("wasted", "wasted_work", _percent),
    Column("lat.\np50", "latency_p50_s", plain), Column("lat.\np90", "latency_p90_s", plain, wide_only=True),
    Column("lat.\np99", "latency_p99_s", plain),
    Column("advert\np50", "advert_p50_s", plain, wide_only=True),
    Column("advert\np99", "advert_p99_s", plain, wide_only=True),
    Column("trust\nhon/byz", "trust_pair", str, wide_only=True), Column("trust\nsep.", "trust_separation", plain),
    Column("viol.", "violations", plain), Column("events", "events", plain, wide_only=True),
    Column("wall\ns", "wall_s", plain, wide_only=True),
)

LEGEND = (
    "jobs done: of those submitted; wrong acc./final: wrong task results a submitter accepted (corrected later or "
    "not) / still held in a job's final result; work: fuel burnt by every peer over one honest run of every "
    "task; wasted: share of that fuel spent on no accepted result; lat.: job latency, s; trust sep.: probability "
    "that an honest worker's trust is above a Byzantine one's; viol.: broken invariants; -: no value (e.g. "
    "trust with no Byzantine worker)."
)
LEGEND_WIDE = (
    " advert: seconds for an advert to reach the directories; trust hon/byz: mean trust of the honest / Byzantine "
    "workers; events: simulated events; wall s: seconds of real time."
)


def print_table(rows: Sequence[dict[str, Any]], title: str, wide: bool = False) -> None:
    """The rows as a table with a legend of its columns and units: fits ``WIDTH`` columns, or every column with
    ``wide``."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in COLUMNS if wide or not c.wide_only]
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True)
    for c in columns:
        table.add_column(c.head, justify="left" if c.key == "point" else "right", no_wrap=c.key == "point")
    for row in rows:
        table.add_row(*(c.fmt(row.get(c.key, "")) for c in columns))
    console = Console(width=10 * WIDTH if wide else WIDTH)
    console.print(table)
    legend = LEGEND + (LEGEND_WIDE if wide else " --wide: every column.")
    print(textwrap.fill(legend, WIDTH))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows ``write_csv`` wrote (every value a string)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Metric:
    label: str  # the y axis: words and unit
    title: str
    scale: float = 1.0  # plotted value = scale * metric (fractions as %)
    top: float | None = None  # the y axis's upper limit, when the metric has one


METRICS: dict[str, Metric] = {
    "jobs_done_ratio": Metric("jobs done (% of jobs submitted)", "Jobs done", 100.0, 105.0),
    "jobs_done": Metric("jobs done (count)", "Jobs done"),
    "wrong_accepted": Metric("wrong results accepted (tasks)", "Wrong results accepted"),
    "wrong_final": Metric("wrong results in final outputs (tasks)", "Wrong results in final outputs"),
    "wrong_at_job_end": Metric("wrong results at job end (tasks)", "Wrong results when the job ended"),
    "work_ratio": Metric("total work (x one honest run of each task)", "Total work"),
    "wasted_work": Metric("wasted work (% of the fuel burnt)", "Work on no accepted result", 100.0, 100.0),
    "latency_p50_s": Metric("job latency, median (s)", "Job latency, median"),
    "latency_p90_s": Metric("job latency, 90th percentile (s)", "Job latency, 90th percentile"),
    "latency_p99_s": Metric("job latency, 99th percentile (s)", "Job latency, 99th percentile"),
    "advert_p50_s": Metric("advert to directories, median (s)", "Advert propagation, median"),
    "advert_p99_s": Metric("advert to directories, 99th percentile (s)", "Advert propagation, 99th percentile"),
    "trust_separation": Metric("P(honest worker's trust > Byzantine's)", "Trust separation", top=1.05),
    "dropped": Metric("messages dropped (count)", "Messages dropped"),
    "circuits_closed": Metric("relayed circuits closed by their relay (count)", "Circuits closed by relays"),
    "escape_rate": Metric("lies in final outputs (% of lies told)", "Escape rate", 100.0),
}


def metric(name: str) -> Metric:
    return METRICS.get(name, Metric(name.replace("_", " "), name.replace("_", " ").capitalize()))


def seeds_text(seeds: Sequence[Any]) -> str:
    """``seeds 1-2``, ``seeds 1, 3``, ``seed 4``: the distinct seeds among ``seeds``."""
    ids = sorted({int(_num(s)) for s in seeds if not math.isnan(_num(s))})
    if len(ids) <= 1:
        return f"seed {ids[0]}" if ids else "no seed"
    span = f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))
    return f"seeds {span}"


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, min and max of the values that are not nan (nan, nan, nan when none is)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan, math.nan
    return sum(vals) / len(vals), min(vals), max(vals)


def plot(rows: Sequence[dict[str, Any]], out: Path, name: str, metrics: Sequence[str], x_label: str,
         x_scale: float = 1.0, subtitle: str = "") -> list[Path]:
    """One PNG per metric, ``out/NAME_METRIC.png`` (see ``figure``)."""
    import matplotlib.pyplot as plt

    paths = []
    for key in metrics:
        fig = figure(rows, key, name, x_label, x_scale, subtitle)
        path = out / f"{name}_{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def figure(rows: Sequence[dict[str, Any]], key: str, name: str, x_label: str, x_scale: float = 1.0,
           subtitle: str = "") -> Figure:
    """The metric ``key`` against the sweep point (``row["point"]``): the mean over the runs (seeds) at each
    point, and the range from the lowest to the highest run. Points that are all numbers go on a numeric x axis
    (times ``x_scale``, e.g. 100 for fractions shown as %) joined by a line, with the range as a band; others
    (policies, partition shapes) side by side, with the range as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(dict.fromkeys(str(r["point"]) for r in rows))
    numeric = all(not math.isnan(_num(p)) for p in points)
    xs = [x_scale * _num(p) for p in points] if numeric else list(range(len(points)))
    seeds = [[r["seed"] for r in rows if str(r["point"]) == p] for p in points]
    counts = sorted({len(set(s)) for s in seeds})
    runs = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    per_point = f"{runs} run{'s' if counts[-1] > 1 else ''} ({seeds_text([s for ss in seeds for s in ss])})"
    several = counts[-1] > 1
    m = metric(key)
    stats = [summary([m.scale * _num(r.get(key)) for r in rows if str(r["point"]) == p]) for p in points]
    means, lows, highs = ([s[i] for s in stats] for i in range(3))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if numeric:
        ax.plot(xs, means, marker="o", label=f"mean of {per_point}")
        if several:
            ax.fill_between(xs, lows, highs, alpha=0.2, label="min-max of the runs")
        pad = 0.04 * (max(xs) - min(xs)) or 1.0
        ax.set_xlim(min(xs) - pad, max(xs) + pad)  # every point of the sweep, even one with nothing to show
    else:
        err = [[mu - lo for mu, lo in zip(means, lows, strict=True)],
               [hi - mu for mu, hi in zip(means, highs, strict=True)]]
        ax.errorbar(xs, means, yerr=err if several else None, fmt="o", capsize=6, markersize=7,
                    label=f"mean of {per_point}" + ("; bars: min-max of the runs" if several else ""))
        ax.set_xticks(xs, points)
        ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_xlabel(x_label)
    ax.set_ylabel(m.label)
    finite = [v for v in lows + highs if not math.isnan(v)]
    if finite and min(finite) >= 0:  # from 0, with room above the data for the legend
        top = m.top if m.top is not None and max(finite) <= m.top else 1.3 * max(finite) or 1.0
        ax.set_ylim(bottom=0, top=top)
    ax.set_title(f"{m.title} ({name})" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def add_output_args(parser: argparse.ArgumentParser, scratch: Path, committed: Path, what: str) -> None:
    """``--out DIR`` (default ``scratch``) or ``--replace`` (into ``committed``, replacing ``what``): where a
    reproduction script of simulations/ writes; ``args.out`` is the folder."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=scratch, help="output folder (default %(default)s)")
    where.add_argument("--replace", action="store_const", dest="out", const=committed,
                       help=f"write into {committed}, replacing {what}")
