"""Sandbox processes and compile processes end with the process that started them, whatever killed it
(SIGKILL included), even while a guest runs; and only then (a parent death signal sent because the
spawning *thread* ended leaves them running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import pangea_p2p
from pangea_p2p.sandbox.harden import LIFELINE_SIGNAL, process_env
from tests.e2e.nodeproc import wait_gone

DEADLINE_S = 30.0
ROOT = str(Path(pangea_p2p.__file__).resolve().parents[1])

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process model")

# Starts a pool of one sandbox process, has it compile the infinite loop (a short run out of fuel), then runs
# it with a huge fuel budget and a 300 s wall limit, and prints the pids of its descendants once it runs.
POOL_PARENT = """
import psutil, trio
from pangea_p2p.core.cid import cid_of
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits, open_sandbox

async def main():
    module = load_guest("infinite_loop")
    cid = cid_of(module)
    maxima = SandboxLimits(fuel_max=10**15, wall_time_s=300.0)
    async with open_sandbox(SandboxConfig(workers=1, limits_max=maxima)) as sandbox:
        await sandbox.wait_ready()
        await sandbox.run(cid, module, b"", SandboxLimits(fuel_max=1000))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sandbox.run, cid, module, b"", maxima)
            await sandbox.wait_until(lambda: sandbox.stats().busy == 1)
            kids = psutil.Process().children(recursive=True)
            print(" ".join(str(kid.pid) for kid in kids), flush=True)
            await trio.sleep_forever()

trio.run(main)
"""

# Starts a real compile process that waits for its module on a stdin the test holds open (so it never ends by
# itself). Its pid is printed once it is armed (its watchdog thread runs).
COMPILE_PARENT = """
import subprocess, sys, time
import psutil
from pangea_p2p.sandbox import SandboxConfig
from pangea_p2p.sandbox.harden import process_env
proc = subprocess.Popen([sys.executable, "-m", "pangea_p2p.sandbox.compiler", SandboxConfig().to_json()],
                        stdout=subprocess.PIPE, env=process_env(sys.argv[1]))
deadline = time.monotonic() + 30
while psutil.Process(proc.pid).num_threads() < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
print(proc.pid, flush=True)
proc.wait()
"""

# A child that arms die_with_parent (argv[1] "no-prctl": without the parent death signal, the pipe watchdog
# alone), its lifeline its stdout, then echoes stdin lines (argv[2] "echo") or waits for ever.
CHILD = """
import sys, threading
from pangea_p2p.sandbox import harden
if sys.argv[1] == "no-prctl":
    harden._prctl = lambda *args: "disabled by the test"
harden.die_with_parent(sys.stdout.fileno(), forked_by_waiting_thread=False)
print("armed", file=sys.stderr, flush=True)
if sys.argv[2] == "echo":
    for line in sys.stdin:
        print(line.strip(), flush=True)
else:
    threading.Event().wait()
"""

# Starts CHILD and prints its pid once it is armed, then waits. argv[3] "inherit": the child's stdout is this
# process's (a pipe the test holds open), so its lifeline pipe never breaks: only the parent death signal ends it.
CHILD_PARENT = f"""
import subprocess, sys
from pangea_p2p.sandbox.harden import process_env
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}, sys.argv[2], "wait"], stdin=subprocess.DEVNULL,
                         stdout=None if sys.argv[3] == "inherit" else subprocess.PIPE, stderr=subprocess.PIPE,
                         env=process_env(sys.argv[1]))
assert child.stderr.readline() == b"armed\\n"
print(child.pid, flush=True)
child.wait()
"""


def _start(code: str, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    """A throwaway parent running ``code``, and the pids it prints on its first line."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    pids = [int(pid) for pid in line.split()]
    assert pids, f"the parent printed no pids (exit {parent.poll()})"
    return parent, pids


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _kill_and_wait_for_orphans(parent: subprocess.Popen[str], pids: list[int]) -> None:
    assert wait_gone(pids, timeout_s=0) == pids, "every child runs before the parent is killed"
    parent.kill()
    parent.wait()
    left = wait_gone(pids, DEADLINE_S)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived their SIGKILLed parent: {left}"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="psutil process tree")
def test_a_sandbox_process_running_a_guest_dies_with_its_sigkilled_peer():
    parent, pids = _start(POOL_PARENT)
    try:
        (sandbox_pid,) = pids
        busy = psutil.Process(sandbox_pid)
        before = busy.cpu_times().user
        deadline = time.monotonic() + DEADLINE_S
        while busy.cpu_times().user < before + 0.2 and time.monotonic() < deadline:
            busy.cpu_percent(interval=0.05)  # a bounded wait until the guest is seen burning CPU
        assert busy.cpu_times().user >= before + 0.2, "the infinite loop runs"
        _kill_and_wait_for_orphans(parent, pids)
    finally:
        _stop(parent)


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")


@pytest.mark.parametrize(("script", "args"), [
    pytest.param(COMPILE_PARENT, (), id="a compile process dies with its sigkilled sandbox process"),
    pytest.param(CHILD_PARENT, ("no-prctl", "pipe"), id="the portable watchdog alone ends an orphan"),
    pytest.param(CHILD_PARENT, ("prctl", "inherit"), id="the parent death signal alone ends an orphan",
                 marks=LINUX_ONLY),
])
def test_an_orphan_ends_when_its_parent_is_sigkilled(script: str, args: tuple[str, ...]) -> None:
    parent, pids = _start(script, ROOT, *args)
    try:
        _kill_and_wait_for_orphans(parent, pids)
    finally:
        _stop(parent)


@LINUX_ONLY
def test_a_parent_death_signal_while_the_parent_lives_is_ignored():
    """What the kernel sends when the trio thread that spawned a sandbox process ends: the peer lives on."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, "prctl", "echo"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=process_env(ROOT))
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("first\n")
        child.stdin.flush()
        assert child.stdout.readline() == "first\n"
        os.kill(child.pid, LIFELINE_SIGNAL)
        child.stdin.write("still here\n")
        child.stdin.flush()
        assert child.stdout.readline() == "still here\n"
        assert child.poll() is None
    finally:
        _stop(child)
