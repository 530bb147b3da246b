"""`pangea sim`'s command line and outputs: help at every level, a help text for every option, one-line errors for
bad values, a table that fits 100 columns, plots with words and units on numeric axes, and sweeps that write
to sim-out/ unless told where."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.cli import main as cli
from pangea_p2p.sim import report, scenarios
from pangea_p2p.sim.config import SimConfig, flag
from pangea_p2p.sim.scenarios import SCENARIOS, Scenario
from tests.sim.conftest import SMALL, run_small


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers(sub)
    return found


def test_every_option_of_every_sim_command_has_a_help_text() -> None:
    (pangea_sim,) = (p for p in parsers(cli.build_parser()) if p.prog == "pangea sim")  # before the simulator loads
    options: dict[str, set[str]] = {}
    for parser in [pangea_sim, *parsers(scenarios.build_parser())]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), parser.prog
                continue
            name = "/".join(action.option_strings) or action.dest
            assert (action.help or "").strip(), f"{parser.prog} {name} has no help"
            assert action.help != argparse.SUPPRESS, f"{parser.prog} {name} is hidden"
            options.setdefault(parser.prog, set()).update(action.option_strings)
    for command in ("pangea sim run", "pangea sim sweep"):
        assert {flag(f.name) for f in fields(SimConfig)} <= options[command]  # the ~40 simulation options


@pytest.mark.parametrize("argv", [["sim", "-h"], ["sim", "--help"], ["sim", "run", "-h"], ["sim", "sweep", "-h"],
                                  ["sim", "plot", "--help"], ["sim", "list", "-h"], ["sim", "-h", "run"]])
def test_help_works_at_every_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    sub = next((a for a in argv[1:] if not a.startswith("-")), None)
    assert out.startswith(f"usage: pangea sim {sub or ''}".rstrip())
    if sub in ("run", "sweep"):
        assert "--byzantine FLOAT" in out
        assert "fraction of the workers" in out
    if sub is None:
        assert all(command in out for command in ("run", "sweep", "plot", "list"))


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "baseline", "--loss", "1"], "pangea sim run: error: --loss 1.0: a fraction in [0, 1)"),
    (["run", "baseline", "--peers", "5"], "pangea sim run: error: --peers 5: need the submitters (8)"),
    (["run", "baseline", "--arrival-s", "nan"], "pangea sim run: error: --arrival-s nan: a finite number >= 0"),
    (["run", "baseline", "--crash", "1.5"], "pangea sim run: error: --crash 1.5: a fraction in [0, 1]"),
    (["run", "baseline", "--tasks-per-job", "0"], "pangea sim run: error: --tasks-per-job 0: at least 1"),
    (["run", "baseline", "--policy", "votes:3"], "pangea sim run: error: config verification: 'votes:3'"),
    (["run", "baseline", "--role", "thief"], "argument --role: invalid choice: 'thief'"),
    (["sweep", "baseline", "--seeds", "0"], "pangea sim sweep: error: --seeds 0: at least 1"),
])
def test_a_bad_value_is_one_line_naming_the_flag(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        scenarios.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 2  # the command's short usage line and the error
    assert "Traceback" not in err


def test_a_file_that_cannot_be_read_or_written_is_one_line_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "results.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    for argv, message in (
        (["plot", "sybil", "--csv", str(garbage)], "not a sweep's results.csv"),
        (["plot", "sybil", "--csv", str(tmp_path / "none.csv")], "none.csv: No such file"),
        (["sweep", "sybil", "--out", str(garbage)], f"--out {garbage}: File exists"),
        (["run", "sybil", "--out", str(garbage / "sub")], f"--out {garbage / 'sub'}: Not a directory"),
    ):
        with pytest.raises(SystemExit) as exit_:
            scenarios.main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err
        assert len(err.strip().splitlines()) == 2


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_the_table_fits_100_columns_and_wide_shows_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    row = scenarios.row_of(run_small(byzantine=0.2, role="collude", checks="count"), "run")
    long_row = {**row, "point": "adaptive, honest", "jobs_done_of": "1000/1000", "wrong_accepted": 1000,
                "latency_p50_s": 142.5, "latency_p99_s": 1234.5, "events": 12_345_678, "wall_s": 123.4}
    report.print_table([row, long_row], "a title longer than the table itself, to see that it wraps too " * 2)
    narrow = capsys.readouterr().out
    assert widest(narrow) <= report.WIDTH
    heads = narrow.split("─")[0]
    assert all(word in heads for word in ("wrong", "work", "sep."))
    assert not any(word in heads for word in ("advert", "events", "p90"))
    assert all(whole in narrow for whole in ("adaptive, honest", "1000/1000", "1234.5"))  # nothing cut short
    assert all(words in narrow for words in ("--wide: every column", "lat.: job latency, s"))  # units, legend
    report.print_table([row, long_row], "wide", wide=True)
    wide = capsys.readouterr().out
    assert widest(wide) > report.WIDTH
    assert all(word in wide.split("─")[0] for word in ("advert", "hon/byz", "events", "p90"))
    assert "12345678" in wide


def sweep_rows(points: dict[str, list[float]], key: str = "wrong_accepted") -> list[dict[str, Any]]:
    """Rows as results.csv holds them (strings): one per (point, seed)."""
    return [{"point": point, "seed": str(seed), key: str(value)}
            for point, values in points.items() for seed, value in enumerate(values, start=1)]


def test_plot_of_a_numeric_sweep_has_a_numeric_x_axis_units_and_a_labelled_band() -> None:
    rows = sweep_rows({"0.0": [0, 0], "0.05": [1, 3], "0.1": [4, 6], "0.2": [10, 20]})
    fig = report.figure(rows, "wrong_accepted", "byzantine_fraction", "colluding workers (% of workers)", 100.0,
                        "300 peers")
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == pytest.approx([0, 5, 10, 20])  # spaced by value, not evenly
    assert list(line.get_ydata()) == pytest.approx([0, 2, 5, 15])
    assert ax.get_xlabel() == "colluding workers (% of workers)"
    assert ax.get_ylabel() == "wrong results accepted (tasks)"
    assert ax.get_title().startswith("Wrong results accepted (byzantine_fraction)\n300 peers")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["mean of 2 runs (seeds 1-2)", "min-max of the runs"]
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert (min(ys), max(ys)) == (0, 20)


def test_plot_of_policies_places_them_side_by_side_with_min_max_bars() -> None:
    rows = sweep_rows({"hash": [0.5, 0.7], "replicas:3": [0.66, 0.68]}, key="wasted_work")
    ax = report.figure(rows, "wasted_work", "baseline", "verification policy").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hash", "replicas:3"]
    assert ax.get_ylabel() == "wasted work (% of the fuel burnt)"
    assert ax.get_ylim() == (0, 100)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "mean of 2 runs (seeds 1-2); bars: min-max of the runs"]
    markers = ax.get_lines()[0]
    assert list(markers.get_ydata()) == pytest.approx([60, 67])


def test_every_plotted_metric_and_swept_option_has_words_and_a_unit() -> None:
    for sc in SCENARIOS.values():
        assert sc.x_label, sc.name
        for key in sc.plots:
            label = report.METRICS[key].label
            assert "_" not in label, (sc.name, key, label)
            assert "(" in label, (sc.name, key, label)
    assert "%" in SCENARIOS["churn"].x_label  # fractions are shown as %


def tiny(name: str) -> Scenario:
    sc = SCENARIOS[name]
    return Scenario(sc.name, sc.question, {**SMALL, "peers": 40, "jobs": 4}, "policy", ("hash",), sc.plots,
                    sc.x_label)


def test_sweep_writes_under_sim_out_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(SCENARIOS, "baseline", tiny("baseline"))
    assert scenarios.main(["sweep", "baseline", "--seeds", "1", "--no-progress"]) == 0
    out = tmp_path / "sim-out" / "baseline"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.csv", *(f"baseline_{m}.png" for m in SCENARIOS["baseline"].plots)])
    assert f"wrote {Path('sim-out/baseline/results.csv')}" in capsys.readouterr().out
    # plot again from that CSV, somewhere else, without running
    assert scenarios.main(["plot", "baseline", "--out", "again"]) == 0
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(
        f"baseline_{m}.png" for m in SCENARIOS["baseline"].plots)
    rows = report.read_csv(out / "results.csv")
    assert [r["point"] for r in rows] == ["hash"]
    assert not math.isnan(float(rows[0]["latency_p50_s"]))


def test_run_all_writes_to_sim_out_unless_asked_to_replace_the_committed_results(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations import run_all

    calls: list[list[str]] = []
    monkeypatch.setattr(run_all, "main", lambda argv: calls.append(argv) or 0)
    assert run_all.run_all(["sybil", "churn"]) == 0
    assert run_all.run_all(["--replace", "--seeds", "3", "sybil"]) == 0
    assert calls[:2] == [["sweep", name, "--seeds", "2", "--out", str(Path("sim-out") / name)]
                         for name in ("sybil", "churn")]
    assert calls[2][:4] == ["sweep", "sybil", "--seeds", "3"]
    assert Path(calls[2][-1]) == Path(run_all.__file__).parent / "results" / "sybil"
