"""End to end: the README's "Your own execute step" section, run as written against real peers, and a Python
step voted on by two peers (same output and fuel on both, or the vote fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pangea_p2p.sdk import Job
from tests.e2e.test_jobs_e2e import network, wait_done

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The shell commands of the README's "Your own execute step" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Your own execute step", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the section has no shell block"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_section_takes_a_new_user_to_a_submitted_python_step(tmp_path: Path) -> None:
    work = tmp_path / "user"
    (work / ".venv" / "bin").mkdir(parents=True)
    wrapper = work / ".venv" / "bin" / "pangea"  # the README's .venv/bin/pangea, this interpreter's package
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m pangea_p2p \"$@\"\n")
    wrapper.chmod(0o755)
    with network(tmp_path, [[], []]) as net:
        env = dict(os.environ, PANGEA_DATA_DIR=str(net.nodes[0].data_dir))
        job_id = ""
        for command in readme_commands():
            command = command.replace("JOB", job_id)
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=300, check=False)
            assert proc.returncode == 0, f"{command}\n{proc.stderr}"
            found = re.search(r"job (\S+) submitted", proc.stderr)
            job_id = found.group(1) if found else job_id
            if "guest run" in command:
                assert proc.stdout == "THE QUICK BROWN FOX\nJUMPS OVER\n"
                assert re.search(r"ok: \d+ bytes of output; fuel \d+", proc.stderr)
        assert (work / "out.txt").read_text() == "THE QUICK BROWN FOX\nJUMPS OVER\n"
        assert job_id


def test_two_peers_give_a_python_step_the_same_output_and_fuel(tmp_path: Path) -> None:
    job: Job[list[bytes]] = Job("lengths", verification="replicas:2", retries_max=0)

    @job.execute
    def lengths(chunk: bytes) -> bytes:
        print("chunk of", len(chunk))
        return b" ".join(b"%d" % len(w) for w in chunk.split())

    job.split(lambda data: data.splitlines(keepends=True))
    job.merge(lambda outputs: outputs)
    corpus = b"the quick brown fox\njumps over the lazy dog\n"
    local_logs: list[str] = []
    expected = job.run_local(corpus, log=local_logs.append)
    with network(tmp_path, [["--set", "capacity.task_slots=1"]] * 3) as net, net.client() as client:
        handle = job.submit(corpus, client)
        status = wait_done(client, handle.job_id)
        assert status["state"] == "done", client.explain(handle.job_id)  # the two replicas agreed on (output, fuel)
        assert handle.outputs() == expected == [b"3 5 5 3", b"5 4 3 4 3"]
        logs = handle.logs()
        assert sorted(logs) == sorted(client.job_result(handle.job_id)["tasks"][i]["task_id"] for i in range(2))
        assert sorted(logs.values()) == sorted(local_logs) == ["chunk of 20\n", "chunk of 24\n"]
        assert handle.verify().ok
