"""Every fenced code block of README.md runs as written (tests/readme_runner.py: the conventions and markers).

The slow test runs the whole README, in order, against peers it starts on 127.0.0.1, in a new network
namespace (``unshare -rn``, or ``unshare -n`` as root) so the README's fixed ports meet no other process; it skips
saying why where no namespace can be made. The fast tests check the block parser and that every block of the
README is one the runner can run or is marked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_runner import Block, RunError, Session, parse_blocks, with_job_id

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_every_block_of_the_readme_is_runnable_or_marked() -> None:
    blocks = parse_blocks(README.read_text())
    plans = [b.plan() for b in blocks]
    assert not [p for p in plans if p.startswith("error")]
    assert plans.count("run") >= 5
    assert "background" in plans
    assert {b.lang for b in blocks if b.plan() == "run"} >= {"sh", "python", "toml"}


SAMPLE = '''# Title

```sh
echo one
```

<!-- readme-test: skip: needs a GPU -->
```python
import cuda
```

Some text.
<!-- readme-test: background until "api on" -->
```bash
pangea node
```

```text
output shown to the reader
```

````sh
echo "```"
````
'''


def test_blocks_are_parsed_with_their_language_line_marker_and_plan() -> None:
    blocks = parse_blocks(SAMPLE)
    assert [(b.line, b.lang, b.marker, b.plan()) for b in blocks] == [
        (3, "sh", "", "run"),
        (8, "python", "skip: needs a GPU", "skip"),
        (14, "bash", 'background until "api on"', "background"),
        (18, "text", "", "show"),
        (22, "sh", "", "run"),
    ]
    assert blocks[0].code == "echo one\n"
    assert blocks[4].code == 'echo "```"\n'


@pytest.mark.parametrize(("block", "why"), [
    (Block(7, "", "ls\n"), "README.md:7 (no language): a block the README test cannot run"),
    (Block(7, "rust", "fn main() {}\n"), "README.md:7 (rust): a block the README test cannot run"),
    (Block(7, "sh", "ls\n", "skip:"), "unknown marker 'skip:'"),  # a skip says why
    (Block(7, "sh", "ls\n", "later"), "unknown marker 'later'"),
    (Block(7, "python", "f()\n", 'background until "x"'), "unknown marker"),  # only a command runs in the background
])
def test_a_block_the_runner_cannot_run_is_an_error_naming_its_line(block: Block, why: str) -> None:
    plan = block.plan()
    assert plan.startswith("error: ")
    assert why in plan


def test_job_stands_for_the_latest_job_id_when_the_command_runs(tmp_path: Path) -> None:
    code = with_job_id("echo status JOB   # JOBS and JOB_ID stay\n")
    assert code.endswith('echo status "$(readme_job)"   # JOBS and JOB_ID stay\n')
    assert with_job_id("pangea id\n") == "pangea id\n"
    # no peer at the data dir: the helper says so and fails
    env = {**os.environ, "PANGEA_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "tests.readme_runner", "--latest-job"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("a README block names JOB: no peer is running with data dir")
    assert "Traceback" not in proc.stderr


def netns() -> list[str] | None:
    """The command prefix that runs a process in a new network namespace here, or None."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-n"] if os.geteuid() == 0 else [], ["unshare", "-rn"]):
        if prefix and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


@pytest.mark.slow
def test_every_code_block_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    prefix = netns()
    if prefix is None:
        pytest.skip("needs a new network namespace (unshare -n as root, or unshare -rn) so the README's fixed "
                    "ports 4001 and 5101 meet no other process")
    cmd = [*prefix, sys.executable, "-m", "tests.readme_runner", str(README), str(tmp_path), "--netns"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-12000:]}"
    ran = [line for line in proc.stdout.splitlines() if line.startswith("README.md:")]
    assert sum(": run (" in line for line in ran) >= 5, proc.stdout


@pytest.fixture
def session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session's Python blocks change the directory and HOME of this process: undone after the test."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(os, "environ", dict(os.environ))


@pytest.mark.usefixtures("session_env")
@pytest.mark.parametrize(("markdown", "error"), [
    ("```sh\necho fine\nfalse\n```\n", "README.md:1 (sh): exit status 1"),
    ("```python\nx = 1\n```\n\n```python\nprint(Path)\n```\n", "README.md:5 (python): raised"),  # the old SDK example
    ("```toml\n[api]\nport = -1\n```\n", "README.md:1 (toml): not a valid config file: config api.port"),
    ("```sh\necho ok\n```\n```rust\nfn main() {}\n```\n", "README.md:4 (rust): a block the README test cannot run"),
])
def test_a_block_that_fails_fails_the_run_naming_its_line(tmp_path: Path, markdown: str, error: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text(markdown)
    session = Session(repo / "README.md", tmp_path / "work")
    with pytest.raises(RunError) as info:
        session.run(parse_blocks(markdown))
    assert str(info.value).startswith(error)
    assert (tmp_path / "work" / "clone" / "README.md").is_symlink()


@pytest.mark.usefixtures("session_env")
def test_blocks_share_one_python_namespace_and_see_the_files_of_shell_blocks(tmp_path: Path) -> None:
    markdown = ("```sh\nprintf 'a b c' > words.txt\n```\n```python\nfrom pathlib import Path\n"
                "words = Path('words.txt').read_text().split()\n```\n"
                "```python\nassert words == ['a', 'b', 'c']\n"
                "assert str(Path('~').expanduser()).endswith('/home')\n```\n")
    (tmp_path / "README.md").write_text(markdown)
    session = Session(tmp_path / "README.md", tmp_path / "work")
    session.run(parse_blocks(markdown))
    assert session.namespace["words"] == ["a", "b", "c"]
    assert len(session.done) == 3
    assert all(": run (" in d for d in session.done)
