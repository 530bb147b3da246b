"""Run real ``pangea`` processes in tests: start, read their output with deadlines, stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PANGEA = [sys.executable, "-X", "dev", "-m", "pangea_p2p"]


def pangea(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a one-shot ``pangea`` command."""
    return subprocess.run([*PANGEA, *args], capture_output=True, text=True, timeout=timeout_s, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PANGEA_DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NodeProcess:
    """A ``pangea node`` child process whose stdout and stderr lines are collected as they arrive."""

    def __init__(self, data_dir: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: a command that runs the node, e.g. ``ip netns exec NS`` (tests/e2e/netns.py)."""
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*prefix, *PANGEA, "node", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; stderr:\n" + "\n".join(self.stderr[-20:]))
                if self.proc.poll() is not None and not predicate():
                    self._cond.wait(0.2)  # let the pumps drain
                    if predicate():
                        return
                    raise AssertionError(f"process exited ({self.proc.returncode}) before {what}; stderr:\n"
                                         + "\n".join(self.stderr[-20:]))
                self._cond.wait(min(left, 0.5))

    def addrs(self, timeout_s: float = 60) -> list[str]:
        self.wait_for(lambda: any(x.startswith("api on ") for x in self.stdout), timeout_s, "the printed addresses")
        return [x.removeprefix("listening on ") for x in self.stdout if x.startswith("listening on ")]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> float:
        """Send ``sig``; return the seconds until the process exited."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"peer did not stop within {timeout_s}s of {signal.Signals(sig).name}") from None
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` runs (a zombie left for a parent that does not reap counts as gone); the pids
    still running at the deadline."""
    import psutil

    def running() -> list[psutil.Process]:
        procs = []
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
            except psutil.NoSuchProcess:
                pass
        return procs

    deadline = time.monotonic() + timeout_s
    while (left := running()) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
    return [proc.pid for proc in running()]
