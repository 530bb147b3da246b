"""Determinism, the checkers' ability to fail, the command line and a small sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pangea_p2p.core.verify import tree
from pangea_p2p.sim import report, scenarios
from pangea_p2p.sim.loop import EventLoop
from tests.sim.conftest import run_small, small


def test_same_seed_same_trace_and_different_seed_different_trace() -> None:
    a, b, c = run_small(seed=7, byzantine=0.2, role="mix", checks="count"), run_small(
        seed=7, byzantine=0.2, role="mix", checks="count"), run_small(seed=8, byzantine=0.2, role="mix", checks="count")
    assert a.digest == b.digest
    assert a.metrics["events"] == b.metrics["events"]
    assert a.digest != c.digest


def test_trace_does_not_depend_on_the_hash_seed() -> None:
    code = ("from tests.sim.conftest import run_small; "
            "print(run_small(seed=3, byzantine=0.2, role='mix', checks='count', peers=40, jobs=5).digest)")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parents[2])
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_event_loop_orders_ties_by_scheduling_order() -> None:
    loop = EventLoop(0.0, keep_trace=True)
    seen: list[str] = []
    for name in "abc":
        loop.at(1.0, seen.append, name)
    loop.at(0.5, seen.append, "first")
    loop.run_until(2.0)
    assert seen == ["first", "a", "b", "c"]


def test_healthy_network_finishes_every_job_correctly() -> None:
    r = run_small()
    assert r.ok, r.failed
    assert r.metrics["jobs_done"] == r.metrics["jobs"] == 10
    assert r.metrics["wrong_accepted"] == 0
    assert r.metrics["advert_p50_s"] < r.metrics["advert_p99_s"] < 1.0
    assert r.metrics["advert_verifications"] < r.metrics["advert_deliveries"]  # each advert verified once


def test_a_policy_that_accepts_any_result_makes_the_checker_fail() -> None:
    # hash: one worker, its validly signed receipt is enough: wrong answers end in final results and the checker
    # says so when the run ends
    r = run_small(policy="hash", byzantine=0.4, role="wrong")
    assert "[wrong_final]" in r.failed and "in its final result" in r.failed  # noqa: PT018
    assert r.replay().startswith("pangea sim run test --seed 1 ")
    assert "--policy hash" in r.replay()


def test_a_verifier_that_skips_signatures_makes_the_checker_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "check_signature", lambda *args, **kwargs: None)
    r = run_small(policy="hash", byzantine=0.4, role="forge", seed=2)
    assert "bad_signature" in r.failed
    monkeypatch.undo()
    honest = run_small(policy="hash", byzantine=0.4, role="forge", seed=2)
    assert honest.ok, honest.failed  # with the real verifier every forged receipt is refused


def test_cli_run_prints_a_table_and_a_failing_run_prints_its_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert scenarios.main(["run", "baseline", "--peers", "40", "--jobs", "4", "--submitters", "2"]) == 0
    assert "jobs done" in capsys.readouterr().out
    code = scenarios.main(["run", "baseline", "--peers", "40", "--jobs", "6", "--submitters", "2", "--policy", "hash",
                           "--byzantine", "0.5", "--role", "wrong", "--seed", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "replay: pangea sim run baseline --seed 5" in err
    assert "--policy hash" in err


def test_small_sweep_writes_csv_and_plots(tmp_path: Path) -> None:
    sc = scenarios.SCENARIOS["byzantine_fraction"]
    small_sc = scenarios.Scenario(sc.name, sc.question, {**sc.base, **small().__dict__, "role": "collude",
                                                         "checks": "count"}, "byzantine", (0.0, 0.3), sc.plots)
    rows = scenarios.sweep(small_sc, {}, seeds=1, progress=False)
    report.write_csv(rows, tmp_path / "results.csv")
    paths = scenarios.plot_scenario(rows, small_sc, tmp_path)
    assert len(rows) == 2
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    assert [p.name for p in paths] == [f"byzantine_fraction_{m}.png" for m in sc.plots]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert rows[0]["wrong_accepted"] == 0
    again = report.read_csv(tmp_path / "results.csv")  # what `pangea sim plot` draws from: the same points
    assert [(r["point"], int(r["seed"]), int(r["wrong_accepted"])) for r in again] == [
        (r["point"], r["seed"], r["wrong_accepted"]) for r in rows]
    replot = tmp_path / "replot"
    replot.mkdir()
    assert [p.name for p in scenarios.plot_scenario(again, small_sc, replot)] == [p.name for p in paths]
