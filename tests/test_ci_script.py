""".ci/run is the CI entry point: a shell syntax error there fails CI before a single test runs (it did once,
after a merge dropped a ``fi``), so ``make test`` checks the script parses and still ends by running the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CI_RUN = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_ci_script_parses_and_runs_make_test() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this machine")
    done = subprocess.run([sh, "-n", str(CI_RUN)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in CI_RUN.read_text().splitlines() if line.strip()]
    assert lines[-1] == "exec make test"


def test_the_syntax_check_catches_a_dropped_fi(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this machine")
    broken = tmp_path / "run"
    broken.write_text(CI_RUN.read_text().replace("\nfi\n", "\n", 1))
    done = subprocess.run([sh, "-n", str(broken)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
